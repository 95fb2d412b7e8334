"""``python -m sites --config FILE [--data DIR]``: the same as ``secgan site``."""

from __future__ import annotations

import argparse
import sys

from secgan.errors import SecganError
from secgan.logs import setup_logging

from sites import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sites", description=cli.HELP)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-json", action="store_true")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, as_json=args.log_json)
    try:
        return cli.run(args)
    except SecganError as exc:
        print(f"site: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
