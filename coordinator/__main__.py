"""``python -m coordinator --config FILE [--resume]``: the same as ``secgan coordinator``."""

from secgan.cli import run_command

raise SystemExit(run_command("coordinator", prog="python -m coordinator"))
