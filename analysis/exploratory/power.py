"""Simulation-based power for H1, H2 and H3 from pilot variance components (DESIGN §5).

Before the confirmatory runs, a mixed model fitted on pilot runs gives the seed
(random-intercept) and residual variances; data sets of the registered design are
simulated from them with an assumed effect, the registered test is applied to each,
and the share of rejections is the power. ``seeds_needed`` scans the number of
seeds for the registered target power.

The simulations are vectorised: for H1 the slope test is computed by the
within-seed regression, which is what the registered mixed model reduces to in a
balanced design (every seed runs every condition; see ``power_h1``), and for H3
the paired TOST is computed from the simulated differences directly, and for H2 the
late - early contrast from the simulated within-seed differences.
``tests/analysis/test_power.py`` checks both against the actual test functions. The simulated
studies, the rejection rule and the Monte-Carlo SE are ``analysis.stats.monte_carlo``'s,
shared with H2's ``analysis.exploratory.power_phase``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.exploratory.power_phase import power_h2
from analysis.stats.inputs import (
    log_positive,
    require_alternative,
    require_frame,
    require_probability,
)
from analysis.stats.mixed_model import mixed_slope
from analysis.stats.monte_carlo import rejection_rate, rejections, simulate_studies

__all__ = ["power_h1", "power_h2", "power_h3", "seeds_needed", "variance_components"]


def variance_components(
    pilot: pd.DataFrame,
    dv: str = "icl_auc",
    exposure: str = "int_pne_star",
    covariates: tuple[str, ...] | list[str] = ("final_val_loss",),
    group: str = "seed",
) -> pd.DataFrame:
    """Slope, seed variance and residual variance of ``dv`` from pilot runs.

    Returns
    -------
    pandas.DataFrame
        One row: ``slope``, ``var_group``, ``var_resid``, ``sd_group``,
        ``sd_resid``, ``n_runs``, ``n_groups``, ``method``.

    Notes
    -----
    From ``mixed_slope`` (REML). When it falls back to the fixed-block fit, a
    singular fit gives var_group = 0 and otherwise the seed variance is the
    ANOVA (method-of-moments) estimate max(0, (MS_seed - MS_resid) / n_per_seed)
    computed from the seed means of the residuals of the exposure regression.
    """
    func = "variance_components"
    require_frame(pilot, func)
    fit = mixed_slope(pilot, dv, exposure, covariates, group, "two-sided").iloc[0]
    var_group = fit.var_group
    method = fit.method
    if not np.isfinite(var_group) and np.isfinite(fit.slope):
        x = log_positive(pilot[exposure], exposure, func)
        resid = pilot[dv].to_numpy(dtype=float) - fit.slope * x
        means = pd.Series(resid).groupby(pilot[group].to_numpy()).agg(["mean", "size"])
        n_per = means["size"].mean()
        ms_seed = n_per * means["mean"].var(ddof=1) if len(means) > 1 else np.nan
        var_group = max(0.0, (ms_seed - fit.var_resid) / n_per) if np.isfinite(ms_seed) else 0.0
        method += "; seed variance by ANOVA moments"
    return pd.DataFrame(
        [
            {
                "slope": fit.slope,
                "var_group": var_group,
                "var_resid": fit.var_resid,
                "sd_group": float(np.sqrt(var_group)),
                "sd_resid": float(np.sqrt(fit.var_resid)),
                "n_runs": fit.n_runs,
                "n_groups": fit.n_groups,
                "method": method,
            }
        ]
    )


def simulate_slope_tests(
    log_exposure: np.ndarray,
    slope: float,
    sd_group: float,
    sd_resid: float,
    n_seeds: int,
    n_sim: int,
    alpha: float = 0.05,
    alternative: str = "greater",
    n_covariates: int = 1,
    random_state: int = 0,
) -> np.ndarray:
    """Rejections (bool, one per simulated data set) of the H1 slope test.

    Each data set: every condition (one entry of ``log_exposure``) x ``n_seeds``
    seeds, y = slope * x + u_seed + e, with ``n_covariates`` pure-noise covariates
    in the model (as the loss covariate is at matched loss). The slope is tested
    by the within-seed regression on n - 1 - n_covariates - g df.
    """
    rng = np.random.default_rng(random_state)
    log_exposure = np.asarray(log_exposure, dtype=float)
    x = np.tile(log_exposure, n_seeds)  # runs seed by seed, as simulate_studies lays them out
    n, g = len(x), n_seeds
    dof = n - g - 1 - n_covariates
    if dof < 1:
        raise ValueError(f"simulate_slope_tests: {n_seeds} seed(s) leave no residual df")

    def within(a: np.ndarray) -> np.ndarray:  # demean within seed, last axis = runs
        shape = a.shape[:-1] + (g, -1)
        blocks = a.reshape(shape)
        return (blocks - blocks.mean(-1, keepdims=True)).reshape(a.shape)

    y = simulate_studies(slope * log_exposure, g, sd_group, sd_resid, n_sim, rng).reshape(n_sim, n)
    cols = [np.broadcast_to(within(x), (n_sim, n))]
    cols += [within(rng.normal(size=(n_sim, n))) for _ in range(n_covariates)]
    Xw = np.stack(cols, axis=-1)  # (n_sim, n, 1 + n_covariates)
    yw = within(y)
    xtx = np.einsum("bnk,bnl->bkl", Xw, Xw)
    xty = np.einsum("bnk,bn->bk", Xw, yw)
    beta = np.linalg.solve(xtx, xty[..., None])[..., 0]
    resid = yw - np.einsum("bnk,bk->bn", Xw, beta)
    s2 = (resid**2).sum(-1) / dof
    se = np.sqrt(s2 * np.linalg.inv(xtx)[:, 0, 0])
    return rejections(beta[:, 0] / se, dof, alpha, alternative)


def power_h1(
    log_exposure: np.ndarray,
    slope: float,
    sd_group: float,
    sd_resid: float,
    n_seeds: int,
    alpha: float = 0.05,
    alternative: str = "greater",
    n_covariates: int = 1,
    n_sim: int = 4000,
    random_state: int = 0,
) -> pd.DataFrame:
    """Power of the registered H1 slope test for a design with ``n_seeds`` seeds.

    Returns
    -------
    pandas.DataFrame
        One row: ``n_seeds``, ``n_runs``, ``slope``, ``power``, ``mc_se``
        (binomial Monte-Carlo standard error), ``n_sim``.

    Notes
    -----
    In a balanced design (each seed runs every condition, so every seed has the
    same mean log exposure) the REML mixed-model slope of ``mixed_slope`` equals
    the within-seed least-squares slope and its t statistic and between-within df
    are those of the within-seed regression (the between-seed stratum carries no
    information on the slope). That regression, vectorised over ``n_sim`` data
    sets, is simulated here.
    """
    func = "power_h1"
    require_alternative(alternative, func)
    require_probability(alpha, "alpha", func)
    reject = simulate_slope_tests(
        log_exposure,
        slope,
        sd_group,
        sd_resid,
        n_seeds,
        n_sim,
        alpha,
        alternative,
        n_covariates,
        random_state,
    )
    row = {"n_seeds": n_seeds, "n_runs": n_seeds * len(log_exposure), "slope": slope}
    return pd.DataFrame([row | rejection_rate(reject)])


def simulate_tost(
    true_diff: float,
    sd_diff: float,
    margin: float,
    n_pairs: int,
    n_sim: int,
    alpha: float = 0.05,
    random_state: int = 0,
) -> np.ndarray:
    """Rejections (equivalence shown) of the paired TOST on simulated differences.

    A study: ``n_pairs`` seeds, one paired difference each (the seed intercept is
    common to both sides and cancels). Equivalence is shown when both one-sided
    tests reject: the difference is above -margin and below +margin.
    """
    if n_pairs < 2:
        raise ValueError("simulate_tost: needs at least 2 pairs")
    rng = np.random.default_rng(random_state)
    d = simulate_studies([true_diff], n_pairs, None, sd_diff, n_sim, rng)[..., 0]
    mean, se = d.mean(1), d.std(1, ddof=1) / np.sqrt(n_pairs)
    above = rejections((mean + margin) / se, n_pairs - 1, alpha, "greater")
    return above & rejections((mean - margin) / se, n_pairs - 1, alpha, "less")


def power_h3(
    sd_diff: float,
    margin: float,
    n_pairs: int,
    true_diff: float = 0.0,
    alpha: float = 0.05,
    n_sim: int = 4000,
    random_state: int = 0,
) -> pd.DataFrame:
    """Power of the registered paired TOST (H3) with ``n_pairs`` seeds.

    Returns
    -------
    pandas.DataFrame
        One row: ``n_seeds``, ``true_diff``, ``sd_diff``, ``margin``, ``power``,
        ``mc_se``, ``n_sim``.

    Notes
    -----
    The paired differences :math:`d_s \\sim N(\\Delta, \\sigma_d^2)`; with a seed
    random intercept common to both sides of a pair, :math:`\\sigma_d^2 = 2
    \\sigma^2` (residual variance only). Equivalence is shown when both one-sided
    t statistics exceed :math:`t_{1-\\alpha, n-1}` (Schuirmann 1987).
    """
    require_probability(alpha, "alpha", "power_h3")
    reject = simulate_tost(true_diff, sd_diff, margin, n_pairs, n_sim, alpha, random_state)
    row = {"n_seeds": n_pairs, "true_diff": true_diff, "sd_diff": sd_diff, "margin": margin}
    return pd.DataFrame([row | rejection_rate(reject)])


def seeds_needed(
    pilot: pd.DataFrame,
    plan: dict,
    hypothesis: str = "H1",
    effect: float | None = None,
    target_power: float = 0.8,
    max_seeds: int = 20,
    n_sim: int = 4000,
    random_state: int = 0,
    n_budgets: int = 2,
    until_sufficient: bool = False,
) -> pd.DataFrame:
    """Power by number of seeds for H1, H2 or H3, from pilot variance components.

    Parameters
    ----------
    pilot : pandas.DataFrame
        Pilot runs of H1's arms (runs table).
    plan : dict
        The plan: test, sidedness, alpha, margin of ``hypothesis``.
    effect : float, optional
        H1: the slope to detect (smallest effect of interest); default the pilot
        slope, flagged in ``effect_source`` (a pilot estimate is noisy). H3: the
        true difference under which equivalence should be shown (default 0). H2:
        the late - early contrast to detect; default the H3 margin (the smallest
        difference in ICL the plan deems meaningful), flagged ``H3 margin``.
    target_power : float
        The registered power.
    n_budgets : int
        H2: registered budget levels (each seed runs early and late at each).
    until_sufficient : bool
        Stop at the first sufficient number of seeds (rows end there).

    Returns
    -------
    pandas.DataFrame
        One row per number of seeds (2 or 3 up to ``max_seeds``): ``hypothesis``,
        ``n_seeds``, ``power``, ``mc_se``, ``effect``, ``effect_source``,
        ``sd_group``, ``sd_resid``, ``target_power``, ``sufficient`` (power >=
        target) and ``chosen`` (the smallest sufficient number of seeds).
    """
    func = "seeds_needed"
    require_frame(pilot, func)
    require_probability(target_power, "target_power", func)
    spec = plan["hypotheses"][hypothesis]
    ref = plan["hypotheses"]["H1"]
    exposure = str(ref["predictor"])[4:-1]
    vc = variance_components(
        pilot, ref["outcome"], exposure, ref.get("covariates", []), ref["random_effect"]
    ).iloc[0]
    alpha = float(spec["alpha"])
    rows = []
    if hypothesis == "H1":
        source = "assumed" if effect is not None else "pilot estimate"
        effect = float(vc.slope if effect is None else effect)
        levels = log_positive(pilot.groupby("condition")[exposure].mean(), exposure, func)
        for n in range(3, max_seeds + 1):
            res = power_h1(
                levels,
                effect,
                vc.sd_group,
                vc.sd_resid,
                n,
                alpha,
                spec["sidedness"],
                len(spec.get("covariates", [])),
                n_sim,
                random_state,
            ).iloc[0]
            rows.append({"n_seeds": n, "power": res.power, "mc_se": res.mc_se})
    elif spec["test"] == "paired_tost":
        source = "assumed" if effect is not None else "no difference"
        effect = float(effect or 0.0)
        sd_diff = float(np.sqrt(2) * vc.sd_resid)
        for n in range(2, max_seeds + 1):
            res = power_h3(sd_diff, float(spec["margin"]), n, effect, alpha, n_sim, random_state)
            rows.append({"n_seeds": n, "power": res.power.iloc[0], "mc_se": res.mc_se.iloc[0]})
            if until_sufficient and res.power.iloc[0] >= target_power:
                break
    elif spec["test"] == "two_way_anova_late_minus_early":
        source = "assumed" if effect is not None else "H3 margin"
        effect = float(plan["hypotheses"]["H3"]["margin"] if effect is None else effect)
        for n in range(2, max_seeds + 1):
            res = power_h2(
                effect, vc.sd_resid, n, n_budgets, alpha, spec["sidedness"], n_sim, random_state
            ).iloc[0]
            rows.append({"n_seeds": n, "power": res.power, "mc_se": res.mc_se})
            if until_sufficient and res.power >= target_power:
                break
    else:
        raise ValueError(f"{func}: power is implemented for H1, H2 and paired-TOST hypotheses")
    out = pd.DataFrame(rows)
    out.insert(0, "hypothesis", hypothesis)
    out["effect"], out["effect_source"] = effect, source
    out["sd_group"], out["sd_resid"] = vc.sd_group, vc.sd_resid
    out["target_power"] = target_power
    out["sufficient"] = out["power"] >= target_power
    first = out.index[out["sufficient"]]
    out["chosen"] = False
    if len(first):
        out.loc[first[0], "chosen"] = True
    return out
