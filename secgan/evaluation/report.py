"""The sweep's self-contained HTML page (figure inlined as base64, no external resources)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Mapping, Sequence

from secgan.evaluation.sweep_plan import DP_PREFIX
from secgan.core.fsio import atomic_write_bytes

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>secgan sweep</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 72em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.dp td { background: #fff4f4; }
.pass { color: #176317; font-weight: bold; } .fail { color: #a31515; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
</style></head><body>
<h1>Utility sweep</h1>
<p class="note">Downstream 2-D U-Net trained on each source, scored on the held-out real test patients of
every site (per-patient 3-D Dice and HD95 in voxels, mean of whole tumour, tumour core and enhancing
tumour; mean &plusmn; sample std over {{ seeds }} seed(s)). Wall time {{ wall }}.</p>
{% if figure %}<img alt="Dice against epsilon" src="data:image/png;base64,{{ figure }}">{% endif %}
<h2>Results</h2>
<table><tr>{% for c in columns %}<th>{{ titles.get(c, c) }}</th>{% endfor %}</tr>
{% for r in rows %}<tr class="{{ 'dp' if r.setting.startswith(dp_prefix) else '' }}">
{% for c in columns %}<td>{{ fmt(r.get(c)) }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if claims %}<h2>Targets</h2><ul>
{% for c in claims %}<li><span class="{{ 'pass' if c.ok else 'fail' }}">{{ 'met' if c.ok else 'not met' }}</span>:
{{ c.text }}</li>{% endfor %}</ul>{% endif %}
{% if quality %}<h2>Image quality of the synthetic sets</h2>
<p class="note">W1: Wasserstein-1 distance between brain intensities of synthetic and real test slices, per
modality (images in [-1, 1]). Precision/recall: k-NN manifolds (k = 3) in an embedding trained here on
real training slices.</p>
<table><tr>{% for c in qcolumns %}<th>{{ titles.get(c, c) }}</th>{% endfor %}</tr>
{% for r in quality %}<tr>{% for c in qcolumns %}<td>{{ fmt(r.get(c)) }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
{% if notes %}<h2>Notes</h2><ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
<h2>Configuration</h2><pre>{{ config }}</pre>
</body></html>
"""

COLUMNS = ("setting", "epsilon", "epsilon_spent", "dice_mean", "dice_std", "hd95_mean", "hd95_std",
           "dice_wt_mean", "dice_tc_mean", "dice_et_mean", "train_slices", "seeds")
QUALITY_COLUMNS = ("setting", "w1_t1", "w1_t1ce", "w1_t2", "w1_flair", "w1_mean", "precision", "recall")
# Column headings a reader understands (the CSV keeps the short names).
TITLES = {
    "setting": "trained on", "epsilon": "target epsilon", "epsilon_spent": "epsilon spent",
    "dice_mean": "mean Dice", "dice_std": "Dice std", "hd95_mean": "mean HD95 (voxels)", "hd95_std": "HD95 std",
    "dice_wt_mean": "Dice whole tumour", "dice_tc_mean": "Dice tumour core", "dice_et_mean": "Dice enhancing",
    "train_slices": "training slices", "seeds": "seeds",
    "w1_t1": "W1 T1", "w1_t1ce": "W1 T1ce", "w1_t2": "W1 T2", "w1_flair": "W1 FLAIR", "w1_mean": "W1 mean",
    "precision": "precision", "recall": "recall",
}


def _fmt(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.3g}"
    return str(v)


def render_report(
    rows: Sequence[Mapping[str, Any]],
    *,
    figure_png: Path | None,
    claims: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    config_text: str = "",
    wall_s: float | None = None,
) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    figure = base64.b64encode(Path(figure_png).read_bytes()).decode("ascii") if figure_png else ""
    quality = [r for r in rows if r.get("precision") is not None]
    seeds = max((int(r.get("seeds") or 0) for r in rows), default=0)
    wall = f"{wall_s / 60:.1f} min" if wall_s is not None else "unknown"
    return env.from_string(_TEMPLATE).render(
        rows=[dict(r) for r in rows],
        columns=COLUMNS,
        titles=TITLES,
        quality=quality,
        qcolumns=QUALITY_COLUMNS,
        claims=list(claims),
        notes=list(notes),
        config=config_text,
        figure=figure,
        seeds=seeds,
        wall=wall,
        fmt=_fmt,
        dp_prefix=DP_PREFIX,
    )


def write_report(path: str | Path, rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> Path:
    path = Path(path)
    atomic_write_bytes(path, render_report(rows, **kwargs).encode("utf-8"))
    return path

