"""Figure 4: the ICL-memorization trade-off and its Pareto frontier (H4; seed 003 Fig. 4).

Each run a small point, each condition's mean a large marker with standard-error
bars (colour: global batch, marker: LR rule), the frontier of non-dominated
condition means as a line; the registered H4 slope from T1 in the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.hypotheses.h4_tradeoff import pareto_frontier
from figures.layout import condition_styles, fmt_p, no_runs_panel, plt, save_figure


def plot_fig4(
    runs: pd.DataFrame, t1: pd.DataFrame, hypothesis: dict, out_dir: str | Path, icl="icl_auc"
) -> list[Path]:
    """Draw Figure 4 from the runs table and T1; write PNG and PDF."""
    arms, mem = list(hypothesis["arms"]), hypothesis["outcome"]
    data = runs[runs["arm"].isin(arms) & ~runs["excluded"].astype(bool)].dropna(subset=[icl, mem])
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    if data.empty:
        no_runs_panel(ax, arms, "Figure 4: ICL-memorization frontier")
        return save_figure(fig, out_dir, "fig4_frontier")
    styles = condition_styles(data)
    points = pareto_frontier(data, icl, mem, by="condition")
    rank = {c: i for i, c in enumerate(styles)}
    for p in sorted(points.itertuples(), key=lambda p: rank[p.condition]):
        s = styles[p.condition]
        runs_c = data[data["condition"] == p.condition]
        ax.scatter(runs_c[icl], runs_c[mem], s=10, color=s["color"], marker=s["marker"], alpha=0.4)
        ax.errorbar(
            getattr(p, icl),
            getattr(p, mem),
            xerr=getattr(p, f"{icl}_se"),
            yerr=getattr(p, f"{mem}_se"),
            color=s["color"],
            marker=s["marker"],
            ms=7,
            mec="white",
            capsize=2,
            ls="none",
            lw=1,
            label=p.condition,
            zorder=3,
        )
    front = points[points["on_frontier"]].sort_values(icl)
    ax.plot(
        front[icl],
        front[mem],
        color="0.2",
        lw=1.2,
        ls="--",
        zorder=2,
        label="Pareto frontier (condition means)",
    )
    ax.set_xlabel("ICL AUC  (0-1, higher = more in-context learning)")
    ax.set_ylabel("memorization  (recall without context, 0-1)")
    row = t1[t1["hypothesis"] == "H4"]
    if len(row) and np.isfinite(row["estimate"].iloc[0]):
        r = row.iloc[0]
        note = (
            f"H4 slope of memorization on log P-NE* = {r.estimate:.3g} "
            f"[{r.ci_low:.3g}, {r.ci_high:.3g}], one-sided p = {fmt_p(r.p)}: {r.decision}"
        )
    else:
        note = "H4: " + (row["decision"].iloc[0] if len(row) else "not in T1")
    ax.set_title(f"ICL-memorization trade-off\n{note}", loc="left")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, out_dir, "fig4_frontier")
