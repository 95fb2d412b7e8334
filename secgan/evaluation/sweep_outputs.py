"""What a sweep writes from its finished settings: ``results.csv``, ``results.json``, the figure
(``dice_vs_epsilon.png``), the HTML page (``report.html``) with the targets and notes.

Imported by the ``secgan sweep`` command for the file names, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from secgan.core.config import to_dict
from secgan.evaluation.sweep_plan import ASYNDGAN, DP_PREFIX, LEVER_PREFIX, is_real_subset, missing_settings
from secgan.core.fsio import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from secgan.evaluation.sweep_config import SweepConfig

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
FIGURE_PNG = "dice_vs_epsilon.png"
REPORT_HTML = "report.html"
OUTPUT_FILES = (RESULTS_CSV, RESULTS_JSON, FIGURE_PNG, REPORT_HTML)

CSV_COLUMNS = (
    "setting", "epsilon", "epsilon_spent", "dice_mean", "dice_std", "hd95_mean", "hd95_std",
    "dice_wt_mean", "dice_wt_std", "dice_tc_mean", "dice_tc_std", "dice_et_mean", "dice_et_std",
    "hd95_wt_mean", "hd95_tc_mean", "hd95_et_mean", "train_slices", "test_patients", "seeds",
    "w1_t1", "w1_t1ce", "w1_t2", "w1_flair", "w1_mean", "precision", "recall", "gan_steps", "gan_runs",
)


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]))
                    for k in CSV_COLUMNS})
    return buf.getvalue()


def best_real_subset(rows: Sequence[Mapping]) -> Mapping | None:
    """The Real-Subset-n row with the highest mean Dice (None when there is none)."""
    subsets = [r for r in rows if is_real_subset(str(r["setting"]))]
    return max(subsets, key=lambda r: r["dice_mean"]) if subsets else None


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, evaluated honestly on the finished rows (missing rows: not checked)."""
    by = {r["setting"]: r for r in rows}
    out = []
    a, ra = by.get(ASYNDGAN), by.get("real-all")
    if a and ra:
        ratio = a["dice_mean"] / ra["dice_mean"] if ra["dice_mean"] > 0 else float("nan")
        out.append({"ok": ratio >= 0.9, "text": f"AsynDGAN Dice {a['dice_mean']:.3f} is {ratio:.2f} x Real-All "
                                                 f"{ra['dice_mean']:.3f} (target >= 0.9 x)"})
    best = best_real_subset(rows)
    if a and best is not None:
        out.append({"ok": a["dice_mean"] > best["dice_mean"],
                    "text": f"AsynDGAN Dice {a['dice_mean']:.3f} vs best Real-Subset-n ({best['setting']}) "
                            f"{best['dice_mean']:.3f} (target: above)"})
    dp = sorted((r for r in rows if r["setting"].startswith(DP_PREFIX)), key=lambda r: r["epsilon"])
    for r in dp:  # the private-utility targets: a fraction of the no-DP AsynDGAN of the same sweep
        need = next((f for e, f in DP_TARGETS if r["epsilon"] >= e), None)
        if a and need is not None and a["dice_mean"] > 0:
            ratio = r["dice_mean"] / a["dice_mean"]
            out.append({"ok": ratio >= need, "text": f"DP epsilon {r['epsilon']:g}: Dice {r['dice_mean']:.3f} is "
                                                     f"{ratio:.2f} x AsynDGAN without DP (target >= {need:.2f} x)"})
    if a and dp:
        below = all(r["dice_mean"] <= a["dice_mean"] + max(a["dice_std"], r["dice_std"]) for r in dp)
        pts = ", ".join(f"eps {r['epsilon']:g}: {r['dice_mean']:.3f}" for r in dp)
        out.append({"ok": below, "text": f"DP points ({pts}) at or below AsynDGAN without DP "
                                         f"{a['dice_mean']:.3f} within one std (the cost of privacy)"})
    from secgan.evaluation.sweep_public import public_targets

    out.extend(public_targets(rows))
    return out


# (epsilon at least, fraction of the no-DP AsynDGAN's Dice): the private-utility targets
DP_TARGETS = ((10.0, 0.93), (3.0, 0.80), (1.0, 0.60))


def figure_title(cfg: SweepConfig, n_sites: int) -> str:
    dp_steps = cfg.dp_steps()
    steps = f"{cfg.gan.steps} GAN steps" + (f" (DP runs {dp_steps})" if dp_steps != cfg.gan.steps else "")
    return f"{n_sites} sites, {steps}, {cfg.gan.runs} GAN(s) x {len(cfg.seeds)} U-Net seed(s)"


def _accounting(cfg: SweepConfig) -> str:
    if (cfg.privacy.policy or {}).get("accountant", "rdp") == "prv":
        return "PRV accounting: the smaller of the PRV upper bound and RDP"
    return "RDP accounting"


def notes(cfg: SweepConfig, rows: list[dict]) -> list[str]:
    """The page's notes on how the rows were made."""
    by = {r["setting"]: r for r in rows}
    mm = cfg.missing_modality
    absent_name, completed_name = missing_settings(mm)
    out = [
        "Training uses tumour-bearing slices for every source; each test patient is scored on all of its "
        "brain slices (3-D Dice/HD95 per patient, then averaged).",
        "Syn-All: the same G and D trained by the same runner on one site pooling every site's patients, "
        "with the per-step batch times the number of sites.",
        f"DP runs: DP-SGD at each site (Opacus, Poisson sampling of patients, {_accounting(cfg)}), noise "
        "calibrated so the planned steps spend the target epsilon; epsilon_spent is the largest spent "
        "epsilon reported by a site.",
    ]
    if cfg.score_on == "validation":
        out.insert(0, f"SCORED ON VALIDATION PATIENTS: {cfg.validation_fraction:g} of each site's training patients, "
                      "held out from every GAN and U-Net; the test patients were not read. For choosing settings, "
                      "not for reporting.")
    levers = [r for r in rows if str(r["setting"]).startswith(LEVER_PREFIX)]
    if levers:
        out.append("Lever rows (lever-NAME-epsE): DP runs with the settings of [privacy] and [gan] changed as the "
                   "variant NAME says (see the config below); they are in the table, not in the figure.")
    if absent_name in by and completed_name in by:
        a, c = by[absent_name], by[completed_name]
        out.append(
            f"Missing modality: a U-Net for site {mm.site} without {mm.modality} scores Dice {a['dice_mean']:.3f}; "
            f"with the channel completed by the AsynDGAN generator (best of {mm.draws} draws matched on the "
            f"present channels; test-time label maps predicted without the channel) {c['dice_mean']:.3f}. "
            "Simplification: that generator was trained with every site holding all four modalities; the "
            "site's missing channel is removed only for its segmenter and for the test images."
        )
    return out


def write_outputs(out: Path, rows: list[dict], *, cfg: SweepConfig, n_sites: int,
                  wall_s: float | None = None) -> list[dict]:
    """Rewrite the output files in ``out`` from the finished ``rows``; returns them without ``per_seed``."""
    from secgan.evaluation.plots import plot_dice_vs_epsilon
    from secgan.evaluation.report import write_report

    slim = [{k: v for k, v in r.items() if k != "per_seed"} for r in rows]
    atomic_write_json(out / RESULTS_JSON, slim)
    atomic_write_bytes(out / RESULTS_CSV, results_csv(slim).encode("utf-8"))
    if not rows:
        return slim
    fig = plot_dice_vs_epsilon(slim, out / FIGURE_PNG, title=figure_title(cfg, n_sites))
    claims = check_targets(slim)
    write_report(out / REPORT_HTML, slim, figure_png=fig, claims=claims, notes=notes(cfg, slim),
                 config_text=json.dumps(to_dict(cfg), indent=2), wall_s=wall_s)
    return slim
