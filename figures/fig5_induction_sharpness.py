"""Figure 5: induction heads and sharpness against integrated P-NE* (DESIGN §4-5).

The message: whether the runs exposed to more preconditioned noise end with
stronger induction heads and in flatter regions of the loss. Three panels share
the x axis, integrated P-NE* (potential, log scale): the run's induction-head
score (largest per-head prefix-matching score; the uniform-attention level as a
dotted line), the top Hessian eigenvalue of the probe-batch loss (power
iteration), and the first-order SAM sharpness at the registered rho. One point
per run (colour: global batch, marker: LR rule, as in every figure), each
condition's median joined across seeds by a thin vertical range; excluded runs
hollow and grey. Spearman's rho over the included runs in each panel's title
(exploratory: no test of these measures is registered).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis.stats.inputs import require_columns
from figures.layout import EXCLUDED_COLOR, condition_styles, no_runs_panel, plt, save_figure

EXPOSURE = "int_pne_star"
PANELS = (  # column, y label, log y
    ("induction_head_score", "induction-head score\n(max prefix matching, 0-1)", False),
    ("hessian_top_eigenvalue", "top Hessian eigenvalue\n(nats/token per unit$^2$)", True),
    ("sam_sharpness", "SAM sharpness\n$L(w+\\rho g/|g|) - L(w)$ (nats/token)", True),
)


def _spearman(x: pd.Series, y: pd.Series) -> str:
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return "Spearman rho n/a"
    rho = spearmanr(np.log(x), y).statistic
    return f"Spearman rho = {rho:.2f} (n = {len(x)})"


def plot_fig5(runs: pd.DataFrame, out_stem: str | Path, uniform_prefix: float | None = None):
    """Draw Figure 5 from the runs table; write ``out_stem``.png and .pdf.

    ``uniform_prefix``: the prefix-matching score of a uniform causal head on the
    probe sequences (``training.evaluation.probes`` writes it as the measure's chance),
    drawn as a reference line when given.
    """
    cols = [EXPOSURE, *(p[0] for p in PANELS)]
    require_columns(
        runs, ["run_id", "condition", "arm", "global_batch", "lr_rule", "excluded", *cols], "fig5"
    )
    out_stem = Path(out_stem)
    data = runs[np.isfinite(runs[cols].astype(float)).all(axis=1) & (runs[EXPOSURE] > 0)]
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.8), sharex=True)
    if data.empty:
        for ax in axes:
            ax.set_axis_off()
        arms = sorted(runs["arm"].unique()) or ["any"]
        no_runs_panel(axes[1], arms, "Figure 5: no run with probes and P-NE*")
        return save_figure(fig, out_stem.parent, out_stem.name)
    styles = condition_styles(data)
    included = data[~data["excluded"].astype(bool)]
    for ax, (column, label, log_y) in zip(axes, PANELS, strict=True):
        for condition, style in styles.items():
            runs_c = data[data["condition"] == condition]
            kept = runs_c[~runs_c["excluded"].astype(bool)]
            dropped = runs_c[runs_c["excluded"].astype(bool)]
            ax.scatter(
                kept[EXPOSURE], kept[column], s=22, color=style["color"], marker=style["marker"]
            )
            ax.scatter(
                dropped[EXPOSURE],
                dropped[column],
                s=22,
                marker=style["marker"],
                facecolors="none",
                edgecolors=EXCLUDED_COLOR,
            )
            if len(kept) > 1:
                x = kept[EXPOSURE].median()
                ax.plot(
                    [x, x], [kept[column].min(), kept[column].max()], color=style["color"], lw=0.8
                )
        if column == "induction_head_score" and uniform_prefix is not None:
            ax.axhline(uniform_prefix, color="0.5", ls=":", lw=1, label="uniform attention")
            ax.legend(loc="best", frameon=False)
        ax.set_xscale("log")
        if log_y and (data[column] > 0).all():
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_xlabel("integrated P-NE* (potential, log scale)")
        ax.set_title(_spearman(included[EXPOSURE], included[column]), loc="left")
    handles = [
        plt.Line2D([], [], ls="none", color=s["color"], marker=s["marker"], label=s["label"])
        for s in styles.values()
    ]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(
        "Induction heads and sharpness against preconditioned noise exposure (exploratory)",
        x=0.01,
        ha="left",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, out_stem.parent, out_stem.name)
