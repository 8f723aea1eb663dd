"""ICL accuracy against the number of in-context demonstrations, per condition.

The message: how much each condition's models use their context, from chance at
k = 0 to the largest k, on held-out mappings. One line per registered condition
(mean over its included seeds, band min-max), the chance level dashed, and, for
the memorization probes, each condition's no-context recall beside it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.stats.inputs import require_columns
from figures.layout import condition_styles, no_runs_panel, plt, save_figure


def plot_icl_curves(scores: pd.DataFrame, runs: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Draw ICL accuracy vs shots and recall per condition; write ``out_stem``.png and .pdf."""
    func = "plot_icl_curves"
    require_columns(scores, ["run_id", "measure", "shots", "value", "chance"], func)
    require_columns(
        runs, ["run_id", "condition", "arm", "global_batch", "lr_rule", "excluded"], func
    )
    out_stem = Path(out_stem)
    included = runs[~runs["excluded"].astype(bool)]
    data = scores.merge(included[["run_id", "condition"]], on="run_id", how="inner")
    icl = data[data["measure"] == "icl_accuracy"]
    if icl.empty:
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
        no_runs_panel(ax, sorted(runs["arm"].unique()) or ["any"], "ICL vs shots: no scores")
        return save_figure(fig, out_stem.parent, out_stem.name)
    # Conditions with ICL scores only (a regression-family run has its own per-shot table).
    styles = condition_styles(included[included["run_id"].isin(icl["run_id"])])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for condition, style in styles.items():
        curve = icl[icl["condition"] == condition].groupby("shots")["value"]
        mean, low, high = curve.mean(), curve.min(), curve.max()
        left.plot(mean.index, mean.values, marker=style["marker"], color=style["color"],
                  label=style["label"], ms=4, lw=1.2)  # fmt: skip
        left.fill_between(mean.index, low.values, high.values, color=style["color"], alpha=0.12)
    left.axhline(icl["chance"].iloc[0], ls="--", color="0.5", lw=1, label="chance")
    left.set_xscale("symlog", linthresh=1)
    shots = sorted(icl["shots"].unique())
    left.set_xticks(shots, [str(k) for k in shots])
    left.set_xlabel("demonstrations in context, k (held-out mappings)")
    left.set_ylabel("ICL accuracy (share of queries answered)")
    left.set_xlim(-0.2, max(shots) * 1.1)
    left.set_ylim(0, 1)
    left.set_title("in-context learning: mean over seeds, band min-max")
    _recall_panel(right, data, styles)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_stem.parent, out_stem.name)


def _recall_panel(ax: plt.Axes, data: pd.DataFrame, styles: dict[str, dict]) -> None:
    """Per condition, no-context recall of the fixed mapping and of the facts."""
    measures = [
        ("in_weights_accuracy", "in-weights mapping"),
        ("fact_recall", "key -> value facts"),
    ]
    width = 0.8 / max(1, len(styles))
    for i, (condition, style) in enumerate(styles.items()):
        for j, (measure, _) in enumerate(measures):
            values = data[(data["condition"] == condition) & (data["measure"] == measure)]["value"]
            ax.bar(j + (i - (len(styles) - 1) / 2) * width, values.mean(), width,
                   color=style["color"], yerr=[[values.mean() - values.min()],
                                               [values.max() - values.mean()]],
                   error_kw={"lw": 0.8, "ecolor": "0.3"})  # fmt: skip
    for j, (measure, _) in enumerate(measures):
        chance = data[data["measure"] == measure]["chance"]
        if len(chance):
            ax.hlines(chance.iloc[0], j - 0.45, j + 0.45, colors="0.5", linestyles="--", lw=1)
    ax.set_xticks(range(len(measures)), [label for _, label in measures])
    ax.set_ylabel("accuracy without context")
    ax.set_ylim(0, 1)
    ax.set_title("memorization (dashed: chance)")
