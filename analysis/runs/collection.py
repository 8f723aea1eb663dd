"""Gather every registered run's files into the study's tidy tables, every time from the files.

Reads ``<traces>/<condition>/seed<seed>/{meta.json, trace.parquet, scores.parquet}``
(and checks ``layers.parquet`` when present) for every run that the plan registers
at the scale, and writes ``runs.parquet`` (one row per run, exclusions applied by
the plan's registered rules, nothing dropped), ``steps.parquet`` (every logged step
of every run) and ``scores.parquet``.

What the trace shows is derived from it, never taken from ``meta.json``: status,
steps, tokens, final validation loss and exposures (``analysis.runs.ending``); a
``meta.json`` that says otherwise is an error naming it. A missing, unreadable or
inconsistent file, a file that contradicts its place (run id, condition, seed), or
an included run without a finite measure a registered test needs stops the
collection with one ``RunFilesError`` listing every problem, each naming the file
(``analysis.runs.files``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.runs.files import RunFilesError, RunRecord, derive_runs, unregistered_records
from preregistration.design import RunSpec, expand_design
from preregistration.plan import load_plan
from preregistration.tables import write_table


def build_runs(
    traces: str | Path, plan: dict, specs: list[RunSpec]
) -> tuple[pd.DataFrame, list[RunRecord]]:
    """The runs table of the registered runs ``specs`` from their files, exclusions applied.

    Raises ``RunFilesError`` listing every problem of every run (so one pass shows
    them all), each naming the file and the key, column or rows.
    """
    runs, records, problems = derive_runs(traces, plan, specs)
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
    specs = expand_design(plan, scale, str(plan_path))
    runs, records = build_runs(traces, plan, specs)
    write_table(runs, "runs", runs_out, plan=plan)
    write_table(pd.concat([r.trace for r in records], ignore_index=True), "steps", steps_out)
    write_table(pd.concat([r.scores for r in records], ignore_index=True), "scores", scores_out)
    return runs, unregistered_records(traces, specs)
