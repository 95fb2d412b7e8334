"""``secgan audit merge``: every site report verified and folded into one federation summary
(``summary.json`` + ``summary.html``) that names the manifest's sites without a report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from audits import report as rep
from audits.api import REPORT_FORMAT, utc_now
from audits.rubric import worst
from audits.signing import REPORT_HTML, REPORT_JSON, sha256_file, verify_report
from secgan.core.errors import CryptoError, DataError
from secgan.core.fsio import atomic_write_bytes, atomic_write_json


def _relative_href(report_json: Path, out_dir: Path) -> str:
    """Link from the summary folder to the site's report.html (relative when possible)."""
    html = Path(report_json).resolve().parent / REPORT_HTML
    try:
        return Path(os.path.relpath(html, Path(out_dir).resolve())).as_posix()
    except ValueError:  # another drive
        return html.as_uri()


def merge_reports(
    paths: list[Path],
    *,
    out_dir: Path,
    site_keys: dict[str, Any] | None = None,
    keys: list[Any] | None = None,
) -> dict:
    """Verify every site report and write ``summary.json`` + ``summary.html``.

    With ``site_keys`` (from a verified manifest) each report must verify under its own site's
    key; with ``keys`` under one of them. With neither, reports are read but marked "unverified",
    and the summary verdict is at least Amber. Any failed verification raises (CryptoError / DataError).
    """
    if not paths:
        raise DataError("merge: no reports given")
    rows, seen = [], set()
    for p in paths:
        p = Path(p)
        if site_keys is not None:
            body, sig = verify_report(p, site_keys=site_keys), "verified (manifest key)"
        elif keys:
            body = None
            for k in keys:
                try:
                    body = verify_report(p, key=k)
                    break
                except CryptoError:
                    continue
            if body is None:
                raise CryptoError(f"{p}: signature verification failed under every given key")
            sig = "verified (given key)"
        else:
            from audits.signing import read_report_json

            body = read_report_json(p)
            body.pop("signature", None)
            sig = "UNVERIFIED (no keys given)"
        if body.get("format") != REPORT_FORMAT:
            raise DataError(f"{p}: not a secgan audit report")
        sid = body.get("site_id")
        if sid in seen:
            raise DataError(f"{p}: a second report for site {sid}")
        seen.add(sid)
        findings = body.get("findings") or []
        worst_f = findings[0] if findings else None
        e = body.get("epsilon", {})
        rows.append({
            "site_id": sid,
            "verdict": body.get("verdict"),
            "signature": sig,
            "mode": e.get("mode"),
            "epsilon_claimed": e.get("claimed"),
            "epsilon_lb": e.get("empirical_lb") or 0.0,
            "max_resolvable": e.get("max_resolvable"),
            "worst_finding": f"{worst_f['level']}: {worst_f['subject']}: {worst_f['reason']}" if worst_f else "none",
            "report_sha256": sha256_file(p if p.is_file() else p / REPORT_JSON),
            "report_href": _relative_href(p if p.is_file() else p / REPORT_JSON, Path(out_dir)),
        })
    levels = [r["verdict"] for r in rows]
    if any(r["signature"].startswith("UNVERIFIED") for r in rows):
        levels.append("Amber")
    # A federation verdict speaks for every site of the manifest: one without a report is unaudited.
    missing = sorted(str(s) for s in (site_keys or {}) if s not in seen)
    if missing:
        levels.append("Inconclusive")
    summary = {
        "format": "secgan-audit-summary",
        "format_version": 1,
        "created": utc_now(),
        "verdict": worst(levels),
        "manifest": site_keys is not None,
        "missing_sites": missing,
        "sites": sorted(rows, key=lambda r: str(r["site_id"])),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_bytes(out_dir / "summary.html", rep.render_summary_html(summary).encode("utf-8"))
    return summary
