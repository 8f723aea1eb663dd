"""Exploratory figure: integrated P-NE* against the step-size clock, per run (issue 22, D6).

P-NE*_t = (eta_t / B_t) f_t, the clock's increment times the noise fraction
f_t = Tr(PCP) / Tr(PFP), so a run's integrated P-NE* is its clock sum_t eta_t / B_t
(the trace's ``int_clock``) times its clock-weighted mean noise fraction. One point per
run at its last logged step, log int_pne_star against log int_clock, coloured by arm,
with the identity line (noise fraction 1): runs of an arm that lie on a line of slope 1
have the same noise fraction, and there the metric orders them as the clock does;
injected noise moves a run above the line at its clock. Excluded runs are drawn hollow
and grey. The numbers (correlations, slopes) are those of the tables ``clock_runs`` and
``clock_summary`` (``analysis.exploratory.clock``); this module reads only the steps and
runs tables, as the other exploratory figures do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from analysis.stats.inputs import require_columns
from figures.layout import EXCLUDED_COLOR, arm_style, no_runs_panel, plt, save_figure

EXPOSURE, CLOCK = "int_pne_star", "int_clock"
# The sweeps have no arm style of their own in the other figures (they colour by batch);
# here every arm is one colour, none the grey of the excluded runs.
SWEEP_STYLES = {
    "batch_sweep": {"marker": "o", "color": "C0"},
    "regression_sweep": {"marker": "s", "color": "C2"},
}


def final_points(steps: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's last logged row: run_id, arm, excluded, int_pne_star, int_clock (both > 0)."""
    last = steps.sort_values(["run_id", "step"], kind="mergesort").groupby("run_id").tail(1)
    points = last[["run_id", EXPOSURE, CLOCK]].merge(
        runs[["run_id", "arm", "excluded"]], on="run_id", how="inner"
    )
    return points[(points[EXPOSURE] > 0) & (points[CLOCK] > 0)].reset_index(drop=True)


def plot_clock(steps: pd.DataFrame, runs: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Draw the figure from the steps and runs tables; write ``out_stem``.png and .pdf."""
    func = "plot_clock"
    require_columns(steps, ["run_id", "step", EXPOSURE, CLOCK], func)
    require_columns(runs, ["run_id", "arm", "excluded"], func)
    out_stem = Path(out_stem)
    points = final_points(steps, runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    if points.empty:
        arms = sorted(runs["arm"].unique()) or ["any"]
        no_runs_panel(ax, arms, "integrated P-NE* against the step-size clock")
        return save_figure(fig, out_stem.parent, out_stem.name)
    values = points[[EXPOSURE, CLOCK]].to_numpy(dtype=float)
    span = np.array([values.min() / 1.5, values.max() * 1.5])
    ax.plot(span, span, ls="--", color="0.5", lw=1, label="int P-NE* = clock (noise fraction 1)")
    excluded = points["excluded"].astype(bool)
    arms = sorted(points["arm"].unique())
    for arm in arms:
        pts = points[(points["arm"] == arm) & ~excluded]
        if pts.empty:
            continue
        style = SWEEP_STYLES.get(arm) or arm_style(arm, arms)
        ratio = pts[EXPOSURE] / pts[CLOCK]
        ax.scatter(
            pts[CLOCK], pts[EXPOSURE], s=28, color=style["color"], marker=style["marker"],
            edgecolor="white", linewidth=0.5, zorder=3,
            label=f"{arm} ({len(pts)}; P-NE*/clock {ratio.min():.3g}-{ratio.max():.3g})",
        )  # fmt: skip
    if excluded.any():
        ax.scatter(
            points.loc[excluded, CLOCK], points.loc[excluded, EXPOSURE], s=28, facecolor="none",
            edgecolor=EXCLUDED_COLOR, label="excluded run (not analysed)", zorder=2,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(*span)
    ax.set_ylim(*span)
    ax.set_xlabel("step-size clock  sum_t eta_t / B_t  (int_clock, 1/sequences)")
    ax.set_ylabel("integrated P-NE*  (int_pne_star)")
    ax.set_title(
        "Integrated P-NE* against the step-size clock, one point per run\n"
        "(exploratory; height above or below the dashed line: the run's mean noise fraction)"
    )
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_stem.parent, out_stem.name)
