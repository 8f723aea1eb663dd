"""Shared look of the study's figures: condition colours, the empty-arm panel, saving.

Colours follow the registered condition names: one hue per global batch (a
sequential map, small batch = dark), one marker per LR rule, so a condition looks
the same in every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display (set before pyplot is imported)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MARKERS = {"fixed": "o", "sqrt": "s", "linear": "^"}
EXCLUDED_COLOR = "0.6"
# The causal arms (issue 10): one marker and colour per arm, none shared with the
# batch sweep's LR-rule markers or its viridis batch colours.
ARM_STYLES = {
    "noise_injection": {"marker": "^", "color": "C3"},
    "phase_schedule": {"marker": "D", "color": "C1"},
    "precond_freeze": {"marker": "v", "color": "C4"},
    "sgld": {"marker": "P", "color": "C5"},
    "nap": {"marker": "X", "color": "C6"},
}
_SPARE_MARKERS = ("*", "h", "p", "<", ">", "8")

plt.rcParams.update(
    {
        "figure.dpi": 150,
        "savefig.dpi": 200,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "legend.fontsize": 7,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "pdf.fonttype": 42,
    }
)


def condition_styles(runs: pd.DataFrame) -> dict[str, dict]:
    """Condition -> {color, marker, label}, ordered by arm, global batch, LR rule."""
    conds = runs.drop_duplicates("condition").sort_values(
        ["arm", "global_batch", "lr_rule", "condition"], kind="mergesort"
    )
    batches = sorted(conds["global_batch"].unique())
    cmap = plt.get_cmap("viridis")
    shade = {b: cmap(0.05 + 0.8 * i / max(len(batches) - 1, 1)) for i, b in enumerate(batches)}
    return {
        c.condition: {
            "color": shade[c.global_batch],
            "marker": MARKERS.get(c.lr_rule, "D"),
            "label": c.condition,
        }
        for c in conds.itertuples()
    }


def arm_style(arm: str, arms: list[str]) -> dict:
    """Marker and colour of an arm other than the batch sweep; unknown arms get spare
    markers in the order of ``arms`` (all arms of the figure, sorted)."""
    if arm in ARM_STYLES:
        return ARM_STYLES[arm]
    unknown = [a for a in arms if a not in ARM_STYLES]
    i = unknown.index(arm) if arm in unknown else 0
    return {"marker": _SPARE_MARKERS[i % len(_SPARE_MARKERS)], "color": f"C{7 + i % 3}"}


def no_runs_panel(ax: plt.Axes, arms: list[str], what: str) -> None:
    """A clearly empty panel: the figure renders before its arm has been run."""
    ax.set_axis_off()
    ax.add_patch(
        plt.Rectangle(
            (0.02, 0.02),
            0.96,
            0.96,
            transform=ax.transAxes,
            fill=False,
            linestyle="--",
            edgecolor="0.6",
        )
    )
    ax.text(
        0.5,
        0.5,
        f"no runs of arm {', '.join(arms)} yet\n\n({what})",
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=10,
        color="0.3",
    )


def fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def save_figure(fig: plt.Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf under ``out_dir``; close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(
            path,
            bbox_inches="tight",
            metadata=None if path.suffix == ".png" else {"CreationDate": None},
        )
    plt.close(fig)
    return paths
