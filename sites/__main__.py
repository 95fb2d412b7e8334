"""``python -m sites --config FILE [--data DIR]``: the same as ``secgan site``."""

from secgan.cli import run_command

raise SystemExit(run_command("site", prog="python -m sites"))
