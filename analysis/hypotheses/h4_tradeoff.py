"""H4: memorization (in-weights recall) falls as integrated P-NE* rises (DESIGN §5).

Confirmatory (plan ``hypotheses.H4``): the slope of ``memorization`` on
log(int_pne_star) in the random-intercept mixed model of H1 (same covariates, same
small-sample t reference, same transparent fallback), tested one-sided ``less``.
Descriptive companion: the ICL-memorization Pareto frontier (Figure 4).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats.inputs import complete_rows, require_columns, require_frame
from analysis.stats.mixed_model import mixed_slope


def memorization_slope(
    data: pd.DataFrame,
    dv: str = "memorization",
    exposure: str = "int_pne_star",
    covariates: tuple[str, ...] | list[str] = ("final_val_loss",),
    group: str = "seed",
    alternative: str = "less",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mixed-model slope of memorization on log exposure, one-sided ``less``.

    Returns
    -------
    pandas.DataFrame
        The one-row table of ``analysis.stats.mixed_model.mixed_slope``.

    Notes
    -----
    Same model and test as H1's (see ``mixed_slope``), with the outcome
    :math:`m_{is}` = mean of fact recall and in-weights accuracy, and the
    alternative :math:`\\beta_1 < 0`.
    """
    return mixed_slope(data, dv, exposure, covariates, group, alternative, alpha)


def pareto_frontier(
    data: pd.DataFrame,
    x: str = "icl_auc",
    y: str = "memorization",
    by: str | None = "condition",
) -> pd.DataFrame:
    """Points (condition means, or runs) on the ICL-memorization Pareto frontier.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per run.
    x, y : str
        Two scores where larger is better.
    by : str or None
        Average runs within this column first (condition means); None: runs.

    Returns
    -------
    pandas.DataFrame
        One row per point: ``by`` (when given), ``x``, ``y``, ``x_se``, ``y_se``
        (standard errors of the means, NaN for single runs), ``n_runs`` and
        ``on_frontier``; sorted by ``x``.

    Notes
    -----
    A point is on the frontier when no other point is at least as good in both
    scores and better in one (it is not dominated). The frontier is the trade-off
    curve H4 predicts: moving along it, ICL is bought with memorization.
    """
    func = "pareto_frontier"
    require_frame(data, func)
    require_columns(data, [x, y] + ([by] if by else []), func)
    df, _ = complete_rows(data, [x, y], func)
    if by:
        grouped = df.groupby(by, sort=False)
        points = grouped[[x, y]].mean()
        sem = grouped[[x, y]].sem()
        points[f"{x}_se"], points[f"{y}_se"] = sem[x], sem[y]
        points["n_runs"] = grouped.size()
        points = points.reset_index()
    else:
        points = df[[x, y]].copy()
        points[f"{x}_se"], points[f"{y}_se"], points["n_runs"] = np.nan, np.nan, 1
    px, py = points[x].to_numpy(), points[y].to_numpy()
    dominated = (
        (px[None, :] >= px[:, None])
        & (py[None, :] >= py[:, None])
        & ((px[None, :] > px[:, None]) | (py[None, :] > py[:, None]))
    ).any(axis=1)
    points["on_frontier"] = ~dominated
    return points.sort_values(x, kind="mergesort").reset_index(drop=True)
