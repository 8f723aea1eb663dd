"""Figure 2: ICL by phase of the added P-NE* budget (H2; seed 003 Fig. 2).

One panel per P-NE* budget level: ICL AUC of each included run (one point per
seed) by the phase its budget was placed in (early, mid, late), the runs of a
seed joined by thin lines, phase means with 95% t intervals beside them, and the
mean of the arm's runs without an added budget (its references) as a dashed level; the
registered late - early contrast from T1 (estimate, CI, one-sided p, Holm p) in
the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from figures.layout import fmt_p, no_runs_panel, plt, save_figure

PHASE_ORDER = ["early", "mid", "late"]


def plot_fig2(
    runs: pd.DataFrame, t1: pd.DataFrame, hypothesis: dict, out_dir: str | Path
) -> list[Path]:
    """Draw Figure 2 from the runs table and T1; write PNG and PDF."""
    arms = list(hypothesis["arms"])
    dv = hypothesis["outcome"]
    budget, phase = hypothesis.get("factors", ["pne_budget", "phase"])
    block = hypothesis.get("block", "seed")
    data = runs[runs["arm"].isin(arms) & ~runs["excluded"].astype(bool)]
    if data.empty or budget not in data or phase not in data:
        fig, ax = plt.subplots(figsize=(6.2, 3.6))
        missing = "" if data.empty else f"; runs lack columns {budget!r}/{phase!r}"
        no_runs_panel(ax, arms, f"Figure 2: {dv} by phase of the P-NE* budget{missing}")
        return save_figure(fig, out_dir, "fig2_phase")
    # the arm's reference runs (no added budget, no phase): a level, not a panel
    placed = data[budget].notna() & data[phase].fillna("").astype(str).ne("")
    reference, data = data[~placed], data[placed]
    if data.empty:
        fig, ax = plt.subplots(figsize=(6.2, 3.6))
        no_runs_panel(ax, arms, f"Figure 2: {dv} by phase of the P-NE* budget (no placed budget)")
        return save_figure(fig, out_dir, "fig2_phase")
    budgets = sorted(data[budget].unique())
    phases = [p for p in PHASE_ORDER if p in set(data[phase])] + sorted(
        set(data[phase]) - set(PHASE_ORDER)
    )
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.0 * len(budgets) + 0.5, 3.6), sharey=True)
    for ax, level in zip(np.atleast_1d(axes), budgets, strict=True):
        sub = data[data[budget] == level]
        pos = {p: i for i, p in enumerate(phases)}
        for _, seed_runs in sub.groupby(block):
            seed_runs = seed_runs.sort_values(phase, key=lambda s: s.map(pos))
            ax.plot(seed_runs[phase].map(pos), seed_runs[dv], color="0.8", lw=0.7, zorder=1)
        ax.scatter(
            sub[phase].map(pos), sub[dv], s=16, color="0.35", zorder=2,
            label=f"run (one per {block}; lines join a {block})",
        )  # fmt: skip
        means = sub.groupby(phase)[dv].agg(["mean", "sem", "count"]).reindex(phases)
        half = stats.t.ppf(0.975, np.maximum(means["count"] - 1, 1)) * means["sem"].fillna(0)
        ax.errorbar(
            np.arange(len(phases)) + 0.15,  # beside the runs, not on them
            means["mean"],
            yerr=half,
            color="C3",
            marker="o",
            capsize=3,
            lw=1.5,
            label="mean ± 95% CI",
        )
        if len(reference):
            ax.axhline(
                reference[dv].mean(), color="0.5", ls="--", lw=1, zorder=0,
                label=f"no added budget (mean of {len(reference)} runs)",
            )  # fmt: skip
        ax.set_xticks(range(len(phases)), phases)
        ax.set_xlim(-0.4, len(phases) - 0.4)
        ax.set_xlabel("phase of the added P-NE* budget")
        ax.set_title(f"budget {level:g}x  ({sub[block].nunique()} {block}s)", fontsize=10)
    first = np.atleast_1d(axes)[0]
    first.set_ylabel("ICL AUC  (0-1)")
    first.legend(frameon=False, loc="best")
    row = t1[t1["hypothesis"] == "H2"]
    if len(row) and np.isfinite(row["estimate"].iloc[0]):
        r = row.iloc[0]
        note = (
            f"late - early = {r.estimate:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}], one-sided "
            f"p = {fmt_p(r.p)}, Holm p = {fmt_p(r.p_holm)}: {r.decision}"
        )
    else:
        note = "late - early contrast: " + (row["decision"].iloc[0] if len(row) else "not in T1")
    n_excluded = int((runs["arm"].isin(arms) & runs["excluded"].astype(bool)).sum())
    if n_excluded:
        note += f"\n{n_excluded} excluded run(s) not shown"
    fig.suptitle(
        f"H2: phase sensitivity at equal total P-NE*\n{note}",
        x=0.02,
        y=1.04 + 0.04 * note.count("\n"),
        ha="left",
        fontsize=10,
    )
    return save_figure(fig, out_dir, "fig2_phase")
