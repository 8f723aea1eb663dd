"""The study's exploratory tables, written from the gathered tables (DESIGN §5).

Each writer takes the runs table (read once) and reads what else it needs
(``steps``, ``scores``: the tables ``analysis.runs.collection`` writes), builds its table
with the function named in brackets, and writes ``<stem>.csv`` (validated against its contract) and
``<stem>.md`` (rounded, with the notes a reader needs) under ``out_dir``:

- ``sensitivity``    estimator choices inside P-NE*
  [analysis.exploratory.sensitivity.sensitivity_table]
- ``power``          seeds needed for H1-H3 [analysis.exploratory.power.seeds_needed]
- ``noise_control``  how the controller met its registration [analysis.exploratory.noise_control]
- ``evaluation``     each evaluation measure against P-NE* [analysis.exploratory.evaluation]
- ``clock_runs``, ``clock_summary``  what P-NE* is made of: the step-size clock and the
  noise fraction per run, per arm, and H1's slope with the clock
  [analysis.exploratory.clock.clock_runs, clock_summary; notes from clock_notes]
- ``precision``      H2's and H3's CI width against the registered margin and their power
  at the registered seeds with the runs' SD [analysis.report.precision_tables.write_precision;
  analysis.exploratory.precision]
- ``h1_regression``, ``regression_shots``, ``regression_excess``  H1 on the regression
  family, its errors per run and shot, and per condition and shot the excess over Bayes
  ridge [analysis.report.regression_tables]

``write_exploratory_tables`` writes them all in one process (one Snakemake job:
the rule ``exploratory_tables``), printing each writer's wall time. No table here
is a registered test; none enters the Holm family.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from analysis.exploratory.clock import POOLED_ARMS, clock_notes, clock_runs, clock_summary
from analysis.exploratory.evaluation import evaluation_slopes
from analysis.exploratory.noise_control import noise_control_table, summary_notes
from analysis.exploratory.power import seeds_needed
from analysis.exploratory.sensitivity import sensitivity_table
from analysis.report.precision_tables import write_precision
from analysis.report.regression_tables import (
    write_excess_table,
    write_h1_regression,
    write_per_shot_table,
)
from analysis.report.study_tables import write_csv_and_markdown
from preregistration.design import expand_design
from preregistration.plan import load_plan
from preregistration.tables import read_table


def write_sensitivity(
    runs: pd.DataFrame, steps_path: str | Path, out_dir: str | Path, arms: list[str] | None
) -> list[Path]:
    """``sensitivity.csv/.md`` over the runs of ``arms`` (config ``train.curvature_proxy_arms``,
    every arm when None): the runs that log the extra curvature proxies."""
    steps = read_table(steps_path, "steps")
    table = sensitivity_table(steps, runs, arms=arms)
    title = "Estimator sensitivity (exploratory)"
    return write_csv_and_markdown(table, Path(out_dir), "sensitivity", title, [
        "Curvature proxy: empirical Fisher (registered) vs generalized Gauss-Newton and true "
        "Fisher (both positive semi-definite): per run B / A; across runs the median ratio (scale) "
        "with bootstrap CI, its range (ci_low/ci_high = min/max) and Spearman rank agreement.",
        "hessian_trace: the raw Hessian is indefinite; its share of logging steps with "
        "Tr(PHP) <= 0 and its median ratio to the GGN trace (never a denominator).",
        "Also eta vs eta^2, effective vs potential (clipping), P-NE* vs P-NE.",
        "Runs compared: " + (", ".join(arms) if arms else "every arm") + " (config "
        "train.curvature_proxy_arms); 'all runs' in scope means all of those.",
    ], table="sensitivity")  # fmt: skip


def write_power(
    runs: pd.DataFrame, plan_path: str | Path, scale: str, out_dir: str | Path
) -> list[Path]:
    """``power.csv/.md``: simulated power of H1-H3 by seeds, the study's included H1 runs
    taken as a pilot for the variance components."""
    plan = load_plan(plan_path)
    h1_arms = plan["hypotheses"]["H1"]["arms"]
    pilot = runs[~runs["excluded"].astype(bool) & runs["arm"].isin(h1_arms)]
    specs = expand_design(plan, scale)
    budgets = {s.pne_budget for s in specs if getattr(s, "pne_budget", None) is not None}
    n_budgets = max(len(budgets), 2)  # the arms contract registers >= 2 levels
    table = pd.concat(
        [seeds_needed(pilot, plan, "H1", max_seeds=12, n_sim=1000, random_state=0)]
        + [
            seeds_needed(pilot, plan, h, max_seeds=40, n_sim=1000, random_state=0,
                         n_budgets=n_budgets, until_sufficient=True)
            for h in ("H2", "H3")
        ],
        ignore_index=True,
    )  # fmt: skip
    title = "Power of H1-H3 by seeds (exploratory)"
    return write_csv_and_markdown(table, Path(out_dir), "power", title, [
        f"Variance components (seed intercept SD, residual SD) of the mixed model fitted on this "
        f"study's included runs of arm(s) {', '.join(h1_arms)}, treated as a pilot.",
        "H1: effect = the pilot slope (optimistic).",
        f"H2: late - early contrast = the H3 margin, {n_budgets} budget levels, one-sided.",
        "H3: paired TOST with the plan's margin under no true difference.",
        "H2 and H3 rows stop at the first number of seeds with the target power (max 40).",
        "1000 simulated studies per row (mc_se: Monte-Carlo SE).",
    ], table="power")  # fmt: skip


def write_noise_control(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``noise_control.csv/.md``: per run of the causal arms, tracking and realised budgets."""
    table = noise_control_table(runs)
    title = "Noise control: tracking and realised budgets per run"
    return write_csv_and_markdown(
        table, Path(out_dir), "noise_control", title, summary_notes(table), table="noise_control"
    )


def write_evaluation(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``evaluation.csv/.md``: each evaluation measure's slope on log integrated P-NE*."""
    table = evaluation_slopes(runs)
    notes = [
        "Slope of each measure on log integrated P-NE* in the mixed model of H1 (seed random "
        "intercept) with final validation loss as covariate, two-sided; excluded runs left out.",
        "format_accuracy is the zero-shot skill control at equal loss (answers in the right token "
        "family without context); a slope near 0 says noise did not change general competence.",
        "Exploratory: no test here is registered; p values are uncorrected.",
    ]
    title = "Evaluation measures against P-NE* at matched loss (exploratory)"
    return write_csv_and_markdown(table, Path(out_dir), "evaluation", title, notes, "evaluation")


def write_clock(
    runs: pd.DataFrame, steps_path: str | Path, plan_path: str | Path, out_dir: str | Path
) -> list[Path]:
    """``clock_runs.csv/.md`` (per run: integrated P-NE* against the step-size clock) and
    ``clock_summary.csv/.md`` (per arm, and H1's model with the clock; its notes say in
    words how far the registered metric can be told from the design in each arm)."""
    h1 = load_plan(plan_path)["hypotheses"]["H1"]
    steps = read_table(steps_path, "steps")
    per_run = clock_runs(steps, runs)
    summary = clock_summary(
        per_run, runs, dv=h1["outcome"], covariates=tuple(h1.get("covariates", [])),
        h1_arms=tuple(h1["arms"]), alpha=float(h1["alpha"]),
    )  # fmt: skip
    out_dir = Path(out_dir)
    run_notes = [
        "int_clock = sum of eta_t / B_t over every optimizer step up to the run's last logged "
        "step; noise_fraction = int_pne_star / int_clock, the clock-weighted mean of the held "
        "noise fraction Tr(PCP) / Tr(PFP); noise_fraction_<proxy> the same with that "
        "curvature proxy's integrated P-NE* (logged by the arms of config "
        "train.curvature_proxy_arms; '–' elsewhere).",
        "median_step_fraction: the median over the run's logged steps of pne_star_t / "
        "(eta_t / B_t). Exploratory (deviation D6); the summary is clock_summary.",
    ]
    paths = write_csv_and_markdown(
        per_run, out_dir, "clock_runs", "What P-NE* is made of, per run (exploratory)",
        run_notes, table="clock_runs",
    )  # fmt: skip
    notes = clock_notes(summary, dv=h1["outcome"]) + [
        f"Pooled arms: {', '.join(POOLED_ARMS)} where present (the batch sweep and the arms "
        "that add noise at its largest-batch fixed-LR condition; analysis.exploratory.clock).",
        "ci_low/ci_high: Fisher-z CI of r, t CI of a slope, min/max of a median ratio.",
    ]
    title = "P-NE* against the step-size clock, per arm (exploratory)"
    return paths + write_csv_and_markdown(
        summary, out_dir, "clock_summary", title, notes, table="clock_summary"
    )


def write_exploratory_tables(
    tables_dir: str | Path,
    plan_path: str | Path,
    scale: str,
    curvature_proxy_arms: list[str] | None = None,
    log=None,
) -> list[Path]:
    """Every table of the module docstring under ``tables_dir``, from the ``runs``,
    ``steps`` and ``scores`` tables there; each writer's wall time printed to ``log``
    (a text stream; standard error by default)."""
    log = sys.stderr if log is None else log
    tables = Path(tables_dir)
    runs, steps, scores = (tables / f"{t}.parquet" for t in ("runs", "steps", "scores"))
    frame = read_table(runs, "runs")  # read once for the writers that take the frame
    writers = [
        ("sensitivity", lambda: write_sensitivity(frame, steps, tables, curvature_proxy_arms)),
        ("power", lambda: write_power(frame, plan_path, scale, tables)),
        ("noise_control", lambda: write_noise_control(frame, tables)),
        ("evaluation", lambda: write_evaluation(frame, tables)),
        ("clock", lambda: write_clock(frame, steps, plan_path, tables)),
        ("precision", lambda: write_precision(frame, plan_path, scale, tables)),
        ("h1_regression", lambda: write_h1_regression(runs, plan_path, tables)),
        ("regression_shots", lambda: write_per_shot_table(scores, runs, plan_path, tables)),
        ("regression_excess", lambda: write_excess_table(scores, runs, plan_path, scale, tables)),
    ]
    paths: list[Path] = []
    for name, write in writers:
        start = time.perf_counter()
        written = write()
        seconds = time.perf_counter() - start
        print(f"{name}: {seconds:.1f} s, {', '.join(map(str, written))}", file=log)
        paths += written
    return paths
