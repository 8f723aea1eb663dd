"""Figure 1: integrated P-NE* vs ICL AUC, the H1 relation (DESIGN §5, seed 003 Fig. 1).

One point per run. The runs of H1's arms (the batch sweep): colour global batch,
marker LR rule, names as registered. Every other arm: its own marker and colour
(``figures.layout.ARM_STYLES``), shown but not fitted. Excluded runs hollow and
grey. The isotonic fit of H1's runs with its pointwise bootstrap band, Spearman's
rho and the registered mixed-model slope from ``h1.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from analysis.stats.isotonic import isotonic_fit
from figures.layout import (
    EXCLUDED_COLOR,
    arm_style,
    condition_styles,
    fmt_p,
    no_runs_panel,
    plt,
    save_figure,
)


def _h1_row(h1: pd.DataFrame, analysis: str) -> pd.Series | None:
    hit = h1[h1["analysis"] == analysis]
    return hit.iloc[0] if len(hit) and np.isfinite(hit["estimate"].iloc[0]) else None


def _log_exposure_axis(ax) -> None:
    """Integrated P-NE* on a log axis with plain tick labels; ICL AUC on the y axis."""
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    # Label the minor ticks only when the data span less than a decade (else they collide).
    low, high = ax.get_xlim()
    ax.xaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_xlabel("integrated P-NE*  (dimensionless, log scale)")
    ax.set_ylabel("ICL AUC  (accuracy area vs log2(1+shots), 0-1)")


def _title_lines(h1: pd.DataFrame, hypothesis: dict, arms: list, others: pd.DataFrame) -> list:
    """The title's lines under its first: Spearman rho, the confirmatory slope, the arms."""
    lines = []
    rho = _h1_row(h1, "spearman_rho")
    if rho is not None:
        lines.append(
            f"Spearman ρ = {rho.estimate:.2f} [{rho.ci_low:.2f}, {rho.ci_high:.2f}] (exploratory)"
        )
    slope = _h1_row(h1, hypothesis["test"])
    if slope is not None:
        lines.append(
            f"mixed-model slope = {slope.estimate:.3g} per log unit, one-sided "
            f"p = {fmt_p(slope.p)} (confirmatory)"
        )
    if len(others):
        lines.append(
            f"fit and tests: arm(s) {', '.join(arms)} only; the other arms' runs are shown, "
            "not fitted"
        )
    return lines


def plot_fig1(
    runs: pd.DataFrame,
    h1: pd.DataFrame,
    hypothesis: dict,
    out_dir: str | Path,
    n_boot: int = 500,
    random_state: int = 0,
) -> list[Path]:
    """Draw Figure 1 from the runs table and the H1 table; write PNG and PDF."""
    exposure, dv = str(hypothesis["predictor"])[4:-1], hypothesis["outcome"]
    arms = list(hypothesis["arms"])
    data = runs[runs["arm"].isin(arms)]
    included = data[~data["excluded"].astype(bool)].dropna(subset=[dv, exposure])
    others = runs[~runs["arm"].isin(arms) & ~runs["excluded"].astype(bool)]
    others = others.dropna(subset=[dv, exposure])
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    if included.empty:
        no_runs_panel(ax, arms, f"Figure 1: {dv} vs integrated P-NE*")
        return save_figure(fig, out_dir, "fig1_pne_icl")

    if len(included) >= 2 and included[exposure].nunique() > 1:
        iso = isotonic_fit(included, dv, exposure, n_boot=n_boot, random_state=random_state)
        ax.fill_between(
            iso["exposure"],
            iso["ci_low"],
            iso["ci_high"],
            color="C1",
            alpha=0.18,
            lw=0,
            label=f"bootstrap {iso['ci_level'].iloc[0]:.0%} band (pointwise)",
        )
        ax.plot(iso["exposure"], iso["fit"], color="C1", lw=2, label="isotonic fit")
    styles = condition_styles(data)
    for cond, style in styles.items():
        pts = included[included["condition"] == cond]
        if len(pts):
            ax.scatter(
                pts[exposure],
                pts[dv],
                s=28,
                color=style["color"],
                marker=style["marker"],
                edgecolor="white",
                linewidth=0.5,
                label=style["label"],
                zorder=3,
                gid=pts["arm"].iloc[0],
            )
    _other_arms(ax, others, exposure, dv, sorted(set(runs["arm"]) - set(arms)))
    excluded = runs[runs["excluded"].astype(bool)].dropna(subset=[dv, exposure])
    if len(excluded):
        ax.scatter(
            excluded[exposure],
            excluded[dv],
            s=28,
            facecolor="none",
            edgecolor=EXCLUDED_COLOR,
            label="excluded run (not analysed)",
            zorder=2,
        )
    _log_exposure_axis(ax)
    lines = _title_lines(h1, hypothesis, arms, others)
    ax.set_title("H1: ICL vs integrated P-NE* at matched loss\n" + "\n".join(lines), loc="left")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.text(
        1.0,
        -0.16,
        f"{len(included)} runs of arm(s) {', '.join(arms)}, {included['seed'].nunique()} seeds"
        + (f"; {len(others)} runs of other arms" if len(others) else ""),
        ha="right",
        transform=ax.transAxes,
        fontsize=7,
        color="0.4",
    )
    return save_figure(fig, out_dir, "fig1_pne_icl")


def _other_arms(ax, others: pd.DataFrame, exposure: str, dv: str, arms: list[str]) -> None:
    """The runs of arms H1 does not use: one marker and colour per arm; the runs an
    arm registers as references (role ``reference``) hollow."""
    for (arm, role), pts in others.groupby(["arm", "role"], sort=True):
        style = arm_style(arm, arms)
        reference = role == "reference"
        ax.scatter(
            pts[exposure],
            pts[dv],
            s=30,
            marker=style["marker"],
            facecolor="none" if reference else style["color"],
            edgecolor=style["color"] if reference else "white",
            linewidth=0.9 if reference else 0.5,
            label=f"{arm} (its reference runs)" if reference else arm,
            zorder=3,
            gid=arm,
        )
