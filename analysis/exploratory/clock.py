"""What P-NE* is made of: the step-size clock and the noise fraction (issue 22, item 4).

Exploratory, added after data were seen (deviation D6). Per optimizer step t,

    P-NE*_t = (eta_t / B_t) * f_t,    f_t = Tr(P C P) / max(floor, Tr(P F P)),

the product of the step-size clock's increment eta_t / B_t, set by the design (learning
rate schedule, batch size) and the number of steps to the stop, and the noise fraction
f_t, which the run measures (with the registered empirical Fisher, F = C + G G^T per
example, f_t is at most about 1 unless noise is injected). Integrated with the held
estimates, int_pne_star = sum_t (eta_t / B_t) f_held(t), and the trace's ``int_clock`` =
sum_t eta_t / B_t over every step, so int_pne_star / int_clock is the clock-weighted mean
noise fraction of the run. Where every run's noise fraction is about the same, the
registered metric is the clock, and H1's slope on it is a slope on the learning rate,
the batch size and the steps taken.

- ``clock_runs``: per run, int_pne_star, int_clock, their ratio (the mean noise
  fraction), each logged curvature proxy's version (int_pne_star_<proxy> / int_clock),
  and the median over its logged steps of f_t = pne_star_t / (eta_t / B_t);
- ``clock_summary``: per arm, Pearson's r of log int_pne_star (and of each logged
  proxy's) with log int_clock across its included runs (Fisher-z CI, n), how far each
  varies, and the range of the mean noise fraction;
  H1's model (``analysis.stats.mixed_model.mixed_slope``: icl_auc on log int_pne_star,
  final validation loss as covariate, seed random intercept), two-sided, on H1's arms
  with log int_pne_star and with log int_clock as the predictor; and over the pooled
  arms (``POOLED_ARMS``) H1's model without, and with, log int_clock as a covariate,
  and on log int_clock alone;
- ``clock_notes``: the sentences the report shows beside H1, made from the summary's
  numbers: how far the registered metric can be told from the design in each arm.

``POOLED_ARMS``: the batch sweep (which varies the clock through B and the LR rule) and
the arms whose runs add a declared noise covariance to the P-NE estimate at one
condition of the batch sweep, the largest batch with the fixed learning rate, so that
their P-NE* moves while eta_t / B per step is that condition's: noise_injection and nap
(gradient noise scaled to follow the exposure of a smallest-batch reference run, whose
eta / B is larger), phase_schedule (a gradient-noise budget in a window) and sgld (parameter noise,
whose gradient-noise equivalent the logger adds). Their reference runs (batch-sweep
conditions at further seeds) come with them, as the runs table lists them under the arm.
Left out: precond_freeze, which adds no noise (it changes P only), and regression_sweep,
another task whose ICL outcome is not icl_auc. With the clock as a covariate, the pooled
slope on log int_pne_star is estimated from the variation of P-NE* at a given clock,
which only the noise arms supply.

Excluded runs (``runs.excluded``) are listed in ``clock_runs`` and left out of every
summary row, as H1 leaves them out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.inputs import require_columns, require_frame, require_probability
from analysis.stats.mixed_model import mixed_slope

POOLED_ARMS = ("batch_sweep", "noise_injection", "phase_schedule", "nap", "sgld")
# The curvature proxies whose integrated P-NE* the trace may carry (NaN when not logged).
PROXIES = ("fisher", "ggn", "true_fisher")
CLOCK = "int_clock"
EXPOSURE = "int_pne_star"
LOG_CLOCK = "log_int_clock"  # the covariate column added for mixed_slope
RUN_COLUMNS = (
    "run_id", "arm", "condition", "seed", "excluded", "n_steps", "n_logged", EXPOSURE, CLOCK,
    "noise_fraction", *(f"noise_fraction_{p}" for p in PROXIES), "median_step_fraction",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "analysis", "scope", "measure", "estimate", "ci_low", "ci_high", "p", "n_runs", "n_groups",
    "method",
)  # fmt: skip
# r^2 of log int_pne_star on log int_clock at or above which the two cannot be told apart,
# and below which the clock accounts for less than half of the metric's variation.
INDISTINGUISHABLE_R2, MINORITY_R2 = 0.99, 0.5


def clock_runs(steps: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of the steps table: the decomposition of its integrated P-NE*.

    Parameters
    ----------
    steps : the steps table (``preregistration.tables.STEPS``), one row per logged step.
    runs : the runs table, for arm, condition, seed and exclusion.

    Returns
    -------
    pandas.DataFrame
        ``RUN_COLUMNS`` (contract ``clock_runs``): the integrals at the run's last
        logged step (``n_steps``, the optimizer steps up to it; ``n_logged`` rows);
        ``noise_fraction`` = int_pne_star / int_clock, ``noise_fraction_<proxy>`` the
        same with that proxy's integrated P-NE* (NaN where the run did not log it);
        ``median_step_fraction`` the median over logged steps with eta_t > 0 of
        pne_star_t / (eta_t / B_t), f_t at the steps the estimate was taken.

    Examples
    --------
    >>> steps = pd.DataFrame({"run_id": "a", "step": [1, 2], "lr": [0.1, 0.2],
    ...     "global_batch": 4, "pne_star": [0.02, 0.04], "int_pne_star": [0.02, 0.06],
    ...     "int_clock": [0.025, 0.075], "int_pne_star_fisher": [0.02, 0.06],
    ...     "int_pne_star_ggn": np.nan, "int_pne_star_true_fisher": np.nan})
    >>> runs = pd.DataFrame({"run_id": ["a"], "arm": "batch_sweep", "condition": "bs4_fixed",
    ...     "seed": [0], "excluded": [False]})
    >>> round(float(clock_runs(steps, runs).at[0, "noise_fraction"]), 6)
    0.8
    """
    func = "clock_runs"
    require_frame(steps, func)
    require_frame(runs, func)
    integrals = [EXPOSURE, CLOCK, *(f"int_pne_star_{p}" for p in PROXIES)]
    require_columns(steps, ["run_id", "step", "lr", "global_batch", "pne_star", *integrals], func)
    require_columns(runs, ["run_id", "arm", "condition", "seed", "excluded"], func)
    unknown = sorted(set(steps["run_id"]) - set(runs["run_id"]))
    if unknown:
        raise ValueError(f"{func}: steps has runs missing from the runs table: {unknown[:5]}")
    ordered = steps.sort_values(["run_id", "step"], kind="mergesort")
    last = ordered.groupby("run_id").tail(1).set_index("run_id")
    out = last[integrals].astype(float)
    out["n_steps"] = last["step"].astype(int)
    out["n_logged"] = ordered.groupby("run_id").size()
    clock = out[CLOCK].where(out[CLOCK] > 0)
    out["noise_fraction"] = out[EXPOSURE] / clock
    for proxy in PROXIES:
        out[f"noise_fraction_{proxy}"] = out[f"int_pne_star_{proxy}"] / clock
    rate = ordered["lr"].astype(float) / ordered["global_batch"].astype(float)
    step_fraction = (ordered["pne_star"].astype(float) / rate).where(rate > 0)
    out["median_step_fraction"] = step_fraction.groupby(ordered["run_id"]).median()
    meta = runs.set_index("run_id")[["arm", "condition", "seed", "excluded"]]
    table = meta.join(out, how="inner").reset_index()
    table["excluded"] = table["excluded"].astype(bool)
    table = table.sort_values(["arm", "condition", "seed"], kind="mergesort")
    return table[list(RUN_COLUMNS)].reset_index(drop=True)


def log_correlation(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> tuple:
    """Pearson's r of log x with log y, its Fisher-z CI at 1 - alpha, p and n.

    NaN (with the reason) with fewer than 3 pairs or no spread; the CI is (r, r) when
    |r| = 1 and NaN with 3 pairs (z has n - 3 degrees of freedom).
    """
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly, n = np.log(x[ok]), np.log(y[ok]), int(ok.sum())
    if n < 3 or np.ptp(lx) == 0 or np.ptp(ly) == 0:
        why = f"not estimable: {n} run(s)" if n < 3 else "not estimable: no spread"
        return np.nan, np.nan, np.nan, np.nan, n, why
    r, p = stats.pearsonr(lx, ly)
    r = float(np.clip(r, -1.0, 1.0))
    if abs(r) == 1.0:
        low = high = r
    elif n > 3:
        half = stats.norm.ppf(1 - alpha / 2) / np.sqrt(n - 3)
        low, high = np.tanh(np.arctanh(r) - half), np.tanh(np.arctanh(r) + half)
    else:
        low = high = np.nan
    return r, float(low), float(high), float(p), n, "Pearson on logs; Fisher-z CI"


def _row(analysis, scope, measure, estimate=np.nan, low=np.nan, high=np.nan, p=np.nan,
         n_runs=0, n_groups=0, method=""):  # fmt: skip
    values = (analysis, scope, measure, estimate, low, high, p, n_runs, n_groups, method)
    return dict(zip(SUMMARY_COLUMNS, values, strict=True))


def _arm_rows(arm: str, data: pd.DataFrame, alpha: float) -> list[dict]:
    """Correlation of the logs, spreads and the mean noise fractions of one arm's runs."""
    x, y = data[EXPOSURE].to_numpy(dtype=float), data[CLOCK].to_numpy(dtype=float)
    r, low, high, p, n, how = log_correlation(x, y, alpha)
    g = int(data["seed"].nunique())
    rows = [_row("correlation", arm, "pearson(log int_pne_star, log int_clock)", r, low, high,
                 p, n, g, how)]  # fmt: skip
    for proxy in PROXIES[1:]:  # the other denominators, where the arm's runs logged them
        v = (data[f"noise_fraction_{proxy}"] * data[CLOCK]).to_numpy(dtype=float)
        if np.isfinite(v).any():
            r, low, high, p, n, how = log_correlation(v, y, alpha)
            rows.append(_row("correlation", arm, f"pearson(log int_pne_star_{proxy}, log "
                             "int_clock)", r, low, high, p, n, g, how))  # fmt: skip
    for column, what in ((EXPOSURE, "int_pne_star"), (CLOCK, "int_clock")):
        v = data[column].to_numpy(dtype=float)
        v = v[np.isfinite(v) & (v > 0)]
        spread = float(v.max() / v.min()) if len(v) else np.nan
        how = "ratio of the largest to the smallest run's"
        rows.append(_row("spread", arm, f"max / min of {what}", spread, n_runs=len(v),
                         n_groups=g, method=how))  # fmt: skip
    for column in ("noise_fraction", *(f"noise_fraction_{q}" for q in PROXIES)):
        v = data[column].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        name = column.replace("noise_fraction", "int_pne_star") + " / int_clock"
        if len(v) == 0:
            rows.append(_row("noise_fraction", arm, name, method="not logged by this arm's runs"))
            continue
        rows.append(_row("noise_fraction", arm, name, float(np.median(v)), float(v.min()),
                         float(v.max()), n_runs=len(v), n_groups=g,
                         method="median over runs; ci_low/ci_high: min/max"))  # fmt: skip
    return rows


def _slope_row(scope: str, data: pd.DataFrame, dv, exposure, covariates, alpha) -> dict:
    fit = mixed_slope(data, dv, exposure, list(covariates), "seed", "two-sided", alpha).iloc[0]
    measure = f"slope of {dv} on log({exposure}) given {', '.join(covariates) or 'nothing'}"
    return _row("slope", scope, measure, fit.slope, fit.ci_low, fit.ci_high, fit.p,
                int(fit.n_runs), int(fit.n_groups), fit.method)  # fmt: skip


def clock_summary(
    per_run: pd.DataFrame,
    runs: pd.DataFrame,
    dv: str = "icl_auc",
    covariates: tuple[str, ...] = ("final_val_loss",),
    h1_arms: tuple[str, ...] = ("batch_sweep",),
    pooled_arms: tuple[str, ...] = POOLED_ARMS,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per arm how far log int_pne_star follows log int_clock, and H1's slope with the clock.

    Parameters
    ----------
    per_run : ``clock_runs``'s table.
    runs : the runs table, for ``dv`` and ``covariates`` (one row per run).
    dv, covariates : H1's outcome and covariates (plan ``hypotheses.H1``).
    h1_arms : H1's arms: H1's model there with log int_pne_star, then log int_clock, as
        the predictor.
    pooled_arms : the arms pooled for the slope with log int_clock as a covariate.
    alpha : the CIs are two-sided at 1 - alpha.

    Returns
    -------
    pandas.DataFrame
        ``SUMMARY_COLUMNS`` (contract ``clock_summary``), one row per measure:
        ``analysis`` correlation | spread | noise_fraction (per arm, ``scope`` the arm)
        and slope (``scope`` an H1 arm, or ``pooled: <arms>``); ``estimate`` r, a
        max / min ratio, the median ratio (ci_low/ci_high its min/max over runs) or a
        slope with its CI and two-sided p; ``method`` how it was estimated or why not.

    Notes
    -----
    Exploratory: no row is a registered test and none enters the Holm family. The
    slope rows are ``mixed_slope`` fits (H1's model, two-sided); with log int_pne_star
    and log int_clock both in the model their slopes are partial: where the two are
    collinear across the pooled runs the standard errors say so.
    """
    func = "clock_summary"
    require_frame(per_run, func)
    require_frame(runs, func)
    require_probability(alpha, "alpha", func)
    require_columns(per_run, list(RUN_COLUMNS), func)
    require_columns(runs, ["run_id", dv, *covariates], func)
    cols = ["run_id", dv, *[c for c in covariates if c not in per_run]]
    data = per_run.merge(runs[cols], on="run_id", how="left")
    data = data[~data["excluded"].astype(bool)]
    clock = data[CLOCK].astype(float)
    data = data.assign(**{LOG_CLOCK: np.log(clock.where(clock > 0))})
    rows = []
    for arm, group in data.groupby("arm", sort=True):
        rows += _arm_rows(str(arm), group, alpha)
    for arm in h1_arms:
        group = data[data["arm"] == arm]
        for exposure in (EXPOSURE, CLOCK):
            rows.append(_slope_row(arm, group, dv, exposure, covariates, alpha))
    pooled = data[data["arm"].isin(pooled_arms)]
    scope = "pooled: " + ", ".join(a for a in pooled_arms if a in set(pooled["arm"]))
    for exposure, extra in ((EXPOSURE, ()), (EXPOSURE, (LOG_CLOCK,)), (CLOCK, ())):
        rows.append(_slope_row(scope, pooled, dv, exposure, (*covariates, *extra), alpha))
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _measure(summary: pd.DataFrame, analysis: str, scope: str, measure: str) -> pd.Series | None:
    rows = summary[
        (summary["analysis"] == analysis)
        & (summary["scope"] == scope)
        & (summary["measure"] == measure)
    ]
    return None if rows.empty else rows.iloc[0]


def _ci(row: pd.Series) -> str:
    return f"{row.estimate:.3g} [{row.ci_low:.3g}, {row.ci_high:.3g}]"


def arm_sentence(summary: pd.DataFrame, arm: str) -> str:
    """How far log int_pne_star can be told from log int_clock over one arm, in words."""
    corr = _measure(summary, "correlation", arm, "pearson(log int_pne_star, log int_clock)")
    fraction = _measure(summary, "noise_fraction", arm, "int_pne_star / int_clock")
    spread = {
        what: _measure(summary, "spread", arm, f"max / min of {what}")
        for what in ("int_pne_star", "int_clock")
    }
    n = int(corr.n_runs) if corr is not None else 0
    if corr is None or not np.isfinite(corr.estimate):
        why = corr.method if corr is not None else "no run"
        return f"In {arm} ({n} included run(s)) the correlation is {why}."
    r, r2 = float(corr.estimate), float(corr.estimate) ** 2
    text = (
        f"In {arm}, log int P-NE* and log clock correlate at r = {r:.4f} over {n} runs "
        f"(r^2 = {r2:.4f}); across them int P-NE* spans a factor "
        f"{spread['int_pne_star'].estimate:.3g} and the clock a factor "
        f"{spread['int_clock'].estimate:.3g}, and int P-NE* / clock (the mean noise fraction) "
        f"lies in {fraction.ci_low:.3g}-{fraction.ci_high:.3g}"
    )
    proxies = [
        (proxy, row.estimate)
        for proxy in PROXIES[1:]
        if (row := _measure(summary, "correlation", arm, f"pearson(log int_pne_star_{proxy}, "
                            "log int_clock)")) is not None and np.isfinite(row.estimate)
    ]  # fmt: skip
    if proxies:
        text += " (with the " + ", the ".join(f"{q} denominator r = {v:.4f}" for q, v in proxies)
        text += ")"
    if r2 >= INDISTINGUISHABLE_R2:
        return text + (
            ": over this arm a slope on the registered metric cannot tell the measured noise "
            "from the learning-rate schedule, the batch size and the steps to the stop."
        )
    share = f": the clock accounts for {r2:.0%} of the variance of log int P-NE* across these runs"
    if r2 >= MINORITY_R2:
        return text + share + ", differences in the mean noise fraction for the rest."
    return text + share + "; over this arm the registered metric and the clock vary apart."


def clock_notes(summary: pd.DataFrame, dv: str = "icl_auc") -> list[str]:
    """The report's sentences beside H1: one per arm, then the slopes, all from ``summary``."""
    notes = [
        "P-NE*_t = (eta_t / B_t) f_t: the step-size clock's increment times the noise "
        "fraction f_t = Tr(PCP) / Tr(PFP). int_clock sums eta_t / B_t over every step; "
        "int P-NE* / int_clock is the clock-weighted mean noise fraction. Exploratory "
        "(deviation D6); excluded runs left out of every summary row."
    ]
    arms = summary.loc[summary["analysis"] == "correlation", "scope"].drop_duplicates()
    notes += [arm_sentence(summary, arm) for arm in arms]
    slopes = summary[summary["analysis"] == "slope"]
    for scope, group in slopes.groupby("scope", sort=False):
        fits = {row.measure: row for row in group.itertuples()}
        parts = []
        for measure, row in fits.items():
            predictor, given = measure.split(" on ", 1)[1].split(" given ", 1)
            value = _ci(row) if np.isfinite(row.estimate) else f"not estimable ({row.method})"
            parts.append(f"on {predictor} given {given}: {value} (n = {row.n_runs})")
        notes.append(
            f"{scope}: H1's model of {dv} (two-sided, 95 % CI), slope " + "; ".join(parts) + "."
        )
    adjusted = slopes[slopes["measure"].str.endswith(LOG_CLOCK)]
    for row in adjusted.itertuples():
        if not np.isfinite(row.ci_low):
            continue
        if row.ci_low > 0 or row.ci_high < 0:
            verdict = "excludes 0: at a given clock the slope on P-NE* is distinguishable from 0"
        else:
            verdict = "contains 0: at a given clock the data do not distinguish it from 0"
        notes.append(
            f"{row.scope}: holding log clock fixed, the CI of the slope on log int P-NE* "
            f"({_ci(row)}, width {row.ci_high - row.ci_low:.3g}) {verdict}."
        )
    return notes
