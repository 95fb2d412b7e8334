"""The command-line edge: one line instead of a traceback for a bad path or endpoint, exit codes from
one table (listed in --help), and the log options accepted after the subcommand too."""

from __future__ import annotations

from pathlib import Path

import pytest

from secgan.core import exitcodes
from secgan.cli import build_parser, main


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _bad_paths(tmp: Path) -> dict[str, Path]:
    d = tmp / "a-folder"
    d.mkdir()
    f = tmp / "a-file.txt"
    f.write_text("not what was expected\n")
    return {"dir": d, "file": f, "missing": tmp / "missing", "examples": EXAMPLES}


CASES = [
    ("coordinator --config {dir}", "{dir}"),
    ("coordinator --config {missing}", "{missing}"),
    ("site --config {dir}", "{dir}"),
    ("train --config {dir} --out {missing}", "{dir}"),
    ("sample --checkpoint {dir} --n 2 --out {missing}", "{dir}"),
    ("sample --checkpoint {file} --n 2 --out {missing}", "{file}"),
    ("provision --sites 1 --out {file}", "{file}"),
    ("phantom --out {file} --sites 1 --patients 4 --size 32 --slices 16", "{file}"),
    ("gmm --out {file} --steps 1", "{file}"),
    ("ledger show --site-dir {file}", "{file}"),
    ("audit run --site-config {dir} --synthetic {dir} --out {missing}", "{dir}"),
    ("audit run --site-config {file} --synthetic {dir} --out {missing} --generator {dir}", "{dir}"),
    ("audit run --site-config {file} --synthetic {missing} --out {missing}", "{missing}"),
    ("audit run --site-config {file} --synthetic {dir} --out {missing} --rubric {dir}", "{dir}"),
    ("audit verify {dir} --public-key {dir}", "{dir}"),
    ("audit merge {dir} --out {missing} --public-key {dir}", "{dir}"),
    ("evaluate --train-source synthetic --data {file} --out {missing} --checkpoint {dir}", ""),
    ("sweep --config {dir} --out {missing}", "{dir}"),
    ("sweep --config {examples}/sweep-tiny.toml --out {file}", "{file}"),
    ("train --config {examples}/inprocess.toml --out {file}", "{file}"),
    ("demo --out {file}", "{file}"),
    ("keys generate --site-id site-1 --out {file}", "{file}"),
    ("provision --out {missing} --site-keys {dir}", "{dir}"),
]


@pytest.mark.parametrize("line,named", CASES, ids=[c[0].split(" {")[0] for c in CASES])
def test_a_bad_path_is_one_line_naming_it(tmp_path, capsys, line, named):
    paths = _bad_paths(tmp_path)
    argv = [part.format(**paths) for part in line.split()]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc in (exitcodes.USAGE, exitcodes.VERIFY_FAILED), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"secgan {argv[0]}: ")
    assert named.format(**paths) in err


def test_log_options_work_before_and_after_the_subcommand():
    parser = build_parser()
    a = parser.parse_args(["site", "--config", "x", "--log-level", "debug"])
    assert a.log_level == "DEBUG" and a.log_json is False
    b = parser.parse_args(["--log-level", "warning", "--log-json", "site", "--config", "x"])
    assert b.log_level == "WARNING" and b.log_json is True  # not reset by the subcommand's defaults
    c = parser.parse_args(["audit", "run", "--site-config", "s", "--synthetic", "d", "--out", "o", "--log-json"])
    assert c.log_json is True and c.log_level == "INFO"
    d = parser.parse_args(["ledger", "show", "--site-dir", "x", "--log-level", "ERROR"])
    assert d.log_level == "ERROR"
    with pytest.raises(SystemExit):
        parser.parse_args(["site", "--config", "x", "--log-level", "chatty"])


@pytest.mark.parametrize("argv", [["--help"], ["coordinator", "--help"], ["audit", "run", "--help"]])
def test_help_lists_the_exit_codes(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code, text in exitcodes.TABLE:
        assert f"{code:<4d} {text}" in out


def test_exit_codes_are_distinct():
    codes = [code for code, _ in exitcodes.TABLE]
    assert len(set(codes)) == len(codes) == 6


def test_coordinator_exit_code_per_final_status():
    from coordinator.cli import exit_code

    assert exit_code({"status": "completed", "stop_reason": "completed"}) == exitcodes.OK
    assert exit_code({"status": "interrupted", "stop_reason": "SIGTERM"}) == exitcodes.INTERRUPTED
    assert exit_code({"status": "stopped", "stop_reason": "quorum_lost"}) == exitcodes.QUORUM_LOST
    assert exit_code({"status": "stopped", "stop_reason": "quorum_impossible"}) == exitcodes.QUORUM_LOST
    assert exit_code({"status": "stopped", "stop_reason": "batch_unencodable"}) == exitcodes.USAGE


def test_every_command_is_registered_and_a_missing_module_is_an_error(monkeypatch):
    from secgan import cli

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(cli.COMMANDS)
    # a command whose module is gone is an error at start, never a command silently left out
    monkeypatch.setitem(cli.COMMANDS, "gone", "secgan.commands.no_such_command")
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        build_parser()
