"""The ``secgan`` command line: a thin dispatcher over command modules.

Configuration files are parsed into frozen dataclasses here, at the edge, and passed down
explicitly; nothing below reads global options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from secgan import __version__
from secgan.errors import SecganError
from secgan.logs import setup_logging

# subcommand -> module exposing HELP, add_arguments(parser), run(args) -> int
COMMANDS: dict[str, str] = {
    "phantom": "secgan.commands.phantom",
    "train": "secgan.commands.train",
    "sample": "secgan.commands.sample",
    "gmm": "secgan.commands.gmm",
    "provision": "secgan.commands.provision",
    "coordinator": "coordinator.cli",
    "site": "sites.cli",
    "ledger": "sites.ledger_cli",
    "audit": "audits.cli",
    "evaluate": "secgan.commands.evaluate",
    "sweep": "secgan.commands.sweep",
    "demo": "secgan.commands.demo",
}


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a command whose module does not exist (yet) is left out; a broken import is an error.
        if exc.name == module_name:
            return None
        raise


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"secgan {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secgan",
        description="Privacy-hardened distributed GAN training for medical images.",
    )
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _dispatch(build_parser().parse_args(argv))


def run_command(name: str, argv: list[str] | None = None, *, prog: str) -> int:
    """One subcommand as its own program (``python -m coordinator`` is ``secgan coordinator``)."""
    module = importlib.import_module(COMMANDS[name])
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    _add_global_options(parser)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run, command=name)
    return _dispatch(parser.parse_args(argv))


def _dispatch(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, as_json=args.log_json)
    try:
        return int(args._run(args) or 0)
    except SecganError as exc:
        print(f"secgan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"secgan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
