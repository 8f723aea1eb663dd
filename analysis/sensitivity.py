"""Estimator sensitivity (DESIGN §2, §5): does a choice inside P-NE* change the study's ranking?

Exploratory table. For each choice the logger records both ways, it compares the
integrated exposure of every run under the two choices, and how each relates to
the ICL outcome across runs:

- ``curvature_proxy``: empirical Fisher vs Hutchinson Hessian trace in the
  denominator of P-NE* (only runs that logged both);
- ``step_size_power``: P-NE with eta (seed 003) vs the eta^2 variant of seeds
  000/001;
- ``clipping``: effective (after clipping) vs potential P-NE*, and each run's
  clip rate;
- ``curvature_reference``: P-NE* vs the unreferenced P-NE.

A run's integrated values are those of its last logged step (``steps`` table).
Excluded runs (``runs.excluded``) are left out and counted in ``note``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.inputs import require_columns, require_frame, require_probability

COLUMNS = ("analysis", "scope", "condition", "measure", "value", "ci_low", "ci_high", "n", "note")
# (analysis, exposure A, exposure B): B is the alternative to the registered choice A.
COMPARISONS = (
    ("curvature_proxy", "int_pne_star_fisher", "int_pne_star_hutchinson"),
    ("step_size_power", "int_pne", "int_pne_eta2"),
    ("clipping", "int_pne_star", "int_pne_star_eff"),
    ("curvature_reference", "int_pne_star", "int_pne"),
)
_INTEGRATED = sorted({c for _, a, b in COMPARISONS for c in (a, b)})


def final_exposure(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per run: integrated exposures at its last logged step, and its overall clip rate.

    The clip rate of a row covers the steps since the previous row, so the run's
    rate is the mean of the rows' rates weighted by those window lengths.
    """
    require_columns(steps, ["run_id", "step", "clip_rate", *_INTEGRATED], "final_exposure")
    ordered = steps.sort_values(["run_id", "step"], kind="mergesort")
    window = ordered.groupby("run_id")["step"].diff().fillna(ordered["step"])
    clipped = (ordered["clip_rate"] * window).groupby(ordered["run_id"]).sum()
    last = ordered.groupby("run_id").tail(1).set_index("run_id")
    out = last[["step", *_INTEGRATED]].rename(columns={"step": "n_steps"})
    out["clip_rate"] = clipped / out["n_steps"]
    out["n_logged"] = ordered.groupby("run_id").size()
    return out.reset_index()


def spearman_with_ci(
    xs: dict[str, np.ndarray],
    y: np.ndarray,
    n_boot: int = 2000,
    ci: float = 0.95,
    random_state: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Spearman's rho of ``y`` with each array of ``xs``, and each pair's difference, with CIs.

    Runs are resampled with replacement, the same resample for every x (paired),
    so the percentile CI of a difference rho_a - rho_b accounts for the
    correlation of the two exposures. Resamples where a rank is constant (rho
    undefined) are skipped. Returns {name: (rho, low, high)} and
    {"name_a - name_b": (difference, low, high)} for every ordered pair of xs.
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


def sensitivity_table(
    steps: pd.DataFrame,
    runs: pd.DataFrame,
    dv: str = "icl_auc",
    n_boot: int = 2000,
    ci: float = 0.95,
    random_state: int = 0,
) -> pd.DataFrame:
    """The estimator-sensitivity table: per-run ratios and across-run rank agreement.

    Parameters
    ----------
    steps : the steps table (``preregistration.tables.STEPS``), one row per logged step.
    runs : the runs table (``preregistration.tables.RUNS``), for condition, exclusion and ``dv``.
    dv : the outcome ranked against each exposure (default the primary ICL metric).
    n_boot, ci, random_state : the bootstrap of the rank correlations.

    Returns
    -------
    pandas.DataFrame
        Columns ``analysis`` (see module docstring), ``scope`` (a run_id, or
        ``all runs``), ``condition`` (the run's registered condition, '' for all
        runs), ``measure``, ``value``, ``ci_low``, ``ci_high`` (bootstrap CI, NaN
        for per-run ratios), ``n`` (logged steps of the run, or runs), ``note``
        (why a value is NaN, or what was left out). Per run: ``B / A`` for each
        comparison (A the registered choice) and ``clip_rate``. All runs:
        ``spearman(A, B)``, ``spearman(dv, A)``, ``spearman(dv, B)`` and
        ``spearman(dv, A) - spearman(dv, B)``.

    Notes
    -----
    Exploratory: none of these rows is a registered test. A proxy choice that
    matters shows as a ratio that differs between conditions (not merely from 1)
    and as a rank correlation of A with B below 1.
    """
    func = "sensitivity_table"
    require_frame(steps, func)
    require_frame(runs, func)
    require_probability(ci, "ci", func)
    require_columns(runs, ["run_id", "condition", "excluded", dv], func)
    final = final_exposure(steps)
    unknown = sorted(set(final["run_id"]) - set(runs["run_id"]))
    if unknown:
        raise ValueError(f"{func}: steps has runs missing from the runs table: {unknown[:5]}")
    merged = final.merge(runs[["run_id", "condition", "excluded", dv]], on="run_id")
    excluded = merged["excluded"].astype(bool)
    note = f"{int(excluded.sum())} excluded run(s) left out" if excluded.any() else ""
    data = merged[~excluded]
    rows = [r for c in COMPARISONS for r in _per_run_rows(data, *c)]
    rows += [_clip_rate_row(r) for r in data.itertuples()]
    rows += _nonpositive_hutchinson_rows(steps, data)
    for analysis, a, b in COMPARISONS:
        rows += _across_run_rows(data, analysis, a, b, dv, note, n_boot, ci, random_state)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _row(analysis, scope, condition, measure, value, low=np.nan, high=np.nan, n=0, note=""):
    values = (analysis, scope, condition, measure, value, low, high, n, note)
    return dict(zip(COLUMNS, values, strict=True))


def _per_run_rows(data: pd.DataFrame, analysis: str, a: str, b: str) -> list[dict]:
    rows = []
    for run in data.itertuples():
        value_a, value_b = getattr(run, a), getattr(run, b)
        ok = np.isfinite(value_a) and np.isfinite(value_b) and value_a > 0
        why = "" if ok else f"{b if not np.isfinite(value_b) else a} not logged or not > 0"
        ratio = value_b / value_a if ok else np.nan
        rows.append(
            _row(analysis, run.run_id, run.condition, f"{b} / {a}", ratio, n=run.n_logged, note=why)
        )
    return rows


def _nonpositive_hutchinson_rows(steps: pd.DataFrame, data: pd.DataFrame) -> list[dict]:
    """Share of a run's logging steps whose Hutchinson Tr(P H P) is <= 0.

    The Hessian is indefinite away from a minimum and the one-probe estimate is
    noisy; at such steps P-NE* under this proxy is floored by ``eps`` and is not
    a curvature-referenced quantity.
    """
    if "trace_php_hutchinson" not in steps:
        return []
    logged = steps.dropna(subset=["trace_php_hutchinson"])
    share = (logged["trace_php_hutchinson"] <= 0).groupby(logged["run_id"]).agg(["mean", "size"])
    return [
        _row(
            "curvature_proxy",
            run.run_id,
            run.condition,
            "share of steps with Tr(PHP) <= 0",
            float(share.loc[run.run_id, "mean"]),
            n=int(share.loc[run.run_id, "size"]),
        )
        for run in data.itertuples()
        if run.run_id in share.index
    ]


def _clip_rate_row(run) -> dict:
    return _row("clipping", run.run_id, run.condition, "clip_rate", run.clip_rate, n=run.n_steps)


def _across_run_rows(data, analysis, a, b, dv, note, n_boot, ci, random_state) -> list[dict]:
    both = data[np.isfinite(data[[a, b, dv]].to_numpy(dtype=float)).all(axis=1)]
    measures = [f"spearman({a}, {b})", f"spearman({dv}, {a})", f"spearman({dv}, {b})",
                f"spearman({dv}, {a}) - spearman({dv}, {b})"]  # fmt: skip
    if len(both) < 3:
        why = f"needs >= 3 runs with {a}, {b} and {dv} finite (found {len(both)})"
        why = f"{why}; {note}" if note else why
        return [_row(analysis, "all runs", "", m, np.nan, n=len(both), note=why) for m in measures]
    x_a, x_b, y = (both[c].to_numpy(dtype=float) for c in (a, b, dv))
    agreement = spearman_with_ci({"a": x_a}, x_b, n_boot, ci, random_state)["a"]
    with_dv = spearman_with_ci({"a": x_a, "b": x_b}, y, n_boot, ci, random_state)
    values = [agreement, with_dv["a"], with_dv["b"], with_dv["a - b"]]
    return [
        _row(analysis, "all runs", "", m, *v, n=len(both), note=note)
        for m, v in zip(measures, values, strict=True)
    ]
