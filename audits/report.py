"""Report rendering: JSON-ready dicts in, a self-contained HTML page out (plots inline as base64 PNG).

The page is written for a privacy officer first: a coloured verdict banner, a plain-language
summary, then the detail tables, then provenance. No patient image ever goes into it; the optional
annex (``annex.html``) is a separate file for local eyes only.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from audits.rubric import LEVELS

LEDGER_SUBJECT = "privacy ledger"  # the finding audits.api adds for a ledger that fails verification

TEMPLATES = Path(__file__).with_name("templates")
COLOURS = {"Green": "#1b7f3b", "Amber": "#b36b00", "Inconclusive": "#4b4f9c", "Red": "#b3261e", "Critical": "#5c0a0a"}
MEANING = {
    "Green": "No sign that the synthetic data reveals who was in the training set.",
    "Amber": "Some signals deserve a closer look before the synthetic data is released.",
    "Inconclusive": ("This audit cannot tell whether the synthetic data is safe: the sample is too small to check "
                     "the privacy claim. This is NOT a pass."),
    "Red": "The synthetic data reveals information about individual training patients. Do not release it as is.",
    "Critical": "The measured leakage contradicts the privacy guarantee this site claims. Do not release; investigate.",
}


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["ordinal"] = _ordinal
    return env


def _ordinal(x: Any) -> str:
    """1 -> "1st", 2.0 -> "2nd", 11 -> "11th", 2.5 -> "2.5th"."""
    if isinstance(x, float) and not x.is_integer():
        return f"{_num(x)}th"
    n = int(x)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


PLAIN_SUBJECTS = {
    "copies of real images": "Copies of real patient images",
    "privacy claim": "The privacy claim cannot be checked",
    "synthetic sample size": "Too few synthetic images",
    "non-member sample size": "Too few held-out patients",
    "privacy": "Privacy budget",
    "memorisation/pixels": "Memorisation (raw pixels)",
    "memorisation/embedding": "Memorisation (learned features)",
}


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) < 10 ** (-digits) or abs(x) >= 10**6:
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_plot(attacks: list[dict]) -> str | None:
    run = [a for a in attacks if a.get("status") == "run"]
    if not run:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    floor = 1e-3
    for a in run:
        f = np.maximum(np.asarray(a["roc"]["fpr"]), floor)
        t = np.maximum(np.asarray(a["roc"]["tpr"]), floor)
        ax.step(f, t, where="post", label=f"{a['label']} (AUC {a['auc']:.2f})")
    grid = np.logspace(-3, 0, 50)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false positive rate (non-members flagged)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title("Membership inference ROC (log-log, per patient)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # beside, not over, the curves
    return _png(fig)


def dcr_plot(space: str, synthetic_to_train: np.ndarray, holdout_to_train: np.ndarray) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    both = np.r_[synthetic_to_train, holdout_to_train]
    bins = np.linspace(0.0, float(both.max()) * 1.02 + 1e-12, 40)
    ax.hist(holdout_to_train, bins=bins, alpha=0.6, density=True, label="held-out patients -> training")
    ax.hist(synthetic_to_train, bins=bins, alpha=0.6, density=True, label="synthetic -> training")
    ax.set_xlabel(f"distance to the closest training image ({space})")
    ax.set_ylabel("density")
    ax.set_title(f"Distance to closest record, {space}")
    ax.legend(fontsize=7)
    return _png(fig)


def ct_plot(space: str, cells: list[dict]) -> str | None:
    if not cells:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    z = [c["z"] for c in cells]
    ax.bar(range(len(z)), z, color=["#b3261e" if v < -2 else "#777777" for v in z])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(z)))
    ax.set_xticklabels([str(c["cell"]) for c in cells], fontsize=7)
    ax.set_xlabel("cell (k-means on training images)")
    ax.set_ylabel("Z (negative: closer than new data)")
    ax.set_title(f"Data-copying test per cell, {space}")
    return _png(fig)


def plain_summary(report: dict) -> list[str]:
    """Three to six sentences a non-specialist can act on."""
    v = report["verdict"]
    e = report["epsilon"]
    lv = e.get("ledger_verification") or {}
    if lv and not lv.get("ok", True):
        # the verdict is Critical because of the ledger, not (necessarily) because of measured leakage
        out = ["This site's privacy ledger fails verification against its release log, so the epsilon it "
               "claims is NOT a valid privacy bound. Do not release; recover the ledger (`secgan ledger "
               "recover`) and audit again."]
        if any(f["level"] == "Critical" and f["subject"] != LEDGER_SUBJECT for f in report["findings"]):
            out.append(MEANING["Critical"])
    else:
        out = [MEANING[v]]
    lead = [f for f in report["findings"] if f["level"] == v and v in ("Inconclusive", "Red", "Critical")]
    if v == "Inconclusive":
        out += [f["reason"][0].upper() + f["reason"][1:] + "." for f in lead if f["subject"] == "privacy claim"][:1]
    if e.get("assumptions"):
        out.append("The claimed epsilon rests on an accounting assumption the site opted into "
                   f"({', '.join(e['assumptions'])}), not on a proof.")
    if e.get("mode") == "off":
        out.append("This site trained without differential privacy, so there is no formal privacy guarantee.")
    elif e.get("claimed") is None:
        out.append("No privacy ledger was found at this site, so its privacy claim could not be checked.")
    else:
        out.append(
            f"The site's privacy ledger claims epsilon = {e['claimed']:.2f}. The attacks prove at least "
            f"epsilon = {e['empirical_lb']:.2f} (95% confidence); with this many patients no audit could prove more "
            f"than {e['max_resolvable']:.2f}."
        )
    bad = [f for f in report["findings"] if f["level"] != "Green"]
    if bad:
        out.append(f"{len(bad)} finding(s) need attention; the most serious: {bad[0]['subject']}: {bad[0]['reason']}.")
    else:
        out.append("Every check passed at the thresholds of the rubric.")
    s = report["sizes"]
    out.append(
        f"Compared: {s['synthetic']} synthetic images against {s['member_patients']} training patients and "
        f"{s['nonmember_patients']} held-out patients of this site."
    )
    return out


def render_html(report: dict, plots: dict[str, Any]) -> str:
    """The report page. ``report`` is the unsigned report dict; ``plots`` maps names to data URIs."""
    tpl = _env().get_template("report.html")
    return tpl.render(
        r=report,
        plots=plots,
        colour=COLOURS[report["verdict"]],
        colours=COLOURS,
        levels=LEVELS,
        summary=plain_summary(report),
        plain_subjects=PLAIN_SUBJECTS,
    )


def render_summary_html(summary: dict) -> str:
    tpl = _env().get_template("summary.html")
    return tpl.render(s=summary, colour=COLOURS[summary["verdict"]], colours=COLOURS)


def render_annex_html(pairs: list[dict], site_id: str, *, copies: list[dict] = (), copies_total: int = 0) -> str:
    tpl = _env().get_template("annex.html")
    return tpl.render(pairs=pairs, site_id=site_id, copies=list(copies), copies_total=copies_total)


def image_pair_png(synthetic: np.ndarray, real: np.ndarray, title: str,
                   value_range: tuple[float, float] = (-1.0, 1.0)) -> str:
    """Side-by-side channel strips (any channel count) of a synthetic image and its nearest training
    image (annex only), grey levels spanning the run's ``value_range`` (the image spec's)."""
    plt = _pyplot()
    lo, hi = (float(v) for v in value_range)
    fig, axes = plt.subplots(2, synthetic.shape[0], figsize=(1.4 * max(synthetic.shape[0], 2), 3.0), squeeze=False)
    for row, img in enumerate((synthetic, real)):
        for c in range(img.shape[0]):
            ax = axes[row, c]
            ax.imshow(img[c], cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel("synthetic" if row == 0 else "nearest train", fontsize=7)
    fig.suptitle(title, fontsize=8)
    return _png(fig)
