"""Gather every registered run's files into the study's tidy tables, every time from the files.

Reads ``<traces>/<condition>/seed<seed>/{meta.json, trace.parquet, scores.parquet}``
(and checks ``layers.parquet`` when present) for every run that the plan registers
at the scale, and writes ``runs.parquet`` (one row per run, exclusions applied by
the plan's registered rules, nothing dropped), ``steps.parquet`` (every logged step
of every run) and ``scores.parquet``.

What the trace shows is derived from it, never taken from ``meta.json``: status,
steps, tokens, final validation loss and exposures (``analysis.run_status``); a
``meta.json`` that says otherwise is an error naming it. A missing, unreadable or
inconsistent file, a file that contradicts its place (run id, condition, seed), or
an included run without a finite measure a registered test needs stops the
collection with one ``RunFilesError`` listing every problem, each naming the file
(``analysis.run_checks``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.plan import apply_exclusions, load_plan
from analysis.run_checks import (
    RunFilesError,
    RunRecord,
    read_run,
    required_measure_problems,
    unregistered_records,
)
from analysis.tables import columns, write_table
from training.conditions import expand_design


def build_runs(
    traces: str | Path, plan: dict, scale: str, plan_path: str | Path = "plan"
) -> tuple[pd.DataFrame, list[RunRecord]]:
    """The runs table of every registered run from its files, exclusions applied.

    Raises ``RunFilesError`` listing every problem of every run (so one pass shows
    them all), each naming the file and the key, column or rows.
    """
    records, problems = [], []
    for spec in expand_design(plan, scale, str(plan_path)):
        record, found = read_run(traces, spec)
        problems += found
        if record is not None:
            records.append(record)
    if problems:
        raise RunFilesError(problems)
    runs = pd.DataFrame([r.row for r in records])
    runs = apply_exclusions(runs, plan)[columns("runs")]
    directories = {r.row["run_id"]: r.directory for r in records}
    problems = required_measure_problems(runs, plan, directories)
    if problems:
        raise RunFilesError(problems)
    return runs, records


def collect(
    traces: str | Path,
    plan_path: str | Path,
    scale: str,
    runs_out: str | Path,
    steps_out: str | Path,
    scores_out: str | Path,
) -> tuple[pd.DataFrame, list[Path]]:
    """Write the runs, steps and scores tables of the registered runs of ``scale``.

    Returns the runs table and the directories under ``traces`` that hold files of
    no registered run (the audit fails on them; they are never read here).
    """
    plan = load_plan(plan_path)
    runs, records = build_runs(traces, plan, scale, plan_path)
    write_table(runs, "runs", runs_out)
    write_table(pd.concat([r.trace for r in records], ignore_index=True), "steps", steps_out)
    write_table(pd.concat([r.scores for r in records], ignore_index=True), "scores", scores_out)
    specs = expand_design(plan, scale, str(plan_path))
    return runs, unregistered_records(traces, specs)
