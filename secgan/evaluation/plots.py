"""The sweep's figure: downstream Dice against epsilon, with the non-private settings as lines."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from secgan.evaluation.sweep_outputs import best_real_subset
from secgan.evaluation.sweep_plan import ASYNDGAN, DP_PREFIX, PUBLIC_ONLY, SYN_ALL

# Baselines drawn as horizontal lines, in legend order, with their styles.
_BASELINES = (
    ("real-all", "Real-All", "black", "-"),
    ("best-real-subset", "best Real-Subset-n", "grey", "--"),
    (SYN_ALL, "Syn-All (pooled GAN)", "tab:purple", "-."),
    (ASYNDGAN, "AsynDGAN, no DP", "tab:blue", ":"),
    (PUBLIC_ONLY, "public-only (pretrained G)", "tab:orange", "--"),
)


def baseline_values(rows: Sequence[Mapping]) -> dict[str, tuple[float, float]]:
    """``{key: (dice_mean, dice_std)}`` of the lines drawn; the best Real-Subset-n by mean Dice."""
    by = {r["setting"]: r for r in rows}
    out = {}
    for key in ("real-all", SYN_ALL, ASYNDGAN, PUBLIC_ONLY):
        if key in by:
            out[key] = (float(by[key]["dice_mean"]), float(by[key]["dice_std"]))
    best = best_real_subset(rows)
    if best is not None:
        out["best-real-subset"] = (float(best["dice_mean"]), float(best["dice_std"]))
    return out


def plot_dice_vs_epsilon(rows: Sequence[Mapping], path: str | Path, *, title: str = "") -> Path:
    """Write a PNG: DP AsynDGAN points (mean +- std over seeds) against epsilon, baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    dp = sorted(
        (r for r in rows if r.get("epsilon") is not None and str(r["setting"]).startswith(DP_PREFIX)),
        key=lambda r: r["epsilon"],
    )
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if dp:
        ax.errorbar(
            [r["epsilon"] for r in dp],
            [r["dice_mean"] for r in dp],
            yerr=[r["dice_std"] for r in dp],
            marker="o",
            color="tab:red",
            capsize=3,
            label="AsynDGAN + DP-SGD",
        )
        ax.set_xscale("log")
        ax.set_xticks([r["epsilon"] for r in dp])
        ax.set_xticklabels([f"{r['epsilon']:g}" for r in dp])
    lines = baseline_values(rows)
    for key, label, colour, style in _BASELINES:
        if key in lines:
            mean, std = lines[key]
            ax.axhline(mean, color=colour, linestyle=style, label=f"{label} ({mean:.3f})")
            if std > 0:
                ax.axhspan(mean - std, mean + std, color=colour, alpha=0.08)
    ax.set_xlabel("target epsilon per site (delta fixed)")
    ax.set_ylabel("Dice (mean of WT, TC, ET)")
    ax.set_ylim(-0.03, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
