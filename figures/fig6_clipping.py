"""Figure 6: potential vs effective integrated P-NE* under gradient clipping (DESIGN §2, §5).

The message: how much of the exposure the unclipped gradients carried (potential)
the clipped updates really applied (effective), per condition, and when in
training the two part. Left, one point per run at its last logged step against
the line effective = potential (a run below it was clipped); right, the ratio
effective / potential of integrated P-NE* along training, the median over seeds
of each condition with its min-max band. Condition names are those of
``runs.condition``; excluded runs are drawn hollow and grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from analysis.stats.inputs import require_columns
from figures.layout import EXCLUDED_COLOR, condition_styles, no_runs_panel, plt, save_figure

POTENTIAL, EFFECTIVE = "int_pne_star", "int_pne_star_eff"


def plot_fig6(steps: pd.DataFrame, runs: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Draw Figure 6 from the steps and runs tables; write ``out_stem``.png and .pdf."""
    func = "plot_fig6"
    require_columns(steps, ["run_id", "step", "tokens", POTENTIAL, EFFECTIVE], func)
    require_columns(
        runs, ["run_id", "condition", "arm", "global_batch", "lr_rule", "excluded"], func
    )
    out_stem = Path(out_stem)
    trace = steps.merge(runs[["run_id", "condition", "excluded"]], on="run_id", how="inner")
    trace = trace[(trace[POTENTIAL] > 0) & np.isfinite(trace[EFFECTIVE])]
    if trace.empty:
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
        arms = sorted(runs["arm"].unique()) or ["any"]
        no_runs_panel(ax, arms, "Figure 6: potential vs effective P-NE*, no logged steps")
        return save_figure(fig, out_stem.parent, out_stem.name)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    trace = trace.sort_values(["run_id", "step"], kind="mergesort")
    trace["ratio"] = trace[EFFECTIVE] / trace[POTENTIAL]
    final = trace.groupby("run_id").tail(1)
    styles = condition_styles(runs[runs["run_id"].isin(final["run_id"])])
    _scatter_panel(left, final, styles)
    _ratio_panel(right, trace[~trace["excluded"].astype(bool)], styles)
    included = final[~final["excluded"].astype(bool)]["ratio"]
    summary = (
        f"effective / potential at the end: median {included.median():.3f} "
        f"(runs from {included.min():.3f} to {included.max():.3f})"
        if len(included)
        else "no included run"
    )
    fig.suptitle(f"Potential vs effective P-NE* under gradient clipping\n{summary}", fontsize=10)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_stem.parent, out_stem.name)


def _scatter_panel(ax: plt.Axes, final: pd.DataFrame, styles: dict[str, dict]) -> None:
    low = float(min(final[POTENTIAL].min(), final[EFFECTIVE][final[EFFECTIVE] > 0].min()))
    high = float(max(final[POTENTIAL].max(), final[EFFECTIVE].max()))
    span = np.array([low / 1.5, high * 1.5])
    ax.plot(span, span, ls="--", color="0.5", lw=1, label="effective = potential (no clipping)")
    for condition, style in styles.items():
        pts = final[(final["condition"] == condition) & ~final["excluded"].astype(bool)]
        if len(pts):
            ax.scatter(
                pts[POTENTIAL], pts[EFFECTIVE], s=30, color=style["color"], marker=style["marker"],
                edgecolor="white", linewidth=0.5, label=style["label"], zorder=3,
            )  # fmt: skip
    excluded = final[final["excluded"].astype(bool)]
    if len(excluded):
        ax.scatter(
            excluded[POTENTIAL], excluded[EFFECTIVE], s=30, facecolor="none",
            edgecolor=EXCLUDED_COLOR, label="excluded run (not analysed)", zorder=2,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())  # decade labels only: no crowded minor labels
    ax.set_xlim(*span)
    ax.set_ylim(*span)
    ax.set_xlabel("potential integrated P-NE* (unclipped gradients, dimensionless)")
    ax.set_ylabel("effective integrated P-NE* (after clipping)")
    ax.set_title("each run at its last logged step")


def _ratio_panel(ax: plt.Axes, trace: pd.DataFrame, styles: dict[str, dict]) -> None:
    for condition, style in styles.items():
        rows = trace[trace["condition"] == condition]
        if rows.empty:
            continue
        by_step = rows.groupby("step").agg(
            tokens=("tokens", "median"), mid=("ratio", "median"), lo=("ratio", "min"),
            hi=("ratio", "max"),
        )  # fmt: skip
        millions = by_step["tokens"] / 1e6
        ax.fill_between(
            millions, by_step["lo"], by_step["hi"], color=style["color"], alpha=0.15, lw=0
        )
        ax.plot(millions, by_step["mid"], color=style["color"], lw=1.5)
    ax.axhline(1.0, ls="--", color="0.5", lw=1)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("effective / potential integrated P-NE*")
    ax.set_title("along training: median over seeds, band min-max")
    top = float(np.nanmax(trace["ratio"])) if len(trace) else 1.0
    ax.set_ylim(0, max(1.05, top * 1.05))
