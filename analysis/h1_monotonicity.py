"""H1: at matched loss, ICL rises monotonically with integrated P-NE* (DESIGN §5).

Confirmatory (plan ``hypotheses.H1``): the slope of ``icl_auc`` on log(int_pne_star)
in a linear mixed-effects model with ``final_val_loss`` as covariate and a random
intercept per seed, tested one-sided. Exploratory companions: an isotonic fit with
bootstrap bands and its permutation test against a constant, Page's L trend test
across the conditions ordered by mean P-NE* (seeds as blocks), the
Jonckheere-Terpstra test, and Spearman's rho with a bootstrap CI.

Every function takes the runs table (one row per run, or any long-format
DataFrame with the named columns) and returns a tidy DataFrame.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from analysis.inputs import (
    complete_rows,
    log_positive,
    require_alternative,
    require_columns,
    require_frame,
    require_probability,
)
from analysis.isotonic import isotonic_fit, isotonic_permutation_test  # noqa: F401
from analysis.trend import condition_order, jonckheere_terpstra, page_trend  # noqa: F401
from preregistration.tables import columns

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
    n, g, k = len(df), row["n_groups"], 1 + len(cols)
    dof = n - k - max(g - 1, 0)
    if n == 0 or np.ptp(x) == 0 or dof < 1:
        row["method"] = "not estimable: too few runs or a single exposure level"
        return pd.DataFrame([row])
    y = df[dv].to_numpy(dtype=float)
    X = np.column_stack([np.ones(n), *cols])
    groups = df[group].to_numpy()

    result, problem = (None, f"only {g} seed(s)") if g < 3 else _fit_mixed(y, X, groups)
    if result is not None:
        slope, se = float(result.fe_params[1]), float(result.bse_fe[1])
        row["var_group"] = float(np.asarray(result.cov_re)[0, 0])
        row["var_resid"] = float(result.scale)
        method = f"MixedLM (REML), random intercept per {group}; t on between-within df"
    else:
        dummies = pd.get_dummies(groups, drop_first=True, dtype=float).to_numpy()
        ols = sm.OLS(y, np.column_stack([X, dummies]) if g > 1 else X).fit()
        slope, se = float(ols.params[1]), float(ols.bse[1])
        row["var_group"] = 0.0 if problem and problem.startswith("singular") else np.nan
        row["var_resid"] = float(ols.scale)
        block = f"{group} as fixed block" if g > 1 else "no block (one seed)"
        method = f"OLS with {block} (fallback: mixed model {problem})"
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


def spearman_bootstrap(
    data: pd.DataFrame,
    dv: str = "icl_auc",
    exposure: str = "int_pne_star",
    alternative: str = "greater",
    n_boot: int = 2000,
    ci: float = 0.95,
    random_state: int = 0,
) -> pd.DataFrame:
    """Spearman's rho between ``exposure`` and ``dv`` with a percentile bootstrap CI.

    Returns
    -------
    pandas.DataFrame
        One row: ``rho``, ``ci_low``, ``ci_high``, ``ci_level``, ``p`` (scipy's
        ``spearmanr`` with ``alternative``), ``n_boot``, ``n_runs``.

    Notes
    -----
    Rho and its CI are those of ``spearman_with_ci``.
    """
    func = "spearman_bootstrap"
    require_frame(data, func)
    require_alternative(alternative, func)
    require_probability(ci, "ci", func)
    df, _ = complete_rows(data, [dv, exposure], func)
    x, y = df[exposure].to_numpy(dtype=float), df[dv].to_numpy(dtype=float)
    n = len(x)
    if n < 3:
        raise ValueError(f"{func}: needs at least 3 runs, got {n}")
    p = float(stats.spearmanr(x, y, alternative=alternative).pvalue)
    rho, low, high = spearman_with_ci({exposure: x}, y, n_boot, ci, random_state)[exposure]
    row = {"rho": rho, "ci_low": low, "ci_high": high, "ci_level": ci, "p": p}
    return pd.DataFrame([row | {"n_boot": n_boot, "n_runs": n}])


# Columns of h1.csv, the H1 results table (report.build_tables; contract "h1").
H1_COLUMNS = columns("h1")

# Exploratory variants of the slope the plan lists (plan ``exploratory``).
EXPLORATORY_SLOPES = (
    ("icl_auc", "int_pne_star_eff", "effective (post-clip) exposure"),
    ("icl_auc", "int_pne_eta2", "eta-squared variant of P-NE"),
    ("induction_score", "int_pne_star", "induction (copy) score"),
)


def h1_summary(
    data: pd.DataFrame,
    hypothesis: dict,
    condition: str = "condition",
    n_boot: int = 2000,
    n_perm: int = 999,
    random_state: int = 0,
) -> pd.DataFrame:
    """Every H1 analysis on the included runs of H1's arms, one row each (``h1.csv``).

    Parameters
    ----------
    data : pandas.DataFrame
        Included runs of the arms H1 registers.
    hypothesis : dict
        ``plan["hypotheses"]["H1"]``: outcome, predictor ``log(<column>)``,
        covariates, random_effect, sidedness, alpha.

    Returns
    -------
    pandas.DataFrame
        Columns ``H1_COLUMNS``. The registered mixed-model slope is labelled
        ``confirmatory``; the isotonic permutation test, Page's L trend test,
        Spearman's rho and the slope variants of the plan's exploratory list are
        labelled ``exploratory``.
    """
    func = "h1_summary"
    require_frame(data, func)
    predictor = str(hypothesis["predictor"])
    if not (predictor.startswith("log(") and predictor.endswith(")")):
        raise ValueError(f"{func}: predictor {predictor!r} is not of the form log(<column>)")
    exposure, dv = predictor[4:-1], hypothesis["outcome"]
    alpha, alternative = float(hypothesis["alpha"]), hypothesis["sidedness"]
    covariates, group = list(hypothesis.get("covariates", [])), hypothesis["random_effect"]
    increasing = alternative != "less"
    base = {"hypothesis": "H1", "outcome": dv, "predictor": predictor, "alternative": alternative}
    rows = []

    def slope_row(analysis: str, label: str, out: str, expo: str) -> dict:
        res = mixed_slope(data, out, expo, covariates, group, alternative, alpha).iloc[0]
        return base | {
            "analysis": analysis,
            "label": label,
            "outcome": out,
            "predictor": f"log({expo})",
            "estimate": res.slope,
            "ci_low": res.ci_low,
            "ci_high": res.ci_high,
            "ci_level": res.ci_level,
            "statistic": res.t,
            "df": res.df,
            "p": res.p,
            "n_runs": res.n_runs,
            "n_groups": res.n_groups,
            "method": res.method,
        }

    rows.append(slope_row(hypothesis["test"], "confirmatory", dv, exposure))
    n_groups = int(data[group].nunique())
    perm = isotonic_permutation_test(
        data, dv, exposure, group, increasing, n_perm, random_state
    ).iloc[0]
    rows.append(
        base
        | {
            "analysis": "isotonic_permutation",
            "label": "exploratory",
            "estimate": perm.statistic,
            "statistic": perm.statistic,
            "p": perm.p,
            "n_runs": perm.n_runs,
            "n_groups": n_groups,
            "method": f"R^2 of isotonic fit vs constant; {perm.method}, {n_perm} permutations",
        }
    )
    page = page_trend(data, dv, condition, exposure, group).iloc[0]
    rows.append(
        base
        | {
            "analysis": "page_trend",
            "label": "exploratory",
            "estimate": page.statistic,
            "statistic": page.statistic,
            "p": page.p if increasing else np.nan,
            "n_runs": int(page.n_blocks * page.n_conditions),
            "n_groups": int(page.n_blocks),
            "method": f"Page's L ({page.method}), conditions ordered by mean {exposure}: "
            f"{page.order}; left out for incomplete blocks: {page.n_blocks_dropped} "
            f"seed(s), {page.n_conditions_dropped} condition(s)",
        }
    )
    rho = spearman_bootstrap(data, dv, exposure, alternative, n_boot, 1 - alpha, random_state)
    rho = rho.iloc[0]
    rows.append(
        base
        | {
            "analysis": "spearman_rho",
            "label": "exploratory",
            "estimate": rho.rho,
            "ci_low": rho.ci_low,
            "ci_high": rho.ci_high,
            "ci_level": rho.ci_level,
            "statistic": rho.rho,
            "p": rho.p,
            "n_runs": rho.n_runs,
            "n_groups": n_groups,
            "method": f"Spearman rho, percentile bootstrap over runs ({n_boot} resamples)",
        }
    )
    for out, expo, what in EXPLORATORY_SLOPES:
        if out in data and expo in data and data[out].notna().any():
            rows.append(slope_row(f"slope: {what}", "exploratory", out, expo))
    return pd.DataFrame(rows).reindex(columns=H1_COLUMNS)
