"""Estimator sensitivity (DESIGN §2, §5): does a choice inside P-NE* change the study's ranking?

Exploratory table. For each choice the logger records both ways, it compares
the integrated exposure of every run under the registered choice A and the
alternative B: per run the ratio B / A; across runs how much the scale changes
(median ratio with a bootstrap CI, and its range) and whether the runs keep
their order (Spearman's rho of A with B, with a bootstrap CI), and how each
relates to the ICL outcome. The rank correlations and their CIs are H1's
(``analysis.stats.rank_correlation.spearman_with_ci``).

- ``curvature_proxy``: the empirical Fisher (registered) vs the generalized
  Gauss-Newton (probes through the logits) and vs the true Fisher (labels
  sampled from the model) in the denominator of P-NE*, all positive
  semi-definite. For softmax cross-entropy the GGN and the true Fisher are the
  same matrix, so their two rows differ only by sampling noise;
- ``hessian_trace``: the raw loss Hessian is indefinite away from a minimum and
  is never a denominator; per run, the share of logging steps with
  Tr(P H P) <= 0 and the median of Tr(P H P) / Tr(P G P) (G the GGN, or the
  empirical Fisher when the GGN was not logged);
- ``step_size_power``: P-NE with eta (seed 003) vs the eta^2 variant of seeds 000/001;
- ``clipping``: effective (after clipping) vs potential P-NE*, and each run's clip rate;
- ``curvature_reference``: P-NE* vs the unreferenced P-NE.

A run's integrated values are those of its last logged step (``steps`` table).
Excluded runs (``runs.excluded``) are left out and counted in ``note``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats.inputs import require_columns, require_frame, require_probability
from analysis.stats.rank_correlation import spearman_with_ci

COLUMNS = ("analysis", "scope", "condition", "measure", "value", "ci_low", "ci_high", "n", "note")
# (analysis, exposure A, exposure B): B is the alternative to the registered choice A.
COMPARISONS = (
    ("curvature_proxy", "int_pne_star_fisher", "int_pne_star_ggn"),
    ("curvature_proxy", "int_pne_star_fisher", "int_pne_star_true_fisher"),
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


def sensitivity_table(
    steps: pd.DataFrame,
    runs: pd.DataFrame,
    dv: str = "icl_auc",
    n_boot: int = 2000,
    ci: float = 0.95,
    random_state: int = 0,
    arms: list[str] | None = None,
) -> pd.DataFrame:
    """The estimator-sensitivity table: per-run ratios, scale change and rank agreement.

    Parameters
    ----------
    steps : the steps table (``preregistration.tables.STEPS``), one row per logged step.
    runs : the runs table (``preregistration.tables.RUNS``), for condition, exclusion and ``dv``.
    dv : the outcome ranked against each exposure (default the primary ICL metric).
    n_boot, ci, random_state : the bootstrap of medians and rank correlations.
    arms : the arms whose runs are compared (config ``train.curvature_proxy_arms``, the
        runs that log the extra proxies); None: every run. Ranking runs of different
        manipulations together would mix the estimator's choices with the arms' designs.

    Returns
    -------
    pandas.DataFrame
        Columns ``analysis`` (see module docstring), ``scope`` (a run_id, or
        ``all runs``), ``condition`` (the run's registered condition, '' for all
        runs), ``measure``, ``value``, ``ci_low``, ``ci_high`` (bootstrap CI;
        min and max for a ``range`` row; NaN for per-run values), ``n`` (logged
        steps of the run, or runs), ``note`` (why a value is NaN, or what was
        left out). Per run: ``B / A`` for each comparison (A the registered
        choice), ``clip_rate``, and the Hessian rows. All runs, per comparison:
        ``median(B / A)`` (CI), ``range(B / A)`` (value the median, ci_low/high
        the min/max), ``spearman(A, B)``, ``spearman(dv, A)``, ``spearman(dv, B)``
        and their difference, each with its CI.

    Notes
    -----
    Exploratory: none of these rows is a registered test. A proxy choice that
    matters for the study shows as a rank correlation of A with B below 1 (the
    runs change order), not as a median ratio different from 1 (a common
    rescaling changes no test on log exposure but its intercept).
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
    notes = []
    if arms is not None:
        require_columns(runs, ["arm"], func)
        absent = sorted(set(arms) - set(runs["arm"]))
        if absent:
            raise ValueError(f"{func}: the runs table has no run of arm(s) {absent}")
        runs = runs[runs["arm"].isin(arms)]
        final = final[final["run_id"].isin(runs["run_id"])]
        notes.append(f"runs of {', '.join(arms)}")
    merged = final.merge(runs[["run_id", "condition", "excluded", dv]], on="run_id")
    excluded = merged["excluded"].astype(bool)
    if excluded.any():
        notes.append(f"{int(excluded.sum())} excluded run(s) left out")
    note = "; ".join(notes)
    data = merged[~excluded]
    boot = (n_boot, ci, random_state)
    rows = []
    for analysis, a, b in COMPARISONS:
        rows += _scale_rows(data, analysis, a, b, note, *boot)
        rows += _across_run_rows(data, analysis, a, b, dv, note, *boot)
    rows += _hessian_rows(steps, data, note)
    for analysis, a, b in COMPARISONS:
        rows += _per_run_rows(data, analysis, a, b)
    rows += [_clip_rate_row(r) for r in data.itertuples()]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    # summaries over all runs first, then the per-run rows, each in the order built
    return table.sort_values("scope", key=lambda s: s != "all runs", kind="mergesort").reset_index(
        drop=True
    )


def _row(analysis, scope, condition, measure, value, low=np.nan, high=np.nan, n=0, note=""):
    values = (analysis, scope, condition, measure, value, low, high, n, note)
    return dict(zip(COLUMNS, values, strict=True))


def _ratios(data: pd.DataFrame, a: str, b: str) -> pd.Series:
    """B / A per run, NaN where either is not finite or A is not > 0."""
    value_a, value_b = data[a].astype(float), data[b].astype(float)
    ok = np.isfinite(value_a) & np.isfinite(value_b) & (value_a > 0)
    return (value_b / value_a).where(ok)


def _per_run_rows(data: pd.DataFrame, analysis: str, a: str, b: str) -> list[dict]:
    rows = []
    for run, ratio in zip(data.itertuples(), _ratios(data, a, b), strict=True):
        why = ""
        if not np.isfinite(ratio):
            missing = b if not np.isfinite(getattr(run, b)) else a
            why = f"{missing} not logged or not > 0"
        rows.append(
            _row(analysis, run.run_id, run.condition, f"{b} / {a}", ratio, n=run.n_logged, note=why)
        )
    return rows


def _scale_rows(data, analysis, a, b, note, n_boot, ci, random_state) -> list[dict]:
    """Median of B / A over runs with a percentile-bootstrap CI, and its range."""
    ratios = _ratios(data, a, b).dropna().to_numpy()
    measures = (f"median({b} / {a})", f"range({b} / {a})")
    if len(ratios) < 2:
        why = f"needs >= 2 runs with {a} and {b} finite (found {len(ratios)})"
        why = f"{why}; {note}" if note else why
        return [
            _row(analysis, "all runs", "", m, np.nan, n=len(ratios), note=why) for m in measures
        ]
    idx = np.random.default_rng(random_state).integers(0, len(ratios), (n_boot, len(ratios)))
    low, high = np.percentile(np.median(ratios[idx], axis=1), [50 * (1 - ci), 50 * (1 + ci)])
    median = float(np.median(ratios))
    return [
        _row(analysis, "all runs", "", measures[0], median, low, high, len(ratios), note),
        _row(analysis, "all runs", "", measures[1], median, ratios.min(), ratios.max(),
             len(ratios), note),
    ]  # fmt: skip


def _hessian_rows(steps: pd.DataFrame, data: pd.DataFrame, note: str) -> list[dict]:
    """Per run: share of logging steps with Tr(P H P) <= 0, median Tr(P H P) / Tr(P G P).

    The Hessian is indefinite away from a minimum and a one-probe estimate is
    noisy; it is reported beside the positive semi-definite proxies, never as
    a denominator. The reference G is the GGN where logged, else the empirical Fisher.
    """
    if "trace_php_hessian" not in steps:
        return []
    logged = steps.dropna(subset=["trace_php_hessian"])
    logged = logged[logged["run_id"].isin(data["run_id"])]
    if logged.empty:
        return []
    reference = logged["trace_pfp_fisher"]
    if "trace_pgp_ggn" in logged:
        reference = logged["trace_pgp_ggn"].where(np.isfinite(logged["trace_pgp_ggn"]), reference)
    relative = (logged["trace_php_hessian"] / reference).where(reference > 0)
    by_run = logged.assign(nonpositive=logged["trace_php_hessian"] <= 0, relative=relative)
    summary = by_run.groupby("run_id").agg(
        share=("nonpositive", "mean"), ratio=("relative", "median"), n=("nonpositive", "size")
    )
    rows = []
    for run in data.itertuples():
        if run.run_id not in summary.index:
            continue
        share, ratio = (
            float(summary.at[run.run_id, "share"]),
            float(summary.at[run.run_id, "ratio"]),
        )
        n = int(summary.at[run.run_id, "n"])
        rows += [
            _row("hessian_trace", run.run_id, run.condition, "share of steps with Tr(PHP) <= 0",
                 share, n=n),
            _row("hessian_trace", run.run_id, run.condition, "median Tr(PHP) / Tr(PGP)", ratio,
                 n=n),
        ]  # fmt: skip
    shares = summary["share"].to_numpy()
    rows.append(
        _row("hessian_trace", "all runs", "", "share of steps with Tr(PHP) <= 0",
             float(logged["trace_php_hessian"].le(0).mean()), shares.min(), shares.max(),
             len(summary), f"ci_low/ci_high: min/max over runs; {note}".rstrip("; ")),
    )  # fmt: skip
    return rows


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
