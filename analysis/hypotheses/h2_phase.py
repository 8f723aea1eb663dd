"""H2: at equal total P-NE*, late-phase noise raises ICL more than early-phase noise.

Confirmatory (plan ``hypotheses.H2``, test ``two_way_anova_late_minus_early``): the
two-factor ANOVA {pne_budget, phase} with the seed as block, and its late - early
contrast with CI, tested one-sided (greater). The decision rests on the contrast;
the ANOVA table is reported beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm

from analysis.stats.inputs import (
    complete_rows,
    require_alternative,
    require_columns,
    require_frame,
    require_probability,
)


def _balanced(df: pd.DataFrame, factors: list[str], block: str) -> bool:
    cells = df.groupby([block, *factors]).size()
    n_cells = np.prod([df[f].nunique() for f in factors]) * df[block].nunique()
    return len(cells) == n_cells and bool((cells == 1).all())


def phase_anova(
    data: pd.DataFrame,
    dv: str = "icl_auc",
    budget: str = "pne_budget",
    phase: str = "phase",
    block: str = "seed",
) -> pd.DataFrame:
    """Two-factor ANOVA of ``dv`` on {budget, phase} with ``block`` (seed) as block.

    Returns
    -------
    pandas.DataFrame
        One row per effect: ``source``, ``SS``, ``df``, ``F``, ``p``, ``method``.

    Notes
    -----
    Balanced complete blocks (one run per seed x budget x phase): the
    repeated-measures ANOVA with both factors within seed (pingouin ``rm_anova``),
    each effect tested against its interaction with the block, uncorrected
    (sphericity corrections are not defined per effect in the two-way case). A
    factor with one level is dropped (one-way). Unbalanced or incomplete blocks
    (an excluded run): the additive-block model
    :math:`y = \\mu + \\alpha_b + \\beta_p + (\\alpha\\beta)_{bp} + s_{seed} + e` by OLS,
    type-II sums of squares (statsmodels ``anova_lm``), said so in ``method``.

    References
    ----------
    .. [1] Maxwell, S. E., Delaney, H. D. & Kelley, K. (2018). Designing
           experiments and analyzing data, 3rd ed., ch. 12. Routledge.
    """
    func = "phase_anova"
    require_frame(data, func)
    require_columns(data, [dv, budget, phase, block], func)
    df, _ = complete_rows(data, [dv], func)
    factors = [f for f in (budget, phase) if df[f].nunique() > 1]
    if not factors or df[block].nunique() < 2:
        raise ValueError(f"{func}: needs >= 2 seeds and a factor with >= 2 levels")
    if _balanced(df, factors, block):
        within = factors if len(factors) > 1 else factors[0]
        res = pg.rm_anova(data=df, dv=dv, within=within, subject=block, detailed=True)
        p_col = "p_unc" if "p_unc" in res else "p-unc"
        out = pd.DataFrame(
            {"source": res["Source"], "SS": res["SS"], "df": res["DF"] if "DF" in res
             else res["ddof1"], "F": res["F"], "p": res[p_col]}
        )  # fmt: skip
        out["method"] = f"repeated-measures ANOVA, {block} as block (pingouin rm_anova)"
        return out.reset_index(drop=True)
    terms = " * ".join(f"C(Q('{f}'))" for f in factors)
    model = smf.ols(f"Q('{dv}') ~ {terms} + C(Q('{block}'))", data=df).fit()
    table = anova_lm(model, typ=2)
    out = pd.DataFrame(
        {
            "source": [s.replace("C(Q('", "").replace("'))", "") for s in table.index],
            "SS": table["sum_sq"].to_numpy(),
            "df": table["df"].to_numpy(),
            "F": table["F"].to_numpy(),
            "p": table["PR(>F)"].to_numpy(),
        }
    )
    out["method"] = f"OLS with {block} as additive block, type-II SS (unbalanced design)"
    return out


def late_minus_early(
    data: pd.DataFrame,
    dv: str = "icl_auc",
    budget: str = "pne_budget",
    phase: str = "phase",
    block: str = "seed",
    alpha: float = 0.05,
    alternative: str = "greater",
    early: str = "early",
    late: str = "late",
) -> pd.DataFrame:
    """The late - early contrast of ``dv``, averaged over budgets, within seed.

    Returns
    -------
    pandas.DataFrame
        One row: ``estimate``, ``se``, ``df``, ``ci_low``, ``ci_high`` (two-sided
        1 - alpha), ``ci_level``, ``alternative``, ``p``, ``n_runs``, ``n_blocks``,
        ``F_phase``, ``p_phase`` (the ANOVA's phase effect), ``method``.

    Notes
    -----
    For seed s, :math:`d_s = \\bar y_{s,late} - \\bar y_{s,early}`, the means over
    the budgets the seed has in both phases. :math:`t = \\bar d / (s_d/\\sqrt n)` on
    n - 1 df, n seeds: the contrast tested against its own interaction with the
    block, the error term of the within-seed contrast in the blocked ANOVA
    (Maxwell et al. 2018, ch. 13). Seeds lacking either phase are left out.
    """
    func = "late_minus_early"
    require_frame(data, func)
    require_alternative(alternative, func)
    require_probability(alpha, "alpha", func)
    require_columns(data, [dv, budget, phase, block], func)
    df, _ = complete_rows(data, [dv], func)
    levels = set(df[phase].astype(str))
    if not {early, late} <= levels:
        raise ValueError(f"{func}: {phase} needs levels {early!r} and {late!r}; has {levels}")
    sub = df[df[phase].astype(str).isin([early, late])]
    wide = sub.groupby([block, sub[phase].astype(str)])[dv].mean().unstack()
    wide = wide.dropna(subset=[early, late])
    d = (wide[late] - wide[early]).to_numpy(dtype=float)
    n = len(d)
    if n < 2:
        raise ValueError(f"{func}: needs >= 2 seeds with both {early!r} and {late!r} runs")
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
    t = mean / se if se > 0 else np.nan
    half = stats.t.ppf(1 - alpha / 2, n - 1) * se
    p = {
        "greater": stats.t.sf(t, n - 1),
        "less": stats.t.cdf(t, n - 1),
        "two-sided": 2 * stats.t.sf(abs(t), n - 1),
    }[alternative]
    anova = phase_anova(df, dv, budget, phase, block)
    row = anova[anova["source"] == phase]
    return pd.DataFrame(
        [
            {
                "estimate": mean,
                "se": se,
                "df": n - 1,
                "ci_low": mean - half,
                "ci_high": mean + half,
                "ci_level": 1 - alpha,
                "alternative": alternative,
                "p": float(p),
                "n_runs": int(sub[block].isin(wide.index).sum()),
                "n_blocks": n,
                "F_phase": float(row["F"].iloc[0]) if len(row) else np.nan,
                "p_phase": float(row["p"].iloc[0]) if len(row) else np.nan,
                "method": f"within-{block} contrast, t on n-1 df; ANOVA: {anova['method'].iloc[0]}",
            }
        ]
    )
