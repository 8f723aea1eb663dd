"""Exploratory figure: Counterfactual Noise Replay's predictions against retraining (issue 21,
deviation D10).

Top row, one panel per metric at the largest horizon: every registered candidate of every
case (base run, switch point), its predicted change (x, the prediction interval as a
horizontal bar) against the change retraining realised (y), one colour and marker per
method (CNR = the AdamW Jacobian, the SGD-form Jacobian, J = I; predicting no change would
put every point on x = 0 and is left out), the line y = x on which a perfect prediction
lies, and the noise floor as a grey band of +-2 noise_floor_sd around y = 0: how far a
fresh draw of the recorded noise alone moves the metric. Points above or below the band
are candidates whose effect retraining can tell from a fresh draw. Bottom row, per
metric: the mean absolute error of each method against the horizon, no change included
(its error is the mean |realised change|), with the noise floor's RMS change dotted.
The numbers are those of the table ``cnr_validation`` (``analysis.exploratory.cnr``); this
module reads the gathered tables and that table, as the other figures read theirs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats.inputs import require_columns
from figures.layout import plt, save_figure

FIGURE_STEM = "cnr_predicted_vs_realised"
# A prediction and its retrain share this key (table contracts cnr_predictions, cnr_retrains).
KEY = ["base_run", "switch_fraction", "horizon", "candidate", "metric"]

METHOD_STYLES = {
    "adamw": {"color": "C3", "marker": "o", "label": "CNR (AdamW Jacobian)"},
    "sgd": {"color": "C0", "marker": "s", "label": "SGD-form Jacobian"},
    "identity": {"color": "C2", "marker": "^", "label": "J = I"},
    "no_change": {"color": "0.45", "marker": "x", "label": "no change (predicts 0)"},
}
METRIC_LABELS = {
    "val_loss": "validation loss",
    "icl_logprob_auc": "ICL log-prob AUC",
    "memorization_logprob": "memorization log-prob",
}
FLOOR_COLOR = "0.85"


def candidate_points(predictions: pd.DataFrame, retrains: pd.DataFrame) -> pd.DataFrame:
    """The registered candidates' predictions (role ``candidate``) with their retrain's
    ``realised_change`` beside them (rows without a retrain dropped; the gathering refuses
    them before)."""
    require_columns(predictions, [*KEY, "role", "method", "predicted_change"], "candidate_points")
    require_columns(retrains, [*KEY, "realised_change"], "candidate_points")
    candidates = predictions[predictions["role"] == "candidate"]
    return candidates.merge(retrains[[*KEY, "realised_change"]], on=KEY, how="inner")


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _empty(fig: plt.Figure, what: str) -> None:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="0.3")


def scatter_panel(ax: plt.Axes, pairs: pd.DataFrame, floor_sd: float, metric: str) -> None:
    """Predicted (x, interval bars) against realised (y) change of one metric at one horizon,
    per method; y = x; the +-2 noise_floor_sd band around 0."""
    lim = max(
        np.abs(pairs[["predicted_change", "realised_change"]].to_numpy(float)).max(initial=0.0),
        2 * floor_sd if np.isfinite(floor_sd) else 0.0,
    )
    lim = 1.15 * lim if lim > 0 else 1.0
    if np.isfinite(floor_sd):
        ax.axhspan(-2 * floor_sd, 2 * floor_sd, color=FLOOR_COLOR, zorder=0,
                   label="noise floor: ±2 SD of a fresh draw's change")  # fmt: skip
    ax.plot([-lim, lim], [-lim, lim], ls="--", color="0.4", lw=0.8, label="y = x")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.axvline(0, color="0.6", lw=0.5)
    for z, method in enumerate(("identity", "sgd", "adamw")):  # CNR drawn on top
        style, pts = METHOD_STYLES[method], pairs[pairs["method"] == method]
        if pts.empty:
            continue
        x, y = pts["predicted_change"].to_numpy(float), pts["realised_change"].to_numpy(float)
        xerr = np.vstack([x - pts["interval_low"].to_numpy(float),
                          pts["interval_high"].to_numpy(float) - x]).clip(min=0)  # fmt: skip
        ax.errorbar(
            x, y, xerr=xerr, fmt=style["marker"], ms=4, color=style["color"], ecolor=style["color"],
            elinewidth=0.6, alpha=0.8, capsize=0, mec="white", mew=0.4, label=style["label"],
            zorder=2 + z,
        )  # fmt: skip
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel(f"predicted change in {_metric_label(metric)}")
    ax.set_ylabel("realised change (retrain)")


def error_panel(ax: plt.Axes, validation: pd.DataFrame, metric: str) -> None:
    """Mean absolute error against horizon per method for one metric, and the noise floor."""
    rows = validation[validation["metric"] == metric].sort_values("horizon")
    for method, style in METHOD_STYLES.items():
        r = rows[rows["method"] == method]
        if r.empty:
            continue
        ax.plot(
            r["horizon"], r["mae"], marker=style["marker"], color=style["color"], ms=4, lw=1.2,
            ls="--" if method == "no_change" else "-", label=style["label"],
        )  # fmt: skip
    floor = rows.drop_duplicates("horizon")
    if floor["noise_floor_sd"].notna().any():
        ax.plot(floor["horizon"], floor["noise_floor_sd"], ls=":", color="0.3", lw=1,
                label="noise floor (RMS fresh-draw change)")  # fmt: skip
    horizons = sorted(rows["horizon"].unique())
    if len(horizons) > 1 and horizons[0] > 0:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(horizons)
    ax.set_xticklabels([str(h) for h in horizons])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("horizon (steps after the switch)")
    ax.set_ylabel(f"mean |error|, {_metric_label(metric)}")


def plot_cnr(
    predictions: pd.DataFrame, retrains: pd.DataFrame, validation: pd.DataFrame, out_stem: Path
) -> list[Path]:
    """Draw the figure from the gathered tables and ``cnr_validation``; write
    ``out_stem``.png and .pdf."""
    func = "plot_cnr"
    require_columns(validation, ["method", "metric", "horizon", "mae", "noise_floor_sd"], func)
    out_stem = Path(out_stem)
    pairs = candidate_points(predictions, retrains)
    metrics = list(pd.unique(validation["metric"])) if len(validation) else []
    if not metrics:
        fig = plt.figure(figsize=(6.4, 3.0))
        _empty(fig, "no replay case: nothing predicted or retrained")
        return save_figure(fig, out_stem.parent, out_stem.name)
    horizon = int(validation["horizon"].max())
    fig, axes = plt.subplots(
        2, len(metrics), figsize=(3.7 * len(metrics), 6.8), squeeze=False,
        gridspec_kw={"height_ratios": [1.25, 1]},
    )  # fmt: skip
    for j, metric in enumerate(metrics):
        at = pairs[(pairs["metric"] == metric) & (pairs["horizon"] == horizon)]
        floor = validation[(validation["metric"] == metric) & (validation["horizon"] == horizon)]
        floor_sd = float(floor["noise_floor_sd"].iloc[0]) if len(floor) else np.nan
        scatter_panel(axes[0, j], at, floor_sd, metric)
        axes[0, j].set_title(
            f"{_metric_label(metric)}, {horizon} steps after the switch", fontsize=9
        )
        error_panel(axes[1, j], validation, metric)
    n_cases = int(validation["n_cases"].max())
    fig.suptitle(
        f"Counterfactual noise replay: predicted against retrained change ({n_cases} cases; "
        "exploratory)",
        fontsize=10,
    )
    handles = {}
    for ax in axes.ravel():
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    first = [style["label"] for style in METHOD_STYLES.values()]  # the methods, then the lines
    labels = sorted(handles, key=lambda label: first.index(label) if label in first else 9)
    fig.legend([handles[label] for label in labels], labels, loc="lower center", ncol=4,
               frameon=False, bbox_to_anchor=(0.5, -0.06))  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, out_stem.parent, out_stem.name)
