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

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.inputs import (
    complete_rows,
    require_alternative,
    require_frame,
    require_probability,
)
from analysis.stats.isotonic import isotonic_fit, isotonic_permutation_test  # noqa: F401
from analysis.stats.mixed_model import mixed_slope
from analysis.stats.rank_correlation import spearman_with_ci
from analysis.stats.trend import condition_order, jonckheere_terpstra, page_trend  # noqa: F401
from preregistration.tables import columns


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


def slope_columns(analysis: str, label: str, outcome: str, exposure: str, fit) -> dict:
    """An H1 table row's columns from one ``mixed_slope`` result row ``fit``."""
    return {
        "analysis": analysis,
        "label": label,
        "outcome": outcome,
        "predictor": f"log({exposure})",
        "estimate": fit.slope,
        "ci_low": fit.ci_low,
        "ci_high": fit.ci_high,
        "ci_level": fit.ci_level,
        "statistic": fit.t,
        "df": fit.df,
        "p": fit.p,
        "n_runs": fit.n_runs,
        "n_groups": fit.n_groups,
        "method": fit.method,
    }


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
        fit = mixed_slope(data, out, expo, covariates, group, alternative, alpha).iloc[0]
        return base | slope_columns(analysis, label, out, expo, fit)

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
