"""The mixed-effects slope test shared by H1, H4, the power analysis and the evaluation slopes.

``mixed_slope`` fits outcome ~ predictor + covariates with a random intercept per
seed (statsmodels MixedLM, REML) and tests the slope with the sidedness asked for;
H1 (``analysis.hypotheses.h1_monotonicity``), H4 (``analysis.hypotheses.h4_tradeoff``), the power
simulations (``analysis.exploratory.power``) and the exploratory evaluation slopes
(``analysis.exploratory.evaluation``) all use it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from analysis.stats.inputs import (
    complete_rows,
    log_positive,
    require_alternative,
    require_columns,
    require_frame,
    require_probability,
)

# Optimisers tried in turn: on a few dozen runs statsmodels' default (L-BFGS) often
# meets a singular X'V^-1X on its way and raises; BFGS on the same objective does not.
_MIXED_OPTIMIZERS = (["bfgs"], ["lbfgs"], ["nm", "bfgs"])
# The random-intercept variance counts as zero (a singular fit) below this share of
# the residual variance.
_SINGULAR_SHARE = 1e-6


def _p_from_t(t: float, df: float, alternative: str) -> float:
    if alternative == "greater":
        return float(stats.t.sf(t, df))
    if alternative == "less":
        return float(stats.t.cdf(t, df))
    return float(2 * stats.t.sf(abs(t), df))


def _fit_mixed(y: np.ndarray, X: np.ndarray, groups: np.ndarray):
    """MixedLM by REML with a random intercept; (result, problem) with one of them None."""
    problem = "did not converge"
    for optimizer in _MIXED_OPTIMIZERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = sm.MixedLM(y, X, groups=groups).fit(reml=True, method=optimizer)
            except (np.linalg.LinAlgError, ValueError) as exc:
                problem = f"fit failed ({type(exc).__name__})"
                continue
        if not result.converged or not np.all(np.isfinite(result.bse[:2])):
            continue
        if float(np.asarray(result.cov_re)[0, 0]) <= _SINGULAR_SHARE * result.scale:
            return None, "singular (seed variance estimated at 0)"
        return result, None
    return None, problem


def mixed_slope(
    data: pd.DataFrame,
    dv: str = "icl_auc",
    exposure: str = "int_pne_star",
    covariates: tuple[str, ...] | list[str] = ("final_val_loss",),
    group: str = "seed",
    alternative: str = "greater",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Slope of ``dv`` on log(``exposure``) in a random-intercept mixed model.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per run; rows with a missing value in ``dv``, ``exposure`` or a
        covariate are left out and counted in ``n_missing``.
    dv : str
        Outcome column (``icl_auc`` for H1, ``memorization`` for H4).
    exposure : str
        Strictly positive exposure column; its natural log is the predictor.
    covariates : sequence of str
        Fixed-effect covariates (``final_val_loss``: "at matched loss").
    group : str
        Column of the random intercept (the seed).
    alternative : {'greater', 'less', 'two-sided'}
        Direction of the registered test of the slope.
    alpha : float
        The CI is two-sided at level 1 - alpha.

    Returns
    -------
    pandas.DataFrame
        One row: ``outcome``, ``predictor``, ``slope``, ``se``, ``t``, ``df``,
        ``ci_low``, ``ci_high``, ``ci_level``, ``alternative``, ``p``, ``n_runs``,
        ``n_groups``, ``n_missing``, ``var_group`` (random-intercept variance, 0
        for a singular fit, NaN when not estimated), ``var_resid`` and ``method``,
        which says which model was fitted and why.

    Notes
    -----
    Model (Laird & Ware 1982), run i of seed s:

    .. math:: y_{is} = \\beta_0 + \\beta_1 \\log E_{is} + \\gamma^T z_{is} + u_s
              + \\varepsilon_{is},\\quad u_s \\sim N(0, \\sigma_u^2),\\;
              \\varepsilon_{is} \\sim N(0, \\sigma^2)

    fitted by REML (statsmodels ``MixedLM``). The predictor is centred and the
    covariates standardised before fitting, which leaves :math:`\\beta_1` unchanged
    and keeps the fit well conditioned when the loss varies little (as it does at
    matched loss). The test statistic :math:`t = \\hat\\beta_1 / SE` is referred to
    a t distribution with the between-within degrees of freedom
    :math:`n - p - (g - 1)` (n runs, p fixed effects, g seeds; Schluchter & Elashoff
    1990), not to the normal, whose tails are too light for a few seeds.

    Fallback, said so in ``method``: with fewer than three seeds, or when the
    mixed model does not converge or is singular (seed variance estimated at 0),
    the same fixed effects are fitted by OLS with the seed as a fixed block. That
    is the classical blocked ANCOVA; its slope t-test has the same degrees of
    freedom and is exact under the model's normal errors.

    References
    ----------
    .. [1] Laird, N. M. & Ware, J. H. (1982). Random-effects models for
           longitudinal data. Biometrics 38, 963-974.
    .. [2] Schluchter, M. D. & Elashoff, J. D. (1990). Small-sample adjustments to
           tests with unbalanced repeated measures assuming several covariance
           structures. J. Stat. Comput. Simul. 37, 69-87.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> runs = pd.DataFrame({"seed": np.repeat([0, 1, 2], 8),
    ...                      "int_pne_star": np.tile(np.geomspace(1, 100, 8), 3)})
    >>> runs["final_val_loss"] = 2 + 0.01 * rng.normal(size=24)
    >>> runs["icl_auc"] = 0.3 + 0.02 * np.log(runs.int_pne_star) + 0.01 * rng.normal(size=24)
    >>> res = mixed_slope(runs)
    >>> bool(res.at[0, "p"] < 0.05)
    True
    """
    func = "mixed_slope"
    require_frame(data, func)
    require_alternative(alternative, func)
    require_probability(alpha, "alpha", func)
    covariates = list(covariates)
    require_columns(data, [dv, exposure, group, *covariates], func)
    df, n_missing = complete_rows(data, [dv, exposure, *covariates], func)
    row = {
        "outcome": dv,
        "predictor": f"log({exposure})",
        "slope": np.nan,
        "se": np.nan,
        "t": np.nan,
        "df": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "ci_level": 1 - alpha,
        "alternative": alternative,
        "p": np.nan,
        "n_runs": len(df),
        "n_groups": int(df[group].nunique()),
        "n_missing": n_missing,
        "var_group": np.nan,
        "var_resid": np.nan,
        "method": "",
    }
    x, cols, notes = _predictors(df, exposure, covariates, func)
    n, g, k = len(df), row["n_groups"], 1 + len(cols)
    dof = n - k - max(g - 1, 0)
    if n == 0 or np.ptp(x) == 0 or dof < 1:
        row["method"] = "not estimable: too few runs or a single exposure level"
        return pd.DataFrame([row])
    y = df[dv].to_numpy(dtype=float)
    X = np.column_stack([np.ones(n), *cols])
    groups = df[group].to_numpy()

    slope, se, row["var_group"], row["var_resid"], method = _fit_slope(y, X, groups, g, group)
    t = slope / se if se > 0 else np.nan
    half = stats.t.ppf(1 - alpha / 2, dof) * se
    row |= {
        "slope": slope,
        "se": se,
        "t": t,
        "df": float(dof),
        "ci_low": slope - half,
        "ci_high": slope + half,
        "p": _p_from_t(t, dof, alternative),
        "method": "; ".join([method, *notes]),
    }
    return pd.DataFrame([row])


def _predictors(
    df: pd.DataFrame, exposure: str, covariates: list[str], func: str
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """log(exposure), the centred predictor columns (log exposure, then each covariate
    standardized) and the notes on covariates left out for being constant."""
    ids = df["run_id"] if "run_id" in df else None
    x = log_positive(df[exposure], exposure, func, ids) if len(df) else np.array([])
    notes = []
    cols = [x - x.mean()] if len(df) else []
    for c in covariates:
        z = df[c].to_numpy(dtype=float)
        if len(z) and np.std(z) > 0:
            cols.append((z - z.mean()) / np.std(z))
        else:
            notes.append(f"covariate {c} constant, left out")
    return x, cols, notes


def _fit_slope(
    y: np.ndarray, X: np.ndarray, groups: np.ndarray, g: int, group: str
) -> tuple[float, float, float, float, str]:
    """Slope of column 1 of ``X`` and its SE, the group and residual variances, and the
    method: the mixed model with a random intercept per group (``g`` groups), or, with
    fewer than 3 groups or a failed fit, OLS with the groups as a fixed block."""
    result, problem = (None, f"only {g} seed(s)") if g < 3 else _fit_mixed(y, X, groups)
    if result is not None:
        method = f"MixedLM (REML), random intercept per {group}; t on between-within df"
        return (
            float(result.fe_params[1]), float(result.bse_fe[1]),
            float(np.asarray(result.cov_re)[0, 0]), float(result.scale), method,
        )  # fmt: skip
    dummies = pd.get_dummies(groups, drop_first=True, dtype=float).to_numpy()
    ols = sm.OLS(y, np.column_stack([X, dummies]) if g > 1 else X).fit()
    var_group = 0.0 if problem and problem.startswith("singular") else np.nan
    block = f"{group} as fixed block" if g > 1 else "no block (one seed)"
    method = f"OLS with {block} (fallback: mixed model {problem})"
    return float(ols.params[1]), float(ols.bse[1]), var_group, float(ols.scale), method
