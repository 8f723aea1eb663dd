"""H1 on the in-context regression family: the registered exploratory replication.

The plan registers it with the arm (``design.arms.regression_sweep.analysis``):
outcome ``reg_icl_area`` (``preregistration.scores.regression_summaries``; larger is
better ICL), predictor log(int_pne_star), final validation loss (squared error) as
covariate, seed as random effect, one-sided. The analyses are H1's own
(``analysis.hypotheses.h1_monotonicity.h1_summary``: the mixed-model slope, the isotonic
permutation test, Page's trend test and Spearman's rho), every row labelled
exploratory and named ``H1_regression``: it is no member of the confirmatory family.
Writes ``h1_regression.csv`` (contract ``h1``) and ``h1_regression.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.hypotheses.h1_monotonicity import H1_COLUMNS, h1_summary
from analysis.report.study_tables import write_csv_and_markdown
from preregistration.plan import PlanError, load_plan
from preregistration.report_tables import REGRESSION_SHOTS
from preregistration.tables import read_table

NAME = "H1_regression"


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
    run_id, condition, seed, shot and ``<stem>_error`` for model, ridge, ols, knn, avg
    and zero, from the ``reg_<stem>_error`` rows of the scores table."""
    reg = scores[scores["measure"].str.match(r"reg_\w+_error$")]
    wide = reg.pivot_table(index=["run_id", "shots"], columns="measure", values="value")
    wide.columns = [c.removeprefix("reg_") for c in wide.columns]
    wide = wide.reset_index().rename(columns={"shots": "shot"})
    wide = wide.merge(runs[["run_id", "condition", "seed"]], on="run_id", how="left")
    return wide.sort_values(["condition", "seed", "shot"], kind="mergesort")[
        [c.name for c in REGRESSION_SHOTS]
    ].reset_index(drop=True)


def write_per_shot_table(
    scores_path: str | Path, runs_path: str | Path, plan_path: str | Path, out_dir: str | Path
) -> list[Path]:
    """Write ``regression_shots.csv/.md`` (every regression run's errors per shot)."""
    plan = load_plan(plan_path)
    table = per_shot_table(
        read_table(scores_path, "scores"), read_table(runs_path, "runs", plan=plan)
    )
    notes = ["Squared error of y on each run's fixed evaluation prompts; shot k: k examples "
             "before the query. Baselines: training/regression/baselines.py."]  # fmt: skip
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
