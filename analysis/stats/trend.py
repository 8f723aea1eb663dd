"""Distribution-free tests of an ordered (monotone) trend across conditions.

Used by H1 (exploratory companions of the registered mixed-model slope): Page's L
across conditions ordered by mean exposure with seeds as blocks, and the
Jonckheere-Terpstra test for independent groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

from analysis.stats.inputs import complete_rows, require_alternative, require_columns, require_frame


def condition_order(data: pd.DataFrame, condition: str, exposure: str) -> list[str]:
    """Conditions sorted by their mean ``exposure`` (ascending), the order H1 predicts."""
    means = data.groupby(condition, sort=True)[exposure].mean()
    return list(means.sort_values(kind="mergesort").index)


def page_trend(
    data: pd.DataFrame,
    dv: str = "icl_auc",
    condition: str = "condition",
    exposure: str = "int_pne_star",
    block: str = "seed",
    method: str = "auto",
) -> pd.DataFrame:
    """Page's L test of a monotone trend of ``dv`` across conditions ordered by exposure.

    Returns
    -------
    pandas.DataFrame
        One row: ``statistic`` (L), ``p`` (one-sided, increasing trend), ``method``
        (exact or asymptotic, as scipy chose), ``n_blocks``, ``n_conditions``,
        ``n_blocks_dropped``, ``n_conditions_dropped`` and ``order`` (the
        conditions tested, in predicted order).

    Notes
    -----
    Within each block (seed) the m conditions are ranked by ``dv``;
    :math:`L = \\sum_j j R_j`, with :math:`R_j` the rank sum of the condition
    predicted j-th (conditions ordered by mean exposure). Large L supports an
    increasing trend (Page 1963). Blocks must be complete: when a run is missing (an
    excluded run), either the seeds or the conditions lacking a run are left out,
    whichever keeps more runs, and the count is reported. Computed by
    ``scipy.stats.page_trend_test``. Chosen over Jonckheere-Terpstra for H1 because
    the design is blocked by seed: ranking within seed removes the seed effect.

    References
    ----------
    .. [1] Page, E. B. (1963). Ordered hypotheses for multiple treatments: a
           significance test for linear ranks. JASA 58, 216-230.
    """
    func = "page_trend"
    require_frame(data, func)
    require_columns(data, [dv, condition, exposure, block], func)
    df, _ = complete_rows(data, [dv, exposure], func)
    order = condition_order(df, condition, exposure)
    if df.duplicated([block, condition]).any():
        raise ValueError(f"{func}: more than one row per ({block}, {condition})")
    table = df.pivot(index=block, columns=condition, values=dv).reindex(columns=order)
    by_seed = table.dropna()  # drop seeds lacking a condition ...
    by_condition = table.dropna(axis=1)  # ... or conditions lacking a seed
    complete = by_seed if by_seed.size >= by_condition.size else by_condition
    row = {
        "statistic": np.nan,
        "p": np.nan,
        "method": "",
        "n_blocks": len(complete),
        "n_conditions": complete.shape[1],
        "n_blocks_dropped": len(table) - len(complete),
        "n_conditions_dropped": table.shape[1] - complete.shape[1],
        "order": ",".join(map(str, complete.columns)),
    }
    if complete.shape[1] < 3 or len(complete) < 2:
        row["method"] = "not run: needs >= 3 conditions and >= 2 complete seeds"
        return pd.DataFrame([row])
    res = stats.page_trend_test(complete.to_numpy(), method=method)
    row |= {"statistic": float(res.statistic), "p": float(res.pvalue), "method": res.method}
    return pd.DataFrame([row])


def _jt_exact_counts(sizes: list[int]) -> list[int]:
    """Null frequencies of J for group sizes ``sizes`` (no ties), as exact integers.

    J counts the inversions of a random arrangement of the pooled sample; its
    generating function is the q-multinomial coefficient
    [N; n_1..n_k]_q = prod_{i<=N}(1-q^i) / prod_j prod_{i<=n_j}(1-q^i).
    """
    total = sum(sizes)
    top = (total * total - sum(n * n for n in sizes)) // 2
    coef = [1] + [0] * top
    for n in sizes:  # divide by (1 - q^i): a running sum with stride i
        for i in range(1, n + 1):
            for d in range(i, top + 1):
                coef[d] += coef[d - i]
    for i in range(1, total + 1):  # multiply by (1 - q^i)
        for d in range(top, i - 1, -1):
            coef[d] -= coef[d - i]
    return coef


def _jt_null_variance(sizes: np.ndarray, pooled: np.ndarray) -> float:
    """Null variance of J; tie-corrected (Lehmann 1975) when ``pooled`` has ties."""
    n = float(len(pooled))
    ties = np.unique(pooled, return_counts=True)[1].astype(float)
    if (ties == 1).all():
        return float((n * n * (2 * n + 3) - np.sum(sizes**2 * (2 * sizes + 3))) / 72)
    first = (
        n * (n - 1) * (2 * n + 5)
        - np.sum(sizes * (sizes - 1) * (2 * sizes + 5))
        - np.sum(ties * (ties - 1) * (2 * ties + 5))
    ) / 72
    second = np.sum(sizes * (sizes - 1) * (sizes - 2)) * np.sum(ties * (ties - 1) * (ties - 2))
    second /= 36 * n * (n - 1) * (n - 2)
    third = np.sum(sizes * (sizes - 1)) * np.sum(ties * (ties - 1)) / (8 * n * (n - 1))
    return float(first + second + third)


def _jt_statistic(samples: list[np.ndarray]) -> float:
    j = 0.0
    for a in range(len(samples)):
        for b in range(a + 1, len(samples)):
            diff = samples[b][None, :] - samples[a][:, None]
            j += np.sum(diff > 0) + 0.5 * np.sum(diff == 0)
    return j


def jonckheere_terpstra(
    data: pd.DataFrame,
    dv: str,
    group: str,
    order: list | None = None,
    alternative: str = "greater",
    method: str = "auto",
    n_perm: int = 9999,
    random_state: int = 0,
) -> pd.DataFrame:
    """Jonckheere-Terpstra test of ordered alternatives across independent groups.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format: one row per observation.
    dv, group : str
        Outcome column and group column.
    order : list, optional
        Group labels in the predicted order (default: sorted labels).
    alternative : {'greater', 'less', 'two-sided'}
        'greater': the outcome increases along ``order``.
    method : {'auto', 'exact', 'permutation', 'asymptotic'}
        'auto' is exact without ties (up to 10^6 null states), else permutation.

    Returns
    -------
    pandas.DataFrame
        One row: ``statistic`` (J), ``mean_null`` and ``var_null`` (its null mean
        and variance, tie-corrected), ``z`` (standardised J), ``p``, ``method``,
        ``n``, ``n_groups``.

    Notes
    -----
    :math:`J = \\sum_{a<b} \\sum_{i \\in a} \\sum_{j \\in b} [x_j > x_i] + \\tfrac12
    [x_j = x_i]` (Jonckheere 1954; Terpstra 1952). Under H0,
    :math:`E J = (N^2 - \\sum n_a^2)/4` and :math:`Var J = (N^2(2N+3) - \\sum n_a^2
    (2 n_a + 3))/72` without ties; with ties the variance is Lehmann's (1975)
    tie-corrected form. The exact null distribution (no ties) is the coefficient
    list of the q-multinomial coefficient (J counts inversions of a random arrangement);
    with ties p is from ``n_perm`` random relabellings, (1 + #exceed)/(1 + n_perm).

    References
    ----------
    .. [1] Jonckheere, A. R. (1954). A distribution-free k-sample test against
           ordered alternatives. Biometrika 41, 133-145.
    .. [2] Hollander, M., Wolfe, D. A. & Chicken, E. (2014). Nonparametric
           statistical methods, 3rd ed., section 6.2. Wiley.
    .. [3] Lehmann, E. L. (1975). Nonparametrics: statistical methods based on
           ranks. Holden-Day.
    """
    func = "jonckheere_terpstra"
    require_frame(data, func)
    require_alternative(alternative, func)
    require_columns(data, [dv, group], func)
    df, _ = complete_rows(data, [dv], func)
    order = list(order) if order is not None else sorted(df[group].unique())
    unknown = set(df[group].unique()) - set(order)
    if unknown:
        raise ValueError(f"{func}: groups {sorted(unknown)} are not in order={order}")
    samples = [df.loc[df[group] == g, dv].to_numpy(dtype=float) for g in order]
    samples = [s for s in samples if len(s)]
    if len(samples) < 2:
        raise ValueError(f"{func}: needs at least two non-empty groups")
    sizes = [len(s) for s in samples]
    n = sum(sizes)
    j_obs = _jt_statistic(samples)
    pooled = np.concatenate(samples)
    ties = len(np.unique(pooled)) < n
    mean = (n * n - sum(m * m for m in sizes)) / 4
    var = _jt_null_variance(np.array(sizes, dtype=float), pooled)
    z = (j_obs - mean) / np.sqrt(var)
    n_states = np.exp(special.gammaln(n + 1) - sum(special.gammaln(m + 1) for m in sizes))
    if method == "auto":
        method = "permutation" if ties or n_states > 1e6 else "exact"
    if method == "exact":
        if ties:
            raise ValueError(f"{func}: the exact distribution assumes no ties in {dv}")
        counts = np.array(_jt_exact_counts(sizes), dtype=object)
        total = sum(counts)
        k = int(round(j_obs))
        upper = sum(counts[k:]) / total
        lower = sum(counts[: k + 1]) / total
    elif method == "permutation":
        rng = np.random.default_rng(random_state)
        cuts = np.cumsum(sizes)[:-1]
        sims = np.array(
            [_jt_statistic(np.split(rng.permutation(pooled), cuts)) for _ in range(n_perm)]
        )
        upper = (1 + np.sum(sims >= j_obs - 1e-9)) / (1 + n_perm)
        lower = (1 + np.sum(sims <= j_obs + 1e-9)) / (1 + n_perm)
    elif method == "asymptotic":
        upper, lower = stats.norm.sf(z), stats.norm.cdf(z)
    else:
        raise ValueError(f"{func}: unknown method {method!r}")
    p = {"greater": upper, "less": lower, "two-sided": min(1.0, 2 * min(upper, lower))}
    return pd.DataFrame(
        [
            {
                "statistic": j_obs,
                "mean_null": mean,
                "var_null": var,
                "z": z,
                "p": float(p[alternative]),
                "method": method,
                "n": n,
                "n_groups": len(samples),
            }
        ]
    )
