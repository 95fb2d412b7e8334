"""The demo's one summary page, ``OUT/index.html``: every site's epsilon and audit verdict, the
Dice comparison, the real-vs-synthetic grid, and links to everything else the demo wrote."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from pathlib import Path
from typing import Any

import jinja2

from secgan import __version__
from secgan.core.fsio import atomic_write_bytes
from secgan.gan.synthetic import GRID_LEGEND

VERDICT_COLOURS = {"green": "#1b7f3b", "amber": "#b36b00", "red": "#b3261e", "critical": "#6a0dad"}

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>secgan demo summary</title>
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:1em 0;width:100%} th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{color:#fff;padding:.1em .5em;border-radius:.3em;font-weight:600}
.note{background:#f7f7f2;border-left:4px solid #999;padding:.5em 1em}
img{max-width:100%}
</style></head><body>
<h1>secgan demo</h1>
<p class="sub">{{ n_sites }} hospitals, coordinator and sites as separate processes over CURVE on 127.0.0.1,
DP-SGD at every site. Finished in {{ "%.0f"|format(wall_s) }} s. secgan {{ version }}.</p>

<h2>Privacy, site by site</h2>
<p>Each site spends its own privacy budget and refuses to release past it. The audit is run at the
site, on its own patients, and signed with the site's key.</p>
<table><tr><th>site</th><th>mode</th><th>epsilon spent</th><th>target</th><th>steps served</th><th>why it stopped</th>
<th>audit verdict</th><th>empirical epsilon (95% lower bound)</th><th>report</th></tr>
{% for s in sites %}<tr><td>{{ s.site }}</td><td>{{ s.mode }}</td><td class="num">{{ s.epsilon }}</td>
<td class="num">{{ s.target }}</td><td class="num">{{ s.steps }}</td><td>{{ s.stop }}</td>
<td><span class="badge" style="background:{{ s.colour }}">{{ s.verdict }}</span></td>
<td class="num">{{ s.eps_lb }}</td>
<td><a href="{{ s.report_html }}">report.html</a> · <a href="{{ s.report_json }}">report.json</a></td></tr>
{% endfor %}</table>
{% set why = sites|selectattr("why")|list %}{% if why %}<p>Why a verdict is not Green (the findings that decide it; the
report has the rest):</p><ul>{% for s in why %}<li>{{ s.site }}, {{ s.verdict }}: {{ s.why }}</li>{% endfor %}</ul>{% endif %}
<p>Federation summary, every signature verified against the signed manifest:
<a href="audits/summary.html">audits/summary.html</a> (<a href="audits/summary.json">json</a>).</p>
<p class="note">Check a report's signature (from this folder):
<code>secgan audit verify audits/site-1/report.json --public-key kits/site-1/signing.pub</code>
(exit code 0 only for an untouched report signed by that site).</p>

<h2>Does the synthetic data help? Dice on real test patients</h2>
<p>A 2-D U-Net trained on each source, scored on the held-out real patients of every site
(Dice: 1 is perfect overlap; HD95 in pixels: lower is better).</p>
<table><tr><th>trained on</th><th>Dice WT</th><th>Dice TC</th><th>Dice ET</th><th>mean Dice</th><th>HD95 mean</th></tr>
{% for r in utility %}<tr><td>{{ r.setting }}</td><td class="num">{{ r.wt }}</td><td class="num">{{ r.tc }}</td>
<td class="num">{{ r.et }}</td><td class="num"><b>{{ r.mean }}</b></td><td class="num">{{ r.hd95 }}</td></tr>
{% endfor %}</table>

<h2>Real and synthetic slices</h2>
<p>Top row: the label maps the generator was given; then, per modality, real slices (other patients)
and the synthetic slices made from those label maps.</p>
{% if grid %}<img alt="real vs synthetic slices" src="data:image/png;base64,{{ grid }}">
<p class="legend">Label colours (top row): {% for name, css in legend %}<span style="display:inline-block;width:.9em;height:.9em;background:{{ css }};border:1px solid #888;vertical-align:middle"></span> {{ name }}{% if not loop.last %} &nbsp; {% endif %}{% endfor %}</p>
{% else %}<p>(no grid)</p>{% endif %}
<p>Synthetic cases as NIfTI and PNG previews: <a href="synthetic/">synthetic/</a>.</p>

<h2>Everything else</h2>
<ul>
<li><a href="kits/coordinator/state/run.json">run.json</a>: steps, per-site steps served, refusals, drops, bytes per step, wall time</li>
<li><a href="logs/">logs/</a>: structured logs of every process (no keys, no payloads)</li>
<li><a href="kits/">kits/</a>: the provisioned keys, configs and signed manifest (secret files are mode 0600)</li>
<li><a href="utility/">utility/</a>: the Dice evaluation's files</li>
<li><a href="data/">data/</a>: the phantom hospitals (BraTS layout)</li>
</ul>
<h2>Time per stage</h2>
<table><tr>{% for k in timings %}<th>{{ k }}</th>{% endfor %}</tr>
<tr>{% for v in timings.values() %}<td class="num">{{ "%.0f"|format(v) }} s</td>{% endfor %}</tr></table>
<h2>Settings</h2><pre>{{ settings }}</pre>
</body></html>
"""


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _deciding_reason(report: dict, verdict: str) -> str:
    """The reasons of the findings at the report's verdict, the ones that decide it ("" for Green or
    no report)."""
    if verdict.lower() in ("green", "not run"):
        return ""
    return "; ".join(str(f.get("reason", "")) for f in report.get("findings") or []
                     if isinstance(f, dict) and str(f.get("level", "")).lower() == verdict.lower())


def _site_rows(out: Path, run_summary: dict, reports: dict[str, dict]) -> list[dict]:
    rows = []
    sites = run_summary.get("sites", {})
    for site in sorted(set(sites) | set(reports)):
        info = sites.get(site, {})
        rep = reports.get(site, {})
        verdict = str(rep.get("verdict", "not run"))
        claim = rep.get("epsilon") if isinstance(rep.get("epsilon"), dict) else {}
        rows.append({
            "site": site,
            "mode": info.get("mode", claim.get("mode", "-")),
            "epsilon": _fmt(info.get("epsilon")),
            "target": _fmt(claim.get("target")),
            "steps": info.get("steps_served", "-"),
            "stop": info.get("stop_reason") or "-",
            "verdict": verdict.capitalize(),
            "colour": VERDICT_COLOURS.get(verdict.lower(), "#555"),
            "eps_lb": f"{_fmt(claim.get('empirical_lb'))} (resolvable: up to {_fmt(claim.get('max_resolvable'))})",
            "why": _deciding_reason(rep, verdict),
            "report_html": f"audits/{site}/report.html",
            "report_json": f"audits/{site}/report.json",
        })
    return rows


def _utility_rows(utility: list[dict]) -> list[dict]:
    rows = []
    for r in utility:
        rows.append({
            "setting": r.get("setting"),
            "wt": _fmt(r.get("dice_wt"), 3), "tc": _fmt(r.get("dice_tc"), 3), "et": _fmt(r.get("dice_et"), 3),
            "mean": _fmt(r.get("dice_mean"), 3), "hd95": _fmt(r.get("hd95_mean"), 1),
        })
    return rows


def write_index(out: Path, *, run_summary: dict, reports: dict[str, dict], utility: list[dict],
                timings: dict[str, float], wall_s: float, settings: Any) -> Path:
    grid_path = out / "real_vs_synthetic.png"
    grid = base64.b64encode(grid_path.read_bytes()).decode() if grid_path.exists() else ""
    shown = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(TEMPLATE).render(
        n_sites=len(reports) or len(run_summary.get("sites", {})),
        wall_s=wall_s, version=__version__,
        sites=_site_rows(out, run_summary, reports),
        utility=_utility_rows(utility),
        grid=grid, timings=timings, legend=GRID_LEGEND,
        settings=html.unescape(json.dumps(shown, indent=2, default=str)),
    )
    index = out / "index.html"
    atomic_write_bytes(index, page.encode("utf-8"))
    return index
