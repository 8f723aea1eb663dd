"""Spearman's rank correlation with paired bootstrap confidence intervals.

``spearman_with_ci`` serves H1's exploratory Spearman row
(``analysis.hypotheses.h1_monotonicity.spearman_bootstrap``) and the estimator-sensitivity
table's rank agreement (``analysis.exploratory.sensitivity``).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def spearman_with_ci(
    xs: dict[str, np.ndarray],
    y: np.ndarray,
    n_boot: int = 2000,
    ci: float = 0.95,
    random_state: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Spearman's rho of ``y`` with each array of ``xs``, and each pair's difference, with CIs.

    Returns
    -------
    dict
        ``{name: (rho, ci_low, ci_high)}`` for every array of ``xs``, and
        ``{"name_a - name_b": (difference, ci_low, ci_high)}`` for every ordered pair
        of them; a bound is NaN when no resample gives a finite value.

    Notes
    -----
    :math:`\\rho` is Pearson's correlation of the ranks. CI: percentile bootstrap
    with runs resampled with replacement, the same resample for every x (paired),
    so the CI of a difference rho_a - rho_b accounts for the correlation of the two
    x. Resamples where a rank is constant (rho undefined) are skipped.

    References
    ----------
    .. [1] Spearman, C. (1904). The proof and measurement of association between
           two things. Am. J. Psychol. 15, 72-101.
    """
    n = len(y)
    idx = np.random.default_rng(random_state).integers(0, n, (n_boot, n))
    ry = stats.rankdata(y[idx], axis=1)
    ry -= ry.mean(1, keepdims=True)
    point, draws = {}, {}
    for name, x in xs.items():
        point[name] = float(stats.spearmanr(x, y).statistic)
        rx = stats.rankdata(x[idx], axis=1)
        rx -= rx.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            draws[name] = (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    for a, b in [(a, b) for a in xs for b in xs if a != b]:
        point[f"{a} - {b}"], draws[f"{a} - {b}"] = point[a] - point[b], draws[a] - draws[b]
    out = {}
    for name, value in point.items():
        finite = draws[name][np.isfinite(draws[name])]
        low, high = (np.nan, np.nan)
        if len(finite):
            low, high = np.percentile(finite, [50 * (1 - ci), 50 * (1 + ci)])
        out[name] = (value, float(low), float(high))
    return out
