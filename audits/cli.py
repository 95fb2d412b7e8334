"""``secgan audit``: run a privacy audit at a site, verify a report, merge reports into a summary.

    secgan audit run --site-config site.toml --synthetic DIR --out REPORT_DIR [--rubric FILE]
                     [--generator CHECKPOINT] [--seed N] [--annex] [--force] [--fail-on LEVEL]
    secgan audit --site-config ...            (short form of "run")
    secgan audit verify REPORT_DIR/report.json (--public-key FILE | --manifest FILE --coordinator-key FILE)
    secgan audit merge REPORT... --out DIR [--manifest FILE --coordinator-key FILE | --public-key FILE...]

``audit run`` refuses an ``--out`` that already holds a report (a signed report is never silently
replaced) unless ``--force``; with ``--fail-on LEVEL`` it exits 4 (:data:`secgan.core.exitcodes.AUDIT_FLAGGED`)
when the verdict is at or above LEVEL (or is not a rubric level at all).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "privacy audits of synthetic data: run at a site, verify signed reports, merge them"

_RUN_OPTIONS = ("site_config", "synthetic", "out", "rubric", "generator", "seed", "annex", "device", "mark_broken_ledger",
                "force", "fail_on")
FAIL_ON = ("amber", "red", "critical")


def _add_run_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--site-config", type=Path, default=d, metavar="FILE", help="the site's site.toml")
    p.add_argument("--synthetic", type=Path, default=d, metavar="DIR", help="folder with synthetic.safetensors")
    p.add_argument("--out", type=Path, default=d, metavar="REPORT_DIR", help="where report.json and report.html go")
    p.add_argument("--rubric", type=Path, default=d, metavar="FILE", help="rubric TOML (default: rubric-v3.toml)")
    p.add_argument("--generator", type=Path, default=d, metavar="CHECKPOINT",
                   help="generator checkpoint: enables the projection attack")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS if suppress else 0, help="audit seed (default 0)")
    p.add_argument("--device", default=d, choices=["cpu", "cuda"], help="device for the attacks (default: the site's)")
    p.add_argument("--annex", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="also write annex.html with the closest synthetic/training pairs (REAL PATIENT IMAGES; local only)")
    p.add_argument("--mark-broken-ledger", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="audit even when the site's ledger fails verification: the signed report is marked "
                        "Critical with the problems (default: refuse)")
    p.add_argument("--force", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="replace a report already in --out (default: refuse)")
    p.add_argument("--fail-on", type=str.lower, choices=FAIL_ON, default=d, metavar="LEVEL",
                   help=f"exit 4 when the verdict is at or above LEVEL ({', '.join(FAIL_ON)}); default: exit 0 "
                        "whatever the verdict")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_options(parser, suppress=True)
    sub = parser.add_subparsers(dest="audit_command", metavar="{run,verify,merge}")
    p_run = sub.add_parser("run", help="audit a synthetic release at a site", description="audit a synthetic release at a site")
    _add_run_options(p_run, suppress=False)

    p_ver = sub.add_parser("verify", help="verify a signed report (and its HTML page)",
                           description="exit 0 only for an untouched report signed by the expected key")
    p_ver.add_argument("report", type=Path, help="REPORT_DIR/report.json (or the folder)")
    p_ver.add_argument("--public-key", type=Path, metavar="FILE", help="the site's Ed25519 public key")
    p_ver.add_argument("--manifest", type=Path, metavar="FILE", help="signed federation manifest (site keys)")
    p_ver.add_argument("--coordinator-key", type=Path, metavar="FILE", help="coordinator's Ed25519 public key (verifies the manifest)")

    p_mer = sub.add_parser("merge", help="verify site reports and write a federation summary",
                           description="verify site reports and write summary.json + summary.html")
    p_mer.add_argument("reports", type=Path, nargs="+", metavar="REPORT", help="site report.json files (or folders)")
    p_mer.add_argument("--out", type=Path, required=True, metavar="DIR")
    p_mer.add_argument("--manifest", type=Path, metavar="FILE", help="signed federation manifest (site keys)")
    p_mer.add_argument("--coordinator-key", type=Path, metavar="FILE", help="coordinator's Ed25519 public key")
    p_mer.add_argument("--public-key", type=Path, action="append", metavar="FILE",
                       help="a site public key (repeatable) when no manifest is used")


def _run(args: argparse.Namespace) -> int:
    from secgan.core.errors import ConfigError

    missing = [f"--{n.replace('_', '-')}" for n in ("site_config", "synthetic", "out") if getattr(args, n, None) is None]
    if missing:
        raise ConfigError(f"audit run: missing {', '.join(missing)}")
    previous = _check_run_paths(args)
    import dataclasses

    from audits.api import run_audit
    from audits.core import AuditConfig

    config = None
    if getattr(args, "device", None):
        config = dataclasses.replace(AuditConfig(seed=getattr(args, "seed", 0)), device=args.device)
    report = run_audit(
        site_config_path=args.site_config,
        synthetic_dir=args.synthetic,
        out_dir=args.out,
        rubric_path=getattr(args, "rubric", None),
        generator_checkpoint=getattr(args, "generator", None),
        seed=getattr(args, "seed", 0),
        annex=getattr(args, "annex", False),
        config=config,
        broken_ledger="mark" if getattr(args, "mark_broken_ledger", False) else "refuse",
    )
    from audits.signing import ANNEX_HTML

    stale_annex = Path(args.out) / ANNEX_HTML
    if stale_annex in previous and not getattr(args, "annex", False):
        stale_annex.unlink(missing_ok=True)  # the previous report's annex: not this report's
    e = report["epsilon"]
    print(f"verdict: {report['verdict']}")
    claimed = "none" if e.get("claimed") is None else f"{e['claimed']:.2f}"
    print(f"epsilon claimed: {claimed}  empirical lower bound: {e['empirical_lb']:.3f}  "
          f"(max resolvable at this sample size: {e['max_resolvable']:.3f})")
    for f in report["findings"]:
        if f["level"] != "Green":
            print(f"  {f['level']}: {f['subject']}: {f['reason']}")
    print(f"report: {Path(args.out) / 'report.json'} and report.html")
    if getattr(args, "annex", False):
        print(f"annex (contains patient images, keep local): {Path(args.out) / 'annex.html'}")
    return verdict_exit_code(report["verdict"], getattr(args, "fail_on", None))


def verdict_exit_code(verdict: str, fail_on: str | None) -> int:
    """0, or AUDIT_FLAGGED when ``fail_on`` is given and the verdict reaches it. An Inconclusive or
    unknown verdict (one the audit could not decide) always does: a limitation is never a pass."""
    from secgan.core import exitcodes

    from audits.rubric import LEVELS

    if fail_on is None:
        return exitcodes.OK
    levels = [lvl.lower() for lvl in LEVELS]
    v = verdict.lower() if isinstance(verdict, str) else ""
    if v not in levels or v == "inconclusive" or levels.index(v) >= levels.index(fail_on):
        return exitcodes.AUDIT_FLAGGED
    return exitcodes.OK


def _check_run_paths(args: argparse.Namespace) -> list[Path]:
    """Every path of ``audit run`` checked before minutes of attacks, each error naming its option.
    Returns the previous report's files in ``--out`` (only with ``--force``): the new report replaces
    them once it is written, so a failed run leaves the previous report as it was."""
    from audits.signing import ANNEX_HTML, REPORT_HTML, REPORT_JSON
    from secgan.gan.checkpoint import checkpoint_file
    from secgan.core.errors import ConfigError

    if not Path(args.site_config).is_file():
        raise ConfigError(f"--site-config {args.site_config}: not a file")
    if not Path(args.synthetic).exists():
        raise ConfigError(f"--synthetic {args.synthetic}: synthetic data file not found")
    rubric = getattr(args, "rubric", None)
    if rubric is not None and not Path(rubric).is_file():
        raise ConfigError(f"--rubric {rubric}: not a file")
    generator = getattr(args, "generator", None)
    if generator is not None and not checkpoint_file(generator).is_file():
        raise ConfigError(f"--generator {generator}: no generator checkpoint there "
                          f"(a .safetensors file, or a folder holding {checkpoint_file('.').name})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    previous = [out / n for n in (REPORT_JSON, REPORT_HTML, ANNEX_HTML) if (out / n).exists()]
    if previous and not getattr(args, "force", False):
        raise ConfigError(f"--out {out} already holds a report ({previous[0].name}); pass --force to replace it, "
                          "or choose another folder")
    return previous


def _verify(args: argparse.Namespace) -> int:
    from audits.signing import REPORT_HTML, REPORT_JSON, load_public_keys, verify_report
    from secgan.core.errors import ConfigError

    if args.public_key is None and args.manifest is None:
        raise ConfigError("audit verify: give --public-key FILE, or --manifest FILE with --coordinator-key FILE")
    site_keys, key = load_public_keys(public_key=args.public_key, manifest=args.manifest, coordinator_key=args.coordinator_key)
    body = verify_report(args.report, site_keys=site_keys, key=key)
    path = args.report / REPORT_JSON if args.report.is_dir() else args.report
    html = path.parent / REPORT_HTML
    print(f"OK: {path} is signed by site {body.get('site_id')} and untouched; verdict {body.get('verdict')}")
    if html.is_file():
        print(f"OK: {html} matches the signed SHA-256")
    else:
        print(f"note: {html} is not present; only the JSON was verified")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from audits.merge import merge_reports
    from audits.signing import load_public_keys
    from secgan.keys.signing import load_verify_key

    site_keys = None
    keys = None
    if args.manifest is not None:
        site_keys, _ = load_public_keys(manifest=args.manifest, coordinator_key=args.coordinator_key)
    elif args.public_key:
        keys = [load_verify_key(p) for p in args.public_key]
    summary = merge_reports(args.reports, out_dir=args.out, site_keys=site_keys, keys=keys)
    print(f"federation verdict: {summary['verdict']}")
    if summary.get("missing_sites"):
        print(f"  MISSING: no report from {len(summary['missing_sites'])} site(s) of the manifest: "
              f"{', '.join(summary['missing_sites'])}; the federation is not fully audited")
    for r in summary["sites"]:
        claimed = "none" if r["epsilon_claimed"] is None else f"{r['epsilon_claimed']:.2f}"
        print(f"  {r['site_id']}: {r['verdict']} ({r['signature']}); epsilon claimed {claimed}, "
              f"lower bound {r['epsilon_lb']:.3f}")
    print(f"summary: {Path(args.out) / 'summary.json'} and summary.html")
    return 0


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "audit_command", None)
    if cmd == "verify":
        return _verify(args)
    if cmd == "merge":
        return _merge(args)
    if cmd == "run" or getattr(args, "site_config", None) is not None:
        return _run(args)
    print("secgan audit: give a subcommand (run, verify, merge) or --site-config ...; see --help", file=sys.stderr)
    return 2
