"""`audit merge` against a manifest: sites without a report are named, and the verdict is never Green."""

from __future__ import annotations

import json
from pathlib import Path

from audits.merge import merge_reports
from audits.signing import REPORT_HTML, sign_report, write_report_json
from secgan.keys.signing import generate_signing_key, write_signing_key


def _report(folder: Path, site_id: str, key_path: Path, verdict: str = "Green") -> Path:
    folder.mkdir(parents=True)
    (folder / REPORT_HTML).write_text("<html></html>")
    from audits.signing import sha256_file

    body = {"format": "secgan-audit-report", "format_version": 1, "site_id": site_id, "verdict": verdict,
            "findings": [], "epsilon": {"mode": "dpsgd", "claimed": 9.983228915699247, "empirical_lb": 0.0,
                                         "max_resolvable": 0.672},
            "artifacts": {REPORT_HTML: {"sha256": sha256_file(folder / REPORT_HTML)}}}
    write_report_json(folder / "report.json", sign_report(body, key_path))
    return folder / "report.json"


def test_merge_with_missing_manifest_sites_is_never_green(tmp_path: Path) -> None:
    keys = {}
    for sid in ("site-1", "site-2", "site-3"):
        k = generate_signing_key()
        write_signing_key(tmp_path / f"{sid}.pem", k)
        keys[sid] = k.public_key()
    one = _report(tmp_path / "r1", "site-1", tmp_path / "site-1.pem")
    s = merge_reports([one], out_dir=tmp_path / "sum", site_keys=keys)
    assert s["verdict"] != "Green" and s["verdict"] == "Inconclusive"
    assert s["missing_sites"] == ["site-2", "site-3"]
    html = (tmp_path / "sum" / "summary.html").read_text()
    assert "site-2, site-3" in html and "MISSING" in html
    # the summary links each site's report page, and prints epsilon rounded
    assert 'href="../r1/report.html"' in html and "9.98" in html and "9.983228915699247" not in html
    assert json.loads((tmp_path / "sum" / "summary.json").read_text())["missing_sites"] == ["site-2", "site-3"]
    # every site reported: Green again
    two = _report(tmp_path / "r2", "site-2", tmp_path / "site-2.pem")
    three = _report(tmp_path / "r3", "site-3", tmp_path / "site-3.pem")
    full = merge_reports([one, two, three], out_dir=tmp_path / "sum2", site_keys=keys)
    assert full["verdict"] == "Green" and full["missing_sites"] == []
