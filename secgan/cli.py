"""The ``secgan`` command line: a thin dispatcher over command modules.

Configuration files are parsed into frozen dataclasses here, at the edge, and passed down
explicitly; nothing below reads global options.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from secgan import __version__
from secgan.core import exitcodes
from secgan.core.errors import CryptoError, SecganError
from secgan.core.logs import setup_logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# subcommand -> module exposing HELP, add_arguments(parser), run(args) -> int
COMMANDS: dict[str, str] = {
    "phantom": "secgan.commands.phantom",
    "data": "secgan.commands.data",
    "train": "secgan.commands.train",
    "pretrain": "secgan.commands.pretrain",
    "sample": "secgan.commands.sample",
    "gmm": "secgan.commands.gmm",
    "provision": "secgan.commands.provision",
    "keys": "secgan.commands.keys",
    "coordinator": "coordinator.cli",
    "site": "sites.cli",
    "site-host": "sites.host",
    "ledger": "sites.ledger_cli",
    "audit": "audits.cli",
    "evaluate": "secgan.commands.evaluate",
    "projection": "secgan.commands.projection",
    "sweep": "secgan.commands.sweep",
    "demo": "secgan.commands.demo",
}


def _add_log_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--log-level / --log-json. On subcommands they default to SUPPRESS, so that either place
    works (``secgan --log-level debug site ...`` and ``secgan site ... --log-level debug``)."""
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default="INFO" if defaults else argparse.SUPPRESS, help="log level (default INFO)")
    parser.add_argument("--log-json", action="store_true", default=False if defaults else argparse.SUPPRESS,
                        help="one JSON object per log line")


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"secgan {__version__}")
    _add_log_options(parser, defaults=True)


def _add_log_options_below(parser: argparse.ArgumentParser) -> None:
    """The log options on every (nested) subcommand parser under ``parser``."""
    for action in parser._actions:  # argparse keeps subparsers here; no public accessor exists
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--log-level" in a.option_strings for a in child._actions):
                    _add_log_options(child, defaults=False)
                    child.epilog = child.epilog or exitcodes.epilog()
                    child.formatter_class = argparse.RawDescriptionHelpFormatter
                _add_log_options_below(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secgan",
        description="Privacy-hardened distributed GAN training for medical images.",
        epilog=exitcodes.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=exitcodes.epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    _add_log_options_below(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _dispatch(build_parser().parse_args(argv))


def run_command(name: str, argv: list[str] | None = None, *, prog: str) -> int:
    """One subcommand as its own program (``python -m coordinator`` is ``secgan coordinator``)."""
    module = importlib.import_module(COMMANDS[name])
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP, epilog=exitcodes.epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(parser)
    module.add_arguments(parser)
    _add_log_options_below(parser)
    parser.set_defaults(_run=module.run, command=name)
    return _dispatch(parser.parse_args(argv))


def error_line(exc: BaseException) -> str:
    """One line for an error the command line reports instead of a traceback."""
    import zmq

    if isinstance(exc, OSError):
        what = exc.strerror or type(exc).__name__
        names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n is not None]
        return f"{' -> '.join(str(n) for n in names)}: {what}" if names else f"{what} ({exc})"
    if isinstance(exc, zmq.ZMQError):
        return f"network: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def _dispatch(args: argparse.Namespace) -> int:
    import zmq

    setup_logging(args.log_level, as_json=args.log_json)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"secgan {args.command}: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except CryptoError as exc:
        print(f"secgan {args.command}: verification failed: {error_line(exc)}", file=sys.stderr)
        return exitcodes.VERIFY_FAILED
    except (SecganError, OSError, zmq.ZMQError) as exc:
        print(f"secgan {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return exitcodes.USAGE


if __name__ == "__main__":
    raise SystemExit(main())
