"""Exit codes of every ``secgan`` command (and ``python -m coordinator`` / ``python -m sites``).

The one place these numbers live: commands return these names, ``secgan --help`` and the README
list them.
"""

from __future__ import annotations

OK = 0  # done: the command did what was asked (coordinator: the run completed)
VERIFY_FAILED = 1  # a signature, report, manifest or ledger check failed
USAGE = 2  # bad command line, configuration, file or endpoint (one line on stderr says which)
QUORUM_LOST = 3  # coordinator: stopped for lack of a quorum; site: this run cannot use the site
AUDIT_FLAGGED = 4  # audit run --fail-on LEVEL: the verdict is at or above LEVEL
INTERRUPTED = 130  # SIGINT or SIGTERM: state saved (coordinator: continue with --resume)

TABLE: tuple[tuple[int, str], ...] = (
    (OK, "completed (coordinator: the run finished its steps)"),
    (VERIFY_FAILED, "verification failed (signature, report, manifest or ledger)"),
    (USAGE, "usage error: bad arguments, configuration, file or endpoint"),
    (QUORUM_LOST, "quorum lost (coordinator) / run refused by the site's policy (site)"),
    (AUDIT_FLAGGED, "audit verdict at or above --fail-on"),
    (INTERRUPTED, "interrupted (coordinator: SIGINT/SIGTERM, state saved, continue with --resume)"),
)


def epilog() -> str:
    """The exit-code table for ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {code:<4d} {text}" for code, text in TABLE)
