"""The README's "Deploying for real" walkthrough stays runnable: every `secgan` command of its code
blocks parses with today's command line, and it covers each step an operator needs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from secgan.cli import build_parser

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
SECTION = README[README.index("## Deploying for real"):README.index("## Configuration reference")]


def _commands() -> list[list[str]]:
    out = []
    for block in re.findall(r"```\n(.*?)```", SECTION, flags=re.S):
        text = block.replace("\\\n", " ").replace("$COORD", "127.0.0.1")
        out += [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("secgan ")]
    return out


def test_every_walkthrough_command_parses():
    commands = _commands()
    assert len(commands) >= 10
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (a failed test) on an unknown option or a missing one


def test_the_walkthrough_covers_the_operator_steps():
    names = {" ".join(argv[:2]) for argv in _commands()}
    for step in ("keys generate", "provision --out", "coordinator --config", "site --config", "sample --checkpoint",
                 "audit run", "audit verify", "audit merge", "ledger show", "ledger verify", "evaluate --train-source"):
        assert any(n.startswith(step) for n in names), step
    assert "run.json" in SECTION and "checkpoint.safetensors" in SECTION and "planned_steps" in SECTION
