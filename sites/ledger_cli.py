"""``secgan ledger``: show, verify and recover a site's privacy ledger and release log.

``show`` and ``verify`` are read-only and take no lock; both verify ledger and log first, and exit 1
with the problems on stderr when verification fails (``show`` still prints the state, marked).
``recover`` writes the state, so it takes the site's state lock (a running site is refused): it
archives a broken release log and starts a new chain whose first entry carries the counts and
epsilon over, the larger of ledger and old log, never less (``secgan.privacy.recovery``).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "show, verify or recover a site's privacy ledger and release log"

RECOVER_HELP = (
    "after `verify` failed: archive a broken release log as releases.broken-<time>.jsonl, raise the ledger to "
    "at least every release and epsilon the old log claims, and start a new chain with a carry-over entry. "
    "Never lowers epsilon or counts. Stop the site first (it holds the state lock)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the ledger's state (epsilon, delta, steps, mode, ...), verified")
    show.add_argument("--site-dir", required=True, help="the site's state directory (holds ledger.json)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    verify = sub.add_parser("verify", help="check the release log's hash chain and that the ledger covers it")
    verify.add_argument("--site-dir", required=True, help="the site's state directory")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    recover = sub.add_parser("recover", help="recover from a broken release log without lowering epsilon",
                             description=RECOVER_HELP)
    recover.add_argument("--site-dir", required=True, help="the site's state directory")
    recover.add_argument("--json", action="store_true", help="machine-readable output")


def _problems(res) -> None:
    print("FAILED:", file=sys.stderr)
    for p in res.problems:
        print(f"  - {p}", file=sys.stderr)


def _show(args: argparse.Namespace) -> int:
    from secgan.privacy.ledger import PrivacyLedger
    from secgan.privacy.release_log import verify_release_log

    led = PrivacyLedger.read(args.site_dir)
    res = verify_release_log(args.site_dir)
    d = led.to_dict()
    out = {k: d.get(k) for k in ("mode", "epsilon", "delta", "target_epsilon", "steps", "releases", "clip_norm",
                                 "history", "accountant", "accountant_version", "dataset_fingerprint",
                                 "policy_hash", "assumptions", "recoveries")}
    out["verification"] = res.to_dict()
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        if not res.ok:
            print("WARNING: this ledger does NOT verify against its release log; its epsilon is not a "
                  "trustworthy bound until recovered (see below)")
        eps = "not accounted (mode off)" if out["epsilon"] is None else f"{out['epsilon']:.4f}"
        print(f"mode            {out['mode']}")
        print(f"epsilon         {eps} of target {out['target_epsilon']:g} (delta {out['delta']:g})"
              + ("" if res.ok else "  [UNVERIFIED]"))
        print(f"steps/releases  {out['steps']} / {out['releases']} (release log: {res.releases} releases, "
              f"{res.steps} charged steps; gradient-only releases charge none)")
        print(f"clip norm       {out['clip_norm']:g}")
        print(f"accountant      {out['accountant']} ({out['accountant_version']})")
        print(f"assumptions     {', '.join(out['assumptions']) or 'none (proven accounting only)'}")
        for sigma, q, k in out["history"]:
            print(f"  sigma {sigma:.4g}  q {q:.4g}  x {k}")
        for r in out["recoveries"] or []:
            print(f"recovered       {r.get('reason')}")
    if not res.ok:
        _problems(res)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from secgan.privacy.release_log import verify_release_log

    if args.ledger_command == "show":
        return _show(args)
    if args.ledger_command == "recover":
        from secgan.privacy.recovery import recover

        out = recover(args.site_dir)
        if args.json:
            print(json.dumps(out, indent=2, sort_keys=True))
        elif not out["changed"]:
            print("nothing to recover: ledger and release log verify")
        else:
            print(f"recovered: ledger now {out['releases']} releases, epsilon {out['epsilon']}"
                  + (f"; broken log archived as {out['archived']}" if out.get("archived") else ""))
            for p in out["problems"]:
                print(f"  was: {p}")
        return 0

    res = verify_release_log(args.site_dir)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, sort_keys=True))
    elif res.ok:
        print(f"ok: {res.releases} releases logged, chain intact, ledger covers them "
              f"(ledger releases {res.ledger_releases}, epsilon {res.ledger_epsilon})")
    else:
        _problems(res)
    return 0 if res.ok else 1
