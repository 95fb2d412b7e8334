"""``secgan evaluate --skip-bad``: a malformed held-out case is skipped with a warning naming the file
(not the patient) instead of ending the evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from secgan.cli import main

TINY = ["--image-size", "32", "--channels", "8,16", "--batch-size", "16", "--epochs", "0"]


def test_evaluate_skip_bad(phantom_root: Path, tmp_path: Path, capsys):
    root = tmp_path / "data"
    shutil.copytree(phantom_root / "site-1", root / "site-1")  # one site keeps it quick
    test_id = json.loads((root / "site-1" / "split.json").read_text())["test"][0]
    bad = root / "site-1" / test_id / f"{test_id}_t2.nii.gz"
    bad.write_bytes(b"")
    args = ["evaluate", "--train-source", "real-subset-1", "--data", str(root), "--out", str(tmp_path / "ev"), *TINY]
    assert main(args) == 2
    assert f"{test_id}_t2.nii.gz" in capsys.readouterr().err
    assert main([*args, "--skip-bad", "--log-json"]) == 0
    err = capsys.readouterr().err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    (w,) = [x for x in lines if "case_skipped" in json.dumps(x)]
    assert "<case>/<case>_t2.nii.gz" in json.dumps(w) and "empty" in json.dumps(w)
    assert test_id not in err
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["train_source"] == "real-subset-1"
