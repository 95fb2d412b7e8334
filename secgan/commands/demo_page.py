"""The demo's one summary page, ``OUT/index.html``: every site's epsilon and audit verdict, the
downstream comparison (the brain's Dice, or the metrics of the domain's task), the real-vs-synthetic
grid, and links to everything else the demo wrote."""

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
<h1>secgan demo{% if domain != "brain" %}: {{ domain }}{% endif %}</h1>
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

<h2>Does the synthetic data help? {{ table.title }}</h2>
<p>{{ table.intro }}</p>
<table><tr><th>trained on</th>{% for c in table.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in table.rows %}<tr><td>{{ r.setting }}</td>{% for v in r.cells %}<td class="num">{% if loop.index0 == table.bold %}<b>{{ v }}</b>{% else %}{{ v }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>

<h2>Real and synthetic {{ "slices" if domain == "brain" else "images" }}</h2>
<p>{{ grid_caption }}</p>
{% if grid %}<img alt="real vs synthetic slices" src="data:image/png;base64,{{ grid }}">
{% if legend %}<p class="legend">{{ legend_what }} (top row): {% for name, css in legend %}<span style="display:inline-block;width:.9em;height:.9em;background:{{ css }};border:1px solid #888;vertical-align:middle"></span> {{ name }}{% if not loop.last %} &nbsp; {% endif %}{% endfor %}</p>{% endif %}
{% else %}<p>(no grid)</p>{% endif %}
<p>Synthetic {{ "cases as NIfTI and PNG previews" if domain == "brain" else "images (safetensors) and PNG previews" }}:
<a href="synthetic/">synthetic/</a>.</p>

<h2>Everything else</h2>
<ul>
<li><a href="kits/coordinator/state/run.json">run.json</a>: steps, per-site steps served, refusals, drops, bytes per step, wall time</li>
<li><a href="logs/">logs/</a>: structured logs of every process (no keys, no payloads)</li>
<li><a href="kits/">kits/</a>: the provisioned keys, configs and signed manifest (secret files are mode 0600)</li>
<li><a href="utility/">utility/</a>: the downstream evaluation's files</li>
<li><a href="data/">data/</a>: the phantom hospitals ({{ data_layout }})</li>
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


def _utility_table(domain: str, condition: str, utility: list[dict]) -> dict:
    """The downstream table: the brain's Dice per region, or the metrics of the condition kind's task
    (:data:`secgan.evaluation.image_utility.METRICS`; class tasks also each class's recall)."""
    if domain == "brain":
        return {"title": "Dice on real test patients",
                "intro": "A 2-D U-Net trained on each source, scored on the held-out real patients of every site "
                         "(Dice: 1 is perfect overlap; HD95 in pixels: lower is better).",
                "columns": ["Dice WT", "Dice TC", "Dice ET", "mean Dice", "HD95 mean"], "bold": 3,
                "rows": [{"setting": r.get("setting"),
                          "cells": [*(_fmt(r.get(f"dice_{k}"), 3) for k in ("wt", "tc", "et", "mean")),
                                    _fmt(r.get("hd95_mean"), 1)]} for r in utility]}
    from secgan.evaluation.image_utility import METRICS

    metrics = METRICS[condition]
    classes = next((r.get("classes") for r in utility if r.get("classes")), None) or []
    columns = [label for _, label in metrics] + [f"recall {c}" for c in classes]
    rows = [{"setting": r.get("setting"),
             "cells": [_fmt(r.get(k), 3) for k, _ in metrics]
             + [_fmt(v, 2) for v in (r.get("per_class_recall") or [])]} for r in utility]
    if condition == "instances":
        intro = ("A nuclei U-Net trained on each source's tiles, scored on the held-out real slide cases of every "
                 "site: foreground Dice, object F1 (a nucleus found at IoU 0.5) and AJI (aggregated Jaccard, "
                 "which also punishes merged and split nuclei); 1 is perfect.")
        title = "nuclei segmentation on real test cases"
    else:
        intro = ("A classifier trained on each source (train on synthetic, test on real: TSTR), scored on the "
                 "held-out real patients of every site: balanced accuracy (the mean of the per-class recalls, "
                 "so the rare classes count), macro AUC, and each class's recall (- where the test set has "
                 "none of it).")
        title = "classification on real test patients (TSTR)"
    return {"title": title, "intro": intro, "columns": columns, "rows": rows, "bold": 0}


def _legend(domain: str, image: Any) -> tuple[str, tuple]:
    """(what the grid's top row shows, (name, CSS colour) per condition value)."""
    if domain == "brain" or image is None:
        return "Label colours", GRID_LEGEND
    names = tuple(image.cond_names)
    k = len(names)
    grey = [int(255 * i / max(k - 1, 1)) for i in range(k)]
    what = "Class of each image, as a grey level" if image.condition == "class" else "Condition channels"
    return what, tuple((n, f"rgb({g},{g},{g})") for n, g in zip(names, grey))


GRID_CAPTIONS = {
    "brain": "Top row: the label maps the generator was given; then, per modality, real slices (other patients) "
             "and the synthetic slices made from those label maps.",
    "nuclei": "Top row: the nuclei maps the generator was given (background, nucleus, boundary); then real tiles "
              "of site 1 (other cases) and the synthetic tiles made from those maps.",
    "derm": "Top row: the class the generator was given; then real lesions of site 1 (other patients) and the "
            "synthetic lesions made for those classes.",
}
DATA_LAYOUTS = {"brain": "BraTS layout", "nuclei": "tiles with instance masks", "derm": "ISIC-style folders"}


def write_index(out: Path, *, run_summary: dict, reports: dict[str, dict], utility: list[dict],
                timings: dict[str, float], wall_s: float, settings: Any, domain: str = "brain",
                image: Any = None) -> Path:
    grid_path = out / "real_vs_synthetic.png"
    grid = base64.b64encode(grid_path.read_bytes()).decode() if grid_path.exists() else ""
    shown = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    legend_what, legend = _legend(domain, image)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(TEMPLATE).render(
        n_sites=len(reports) or len(run_summary.get("sites", {})),
        wall_s=wall_s, version=__version__,
        sites=_site_rows(out, run_summary, reports),
        table=_utility_table(domain, getattr(image, "condition", "labelmap"), utility),
        domain=domain, grid_caption=GRID_CAPTIONS[domain], data_layout=DATA_LAYOUTS[domain],
        grid=grid, timings=timings, legend=legend, legend_what=legend_what,
        settings=html.unescape(json.dumps(shown, indent=2, default=str)),
    )
    index = out / "index.html"
    atomic_write_bytes(index, page.encode("utf-8"))
    return index
