"""H1 on the in-context regression family: the registered exploratory replication.

The plan registers it with the arm (``design.arms.regression_sweep.analysis``):
outcome ``reg_icl_area`` (``preregistration.scores.regression_summaries``; larger is
better ICL), predictor log(int_pne_star), final validation loss (squared error) as
covariate, seed as random effect, one-sided. The analyses are H1's own
(``analysis.hypotheses.h1_monotonicity.h1_summary``: the mixed-model slope, the isotonic
permutation test, Page's trend test and Spearman's rho), every row labelled
exploratory and named ``H1_regression``: it is no member of the confirmatory family.
Writes ``h1_regression.csv`` (contract ``h1``) and ``h1_regression.md``.

Beside it (issue 22, item 1) the family's errors: ``regression_shots`` per run and shot
(the model's and each baseline's squared error, and the model's excess over Bayes
ridge), and ``regression_excess`` per condition and shot over the included seeds (the
excess over Bayes ridge, its range, and the model's error relative to the zero
predictor's), whose notes say whether at k = 2d shots the models' error is at most half
the zero predictor's in every condition (``half_zero_sentence``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.hypotheses.h1_monotonicity import H1_COLUMNS, h1_summary
from analysis.report.study_tables import write_csv_and_markdown
from preregistration.exploratory_columns import REGRESSION_EXCESS, REGRESSION_SHOTS
from preregistration.plan import PlanError, load_plan, scale_design
from preregistration.tables import read_table

NAME = "H1_regression"
# Issue 22's goal for the family: at k = 2d shots the models' error at most this fraction
# of the zero predictor's (``half_zero_sentence`` says whether every condition meets it).
ZERO_FRACTION = 0.5


def regression_arms(plan: dict) -> dict[str, dict]:
    """Arms registered with ``family: regression`` and an ``analysis`` block, by name."""
    arms = plan["design"]["arms"]
    return {a: d for a, d in arms.items() if d.get("family") == "regression" and "analysis" in d}


def h1_regression(
    runs: pd.DataFrame,
    plan: dict,
    n_boot: int = 2000,
    n_perm: int = 999,
    random_state: int = 0,
    source: str = "runs table",
) -> pd.DataFrame:
    """Every H1 analysis on the included runs of the regression arms (columns ``H1_COLUMNS``).

    A regression arm without included runs gives one row saying so; an included run
    whose outcome is not finite stops the analysis, naming the run (a run is never
    dropped silently).
    """
    arms = regression_arms(plan)
    if not arms:
        raise PlanError("plan: no arm registers family 'regression' with an analysis block")
    rows = []
    for arm, arm_def in arms.items():
        hyp = dict(arm_def["analysis"])
        data = runs[(runs["arm"] == arm) & ~runs["excluded"].astype(bool)]
        if data.empty:
            rows.append(pd.DataFrame([{"method": f"not run (no included runs of arm {arm})"}]))
            continue
        bad = data[~np.isfinite(data[hyp["outcome"]].to_numpy(dtype=float))]
        if len(bad):
            raise ValueError(
                f"{source}: column {hyp['outcome']!r} is not finite for included run(s) "
                f"{bad['run_id'].tolist()} of arm {arm}; their scores.parquet lacks the "
                "regression scores"
            )
        rows.append(h1_summary(data, hyp, n_boot=n_boot, n_perm=n_perm, random_state=random_state))
    table = pd.concat(rows, ignore_index=True).reindex(columns=H1_COLUMNS)
    table["hypothesis"] = NAME
    table["label"] = "exploratory"
    return table


def per_shot_table(scores: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The regression runs' squared errors per shot, wide (contract ``regression_shots``):
    run_id, condition, seed, shot, ``<stem>_error`` for model, ridge, ols, knn, avg
    and zero, from the ``reg_<stem>_error`` rows of the scores table, and
    ``excess_error`` = model_error - ridge_error (the excess over Bayes ridge)."""
    reg = scores[scores["measure"].str.match(r"reg_\w+_error$")]
    wide = reg.pivot_table(index=["run_id", "shots"], columns="measure", values="value")
    wide.columns = [c.removeprefix("reg_") for c in wide.columns]
    wide = wide.reset_index().rename(columns={"shots": "shot"})
    wide["excess_error"] = wide["model_error"] - wide["ridge_error"]
    wide = wide.merge(runs[["run_id", "condition", "seed"]], on="run_id", how="left")
    return wide.sort_values(["condition", "seed", "shot"], kind="mergesort")[
        [c.name for c in REGRESSION_SHOTS]
    ].reset_index(drop=True)


def excess_table(shots: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition and shot, over the included seeds: the excess over Bayes ridge and the
    model's error relative to the zero predictor's (contract ``regression_excess``).

    Parameters
    ----------
    shots : pandas.DataFrame
        One row per run and shot with ``run_id``, ``condition``, ``seed``, ``shot``,
        ``model_error``, ``ridge_error`` and ``zero_error`` (``per_shot_table``'s table).
    runs : pandas.DataFrame
        The runs table: ``run_id`` and ``excluded``; excluded runs are left out.

    Returns
    -------
    pandas.DataFrame
        One row per (condition, shot), sorted: ``n_seeds``; ``excess_mean``,
        ``excess_min``, ``excess_max`` of model_error - ridge_error over the seeds; the
        mean ``model_error``, ``ridge_error``, ``zero_error``; ``model_over_zero_mean``
        and ``model_over_zero_max``, the mean and largest over the seeds of model_error /
        zero_error.

    Examples
    --------
    >>> shots = pd.DataFrame({"run_id": ["a", "b"], "condition": "reg_bs8_fixed",
    ...     "seed": [0, 1], "shot": 6, "model_error": [0.3, 0.5],
    ...     "ridge_error": [0.1, 0.2], "zero_error": [1.0, 1.0]})
    >>> runs = pd.DataFrame({"run_id": ["a", "b"], "excluded": [False, False]})
    >>> row = excess_table(shots, runs).iloc[0]
    >>> [round(float(row[c]), 6) for c in ("excess_mean", "excess_min", "model_over_zero_max")]
    [0.25, 0.2, 0.5]
    """
    need = {"run_id", "condition", "seed", "shot", "model_error", "ridge_error", "zero_error"}
    missing = sorted(need - set(shots.columns))
    if missing:
        raise ValueError(f"excess_table: the per-shot table lacks column(s) {missing}")
    included = set(runs.loc[~runs["excluded"].astype(bool), "run_id"])
    data = shots[shots["run_id"].isin(included)].copy()
    data["excess"] = data["model_error"] - data["ridge_error"]
    data["ratio"] = data["model_error"] / data["zero_error"].where(data["zero_error"] > 0)
    groups = data.groupby(["condition", "shot"], sort=True)
    table = groups.agg(
        n_seeds=("seed", "nunique"),
        excess_mean=("excess", "mean"),
        excess_min=("excess", "min"),
        excess_max=("excess", "max"),
        model_error=("model_error", "mean"),
        ridge_error=("ridge_error", "mean"),
        zero_error=("zero_error", "mean"),
        model_over_zero_mean=("ratio", "mean"),
        model_over_zero_max=("ratio", "max"),
    ).reset_index()
    return table[[c.name for c in REGRESSION_EXCESS]]


def half_zero_sentence(excess: pd.DataFrame, d: int, arm: str = "") -> str:
    """Whether at k = 2d shots the models' error is at most half the zero predictor's in
    every condition of ``excess`` (``excess_table``'s rows; model_over_zero_mean <=
    ``ZERO_FRACTION``), in words from its numbers."""
    k = 2 * int(d)
    where = f" of {arm}" if arm else ""
    at = excess[excess["shot"] == k]
    if excess.empty:
        return f"At k = 2d = {k} shots (d = {d}): no included run{where} with regression errors."
    if at.empty:
        shots = sorted(excess["shot"].unique())
        return (
            f"At k = 2d = {k} shots (d = {d}): not evaluated; the runs{where} give shots "
            f"{shots[0]}-{shots[-1]}."
        )
    ratios = at.set_index("condition")["model_over_zero_mean"]
    span = f"{ratios.min():.3g}-{ratios.max():.3g}" if len(ratios) > 1 else f"{ratios.iloc[0]:.3g}"
    detail = (
        f"model / zero predictor error, mean over seeds, {span} over {len(ratios)} "
        f"condition(s); largest single run {at['model_over_zero_max'].max():.3g}; excess over "
        f"Bayes ridge {at['excess_mean'].min():.3g}-{at['excess_mean'].max():.3g}"
    )
    above = ratios[~(ratios <= ZERO_FRACTION)]
    head = f"At k = 2d = {k} shots (d = {d}) the models' squared error{where} is "
    if above.empty:
        return head + f"at most half the zero predictor's in every condition ({detail})."
    named = ", ".join(f"{c} {v:.3g}" for c, v in above.items())
    return (
        head + f"not at most half the zero predictor's in every condition: above half in "
        f"{len(above)} of {len(ratios)} ({named}) ({detail})."
    )


def write_excess_table(
    scores_path: str | Path,
    runs_path: str | Path,
    plan_path: str | Path,
    scale: str,
    out_dir: str | Path,
) -> list[Path]:
    """Write ``regression_excess.csv/.md``; its notes give ``half_zero_sentence`` for each
    regression arm at the task's d of ``scale`` (plan ``design.scales.<scale>.arms``)."""
    plan = load_plan(plan_path)
    runs = read_table(runs_path, "runs", plan=plan)
    table = excess_table(per_shot_table(read_table(scores_path, "scores"), runs), runs)
    arms = scale_design(plan, scale, plan_path).get("arms", {})
    notes = []
    for arm in regression_arms(plan):
        if arm not in arms:
            continue
        conditions = set(runs.loc[runs["arm"] == arm, "condition"])
        mine = table[table["condition"].isin(conditions)]
        notes.append(half_zero_sentence(mine, int(arms[arm]["task"]["d"]), arm))
    notes += [
        "Over each condition's included seeds at each shot k (k examples before the query): "
        "excess = model_error - ridge_error, the model's squared error above Bayes ridge's "
        "(Bayes-optimal for the task's prior); model_over_zero = model_error / zero_error, "
        "1 when the context is not used. Per run: regression_shots.",
        "Exploratory (issue 22, item 1); the registered analysis of the family is h1_regression.",
    ]
    title = "In-context linear regression: excess over Bayes ridge per condition and shot"
    return write_csv_and_markdown(
        table, Path(out_dir), "regression_excess", title, notes, "regression_excess"
    )


def write_per_shot_table(
    scores_path: str | Path, runs_path: str | Path, plan_path: str | Path, out_dir: str | Path
) -> list[Path]:
    """Write ``regression_shots.csv/.md`` (every regression run's errors per shot)."""
    plan = load_plan(plan_path)
    table = per_shot_table(
        read_table(scores_path, "scores"), read_table(runs_path, "runs", plan=plan)
    )
    notes = ["Squared error of y on each run's fixed evaluation prompts; shot k: k examples "
             "before the query. Baselines: training/regression/baselines.py.",
             "excess_error = model_error - ridge_error, the excess over Bayes ridge; per "
             "condition over the seeds: regression_excess."]  # fmt: skip
    title = "In-context linear regression: squared error per shot"
    return write_csv_and_markdown(
        table, Path(out_dir), "regression_shots", title, notes, "regression_shots"
    )


def write_h1_regression(
    runs_path: str | Path, plan_path: str | Path, out_dir: str | Path
) -> list[Path]:
    """Read the runs table and write ``h1_regression.csv/.md`` under ``out_dir``."""
    plan = load_plan(plan_path)
    runs = read_table(runs_path, "runs", plan=plan)
    seed = int(plan.get("random_seeds", {}).get("analysis", 0))
    table = h1_regression(runs, plan, random_state=seed, source=str(runs_path))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    arms = ", ".join(regression_arms(plan))
    n = int(table["n_runs"].max()) if table["n_runs"].notna().any() else 0
    notes = [
        f"n runs: {n} included runs of arm(s) {arms}.",
        "Registered exploratory replication of H1 on in-context linear regression "
        "(plan design.arms.<arm>.analysis); not in the Holm family, p not corrected.",
        "reg_icl_area: 1 - excess squared error over Bayes ridge relative to the zero "
        "predictor's, shots 1..k_max-1; larger is better ICL.",
    ]
    title = "H1 on in-context linear regression (exploratory replication)"
    return write_csv_and_markdown(table, Path(out_dir), "h1_regression", title, notes, "h1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="runs table (Parquet or CSV)")
    parser.add_argument("--plan", required=True, help="preregistration/plan.yaml")
    parser.add_argument("--out-dir", required=True, help="directory of the tables")
    args = parser.parse_args(argv)
    for path in write_h1_regression(args.runs, args.plan, args.out_dir):
        print(path)


if __name__ == "__main__":
    main()
