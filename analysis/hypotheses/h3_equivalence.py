"""H3: approximate source equivalence by TOST, and loss matching by TOST (DESIGN §5).

Confirmatory (plan ``hypotheses.H3``): small-batch noise and large-batch plus
matched injected noise give ICL within +-delta, tested by a paired TOST (pairs:
runs of the same seed) with the registered margin, its 1 - 2 alpha (90%) CI shown
against +-delta. Control (plan ``controls.loss_matching``): the final validation
loss of each condition lies within +-target_tolerance of the target loss, by a
one-sample TOST; the same paired TOST on ``final_val_loss`` checks that the two
sides of an H3 pairing are loss-matched.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

from analysis.stats.inputs import complete_rows, require_columns, require_frame, require_probability
from preregistration.tables import columns

# Columns of t3_equivalence.csv (report.build_tables; contract "equivalence").
EQUIVALENCE_COLUMNS = columns("equivalence")


def _tost_row(x: np.ndarray, y: np.ndarray | float, margin: float, alpha: float) -> dict:
    """Mean of x - y, its 1 - 2 alpha CI and the TOST p against +-margin.

    ``y`` an array: paired TOST; ``y`` a number: one-sample TOST against it.
    """
    paired = np.ndim(y) > 0
    diffs = x - y
    n = len(diffs)
    mean = float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1) / np.sqrt(n))
    half = stats.t.ppf(1 - alpha, n - 1) * se
    if se > 0:
        with warnings.catch_warnings():  # pingouin's effect size warns on tiny samples
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(pg.tost(x, y, bound=float(margin), paired=paired).at["TOST", "pval"])
    else:  # no spread: the difference is known exactly
        p = 0.0 if abs(mean) < margin else 1.0
    return {
        "n": n,
        "estimate": mean,
        "se": se,
        "df": n - 1,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "ci_level": 1 - 2 * alpha,
        "margin": float(margin),
        "p": p,
        "equivalent": bool(p < alpha),
    }


def paired_tost(
    data: pd.DataFrame,
    dv: str,
    pair: tuple[str, str],
    margin: float,
    condition: str = "condition",
    subject: str = "seed",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Paired TOST of ``dv`` between two conditions, pairs matched on ``subject``.

    Parameters
    ----------
    data : pandas.DataFrame
        Long format, one row per run.
    dv : str
        Outcome (``icl_auc`` for H3, ``final_val_loss`` for its loss control).
    pair : (str, str)
        Conditions a and b; the estimate is mean(a - b).
    margin : float
        Equivalence margin delta (> 0), in the units of ``dv``.
    condition, subject : str
        Condition column; pairing column (the seed).
    alpha : float
        Level of each one-sided test; the CI is at 1 - 2 alpha.

    Returns
    -------
    pandas.DataFrame
        One row: ``outcome``, ``condition_a``, ``condition_b``, ``n_pairs``,
        ``estimate`` (mean difference a - b), ``se``, ``df``, ``ci_low``,
        ``ci_high``, ``ci_level``, ``margin``, ``p`` (TOST p, pingouin),
        ``equivalent`` (p < alpha).

    Notes
    -----
    With :math:`d_s = y_{a,s} - y_{b,s}`, :math:`\\bar d`, :math:`SE = s_d/\\sqrt n`:
    :math:`t_1 = (\\bar d + \\delta)/SE` tests H0: :math:`\\mu_d \\le -\\delta`,
    :math:`t_2 = (\\bar d - \\delta)/SE` tests H0: :math:`\\mu_d \\ge \\delta`, both on
    n - 1 df; p = max(p_1, p_2) (Schuirmann 1987). Equivalence at level alpha is the
    same as the 1 - 2 alpha CI lying inside (-delta, delta). The p-value is
    pingouin's ``tost(..., paired=True)``.

    References
    ----------
    .. [1] Schuirmann, D. J. (1987). A comparison of the two one-sided tests
           procedure and the power approach for assessing the equivalence of average
           bioavailability. J. Pharmacokinet. Biopharm. 15, 657-680.
    .. [2] Lakens, D. (2017). Equivalence tests: a practical primer for t tests,
           correlations, and meta-analyses. Soc. Psychol. Personal. Sci. 8, 355-362.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"condition": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
    ...                    "icl_auc": [0.50, 0.52, 0.51, 0.50, 0.515, 0.505]})
    >>> round(float(paired_tost(df, "icl_auc", ("a", "b"), 0.02).at[0, "estimate"]), 4)
    0.0033
    """
    func = "paired_tost"
    require_frame(data, func)
    require_columns(data, [dv, condition, subject], func)
    require_probability(alpha, "alpha", func)
    if not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"{func}: margin must be a positive number, got {margin!r}")
    a, b = pair
    df, _ = complete_rows(data[data[condition].isin([a, b])], [dv], func)
    if df.duplicated([condition, subject]).any():
        raise ValueError(f"{func}: more than one row per ({condition}, {subject})")
    wide = df.pivot(index=subject, columns=condition, values=dv).reindex(columns=[a, b])
    wide = wide.dropna()
    base = {"outcome": dv, "condition_a": a, "condition_b": b, "n_pairs": len(wide)}
    if len(wide) < 2:
        raise ValueError(f"{func}: needs >= 2 {subject}s with both {a!r} and {b!r}")
    x, y = wide[a].to_numpy(dtype=float), wide[b].to_numpy(dtype=float)
    res = _tost_row(x, y, margin, alpha)
    res.pop("n")
    return pd.DataFrame([base | res])


def tost_against_target(
    data: pd.DataFrame,
    dv: str,
    target: float,
    margin: float,
    by: str = "condition",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One-sample TOST per group: is the mean of ``dv`` within +-margin of ``target``?

    Returns
    -------
    pandas.DataFrame
        One row per level of ``by``: ``by`` value, ``n_runs``, ``mean``, ``sd``,
        ``target``, ``estimate`` (mean - target), ``ci_low``, ``ci_high`` (1 - 2
        alpha CI of the difference), ``ci_level``, ``margin``, ``p`` (TOST p,
        NaN with fewer than 2 runs), ``equivalent``.

    Notes
    -----
    The registered loss-matching control (plan ``controls.loss_matching``): with
    :math:`d_i = y_i - L^*`, the TOST of ``paired_tost`` applied to the one sample
    :math:`d` (pingouin ``tost(x, y=target)``). The stopping rule stops runs at the
    first validation loss below target + tolerance, so the means tend to sit near
    the upper margin: the control is demanding by design.
    """
    func = "tost_against_target"
    require_frame(data, func)
    require_columns(data, [dv, by], func)
    require_probability(alpha, "alpha", func)
    if not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"{func}: margin must be a positive number, got {margin!r}")
    df, _ = complete_rows(data, [dv], func)
    rows = []
    for level, sub in df.groupby(by, sort=False):
        y = sub[dv].to_numpy(dtype=float)
        row = {by: level, "n_runs": len(y), "mean": float(y.mean()), "target": float(target)}
        row["sd"] = float(np.std(y, ddof=1)) if len(y) > 1 else np.nan
        if len(y) >= 2:
            res = _tost_row(y, float(target), margin, alpha)
            row |= {k: res[k] for k in ("estimate", "ci_low", "ci_high", "ci_level", "p")}
            row |= {"margin": float(margin), "equivalent": res["equivalent"]}
        else:
            row |= {"estimate": float(y.mean() - target), "ci_low": np.nan, "ci_high": np.nan}
            row |= {"ci_level": 1 - 2 * alpha, "margin": float(margin), "p": np.nan}
            row["equivalent"] = False
        rows.append(row)
    cols = [by, "n_runs", "mean", "sd", "target", "estimate", "ci_low", "ci_high", "ci_level"]
    return pd.DataFrame(rows).reindex(columns=[*cols, "margin", "p", "equivalent"])
