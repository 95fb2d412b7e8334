"""``secgan ledger``: read and verify a site's privacy ledger and release log (offline, read-only)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "show or verify a site's privacy ledger and release log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the ledger's state (epsilon, delta, steps, mode, ...)")
    show.add_argument("--site-dir", required=True, help="the site's state directory (holds ledger.json)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    verify = sub.add_parser("verify", help="check the release log's hash chain and that the ledger covers it")
    verify.add_argument("--site-dir", required=True, help="the site's state directory")
    verify.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from secgan.privacy.ledger import PrivacyLedger
    from secgan.privacy.release_log import verify_release_log

    if args.ledger_command == "show":
        led = PrivacyLedger.read(args.site_dir)
        d = led.to_dict()
        out = {
            "mode": d["mode"],
            "epsilon": d["epsilon"],
            "delta": d["delta"],
            "target_epsilon": d["target_epsilon"],
            "steps": d["steps"],
            "releases": d["releases"],
            "clip_norm": d["clip_norm"],
            "history": d["history"],
            "accountant": d["accountant"],
            "accountant_version": d["accountant_version"],
            "dataset_fingerprint": d["dataset_fingerprint"],
            "policy_hash": d["policy_hash"],
        }
        if args.json:
            print(json.dumps(out, indent=2, sort_keys=True))
        else:
            eps = "not accounted (mode off)" if out["epsilon"] is None else f"{out['epsilon']:.4f}"
            print(f"mode            {out['mode']}")
            print(f"epsilon         {eps} of target {out['target_epsilon']:g} (delta {out['delta']:g})")
            print(f"steps/releases  {out['steps']} / {out['releases']}")
            print(f"clip norm       {out['clip_norm']:g}")
            print(f"accountant      {out['accountant']} ({out['accountant_version']})")
            for sigma, q, k in out["history"]:
                print(f"  sigma {sigma:.4g}  q {q:.4g}  x {k}")
        return 0

    res = verify_release_log(args.site_dir)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, sort_keys=True))
    elif res.ok:
        print(f"ok: {res.entries} releases logged, chain intact, ledger covers them "
              f"(ledger releases {res.ledger_releases}, epsilon {res.ledger_epsilon})")
    else:
        print("FAILED:", file=sys.stderr)
        for p in res.problems:
            print(f"  - {p}", file=sys.stderr)
    return 0 if res.ok else 1
