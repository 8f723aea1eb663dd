"""Figure 3: equivalence intervals against their margins (H3 and loss matching).

Left: each H3 pairing (one per injected noise form: the registered form's pairing
first, the exploratory forms' after it) with its paired difference in ICL AUC,
reference - injected, and 90% CI (1 - 2 alpha, the TOST interval) against the
registered band +-delta. Right: each condition's
final validation loss minus the target, with its 90% CI, against +-tolerance (the
loss-matching control, T4). An interval inside the band is equivalence at alpha; a
condition with a single run has no interval and is drawn grey, untested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures.layout import no_runs_panel, plt, save_figure


def _intervals(ax, labels, est, low, high, margin, ok, xlabel: str, title: str) -> None:
    y = np.arange(len(labels))[::-1]
    ax.axvspan(-margin, margin, color="C2", alpha=0.12, lw=0, label="equivalence band ±margin")
    reach = np.nanmax(np.abs(np.r_[np.asarray(low, float), np.asarray(high, float), margin]))
    ax.set_xlim(-1.15 * reach, 1.15 * reach)
    ax.axvline(0, color="0.5", lw=0.8)
    # A condition with one run has no interval: grey, not the red of a failed test.
    has_ci = np.isfinite(np.asarray(low, float)) & np.isfinite(np.asarray(high, float))
    colors = ["0.55" if not c else "C2" if k else "C3" for k, c in zip(ok, has_ci, strict=True)]
    for yi, e, lo, hi, c in zip(y, est, low, high, colors, strict=True):
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=c, lw=2.2, solid_capstyle="butt")
        ax.plot(e, yi, "o", color=c, ms=4)
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(f"{title}\nband ±{margin:g}", loc="left")
    ax.plot([], [], color="C2", lw=2.2, label="90% CI inside band (equivalent)")
    ax.plot([], [], color="C3", lw=2.2, label="90% CI not inside band")
    if not has_ci.all():
        ax.plot([], [], "o", color="0.55", ms=4, label="one run: no interval, not tested")
    ax.set_ylim(-0.7, len(labels) - 0.3)


def plot_fig3(
    t3: pd.DataFrame, t4: pd.DataFrame, hypothesis: dict, out_dir: str | Path
) -> list[Path]:
    """Draw Figure 3 from tables T3 and T4; write PNG and PDF."""
    icl = t3[(t3["outcome"] == hypothesis["outcome"]) & t3["estimate"].notna()]
    loss = t4.dropna(subset=["estimate"]) if "estimate" in t4 else t4.iloc[0:0]
    height = max(4.2, 0.32 * max(len(loss), 2 * len(icl)) + 1.2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, height), gridspec_kw={"wspace": 0.6})
    if icl.empty:
        reason = t3["method"].dropna().iloc[0] if t3["method"].notna().any() else "no pairing"
        no_runs_panel(left, list(hypothesis["arms"]), f"H3: paired TOST; {reason}")
    else:
        labels = [
            f"{r.noise_form} ({'registered' if r.label == 'confirmatory' else 'exploratory'})"
            f"\n{r.condition_a} vs {r.condition_b}, n = {r.n_pairs}"
            for r in icl.itertuples()
        ]
        _intervals(
            left,
            labels,
            icl.estimate,
            icl.ci_low,
            icl.ci_high,
            float(icl["margin"].iloc[0]),
            icl.equivalent.astype(bool),
            "difference in ICL AUC  (reference small batch - injected)",
            "H3: source equivalence (paired TOST)",
        )
    if loss.empty:
        right.set_axis_off()
        right.text(0.5, 0.5, "no included runs", ha="center", va="center")
    else:
        _intervals(
            right,
            [f"{c}  ({a})" for c, a in zip(loss.condition, loss.arm, strict=True)],
            loss.estimate,
            loss.ci_low,
            loss.ci_high,
            float(loss["margin"].iloc[0]),
            loss.equivalent.astype(bool),
            "final validation loss - target  (nats/token)",
            "Loss matching (one-sample TOST)",
        )
    handles, labels = (right if right.axison else left).get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0.97)
        )
    return save_figure(fig, out_dir, "fig3_equivalence")
