"""The audit's check of the runs table against the per-run files (DESIGN §6, §8).

The runs table is not taken on trust: every registered run's files are read again
(``analysis.runs.files``), its status, steps, tokens, final loss and exposures
derived from its trace, its exclusion from the plan's rules, and each column of its
row in the runs table compared with what the files give. A registered run whose
files are missing or damaged fails, naming the run and the files; so does a
directory of run records that the plan does not register (unless a deviation
declares it under ``covers.extra_runs``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from analysis.audit.findings import Check
from analysis.runs.files import RunRecord, derive_runs, source_file, unregistered_records
from preregistration.design import expand_design
from preregistration.deviations import DeviationLog
from preregistration.lock import StudyPaths
from preregistration.tables import TableError, columns, read_table


def traces_dir(config: dict, paths: StudyPaths) -> Path:
    """Where the per-run files are: config key ``traces``, by default <results>/runs."""
    return Path(config.get("traces") or paths.results / "runs")


def check_trace_files(traces: Path, hashes, check: Check) -> None:
    """Every JSON and Parquet file under ``traces`` is readable; meta.json hashes agree.

    ``hashes.check(value, what, check)`` judges a recorded plan hash (analysis.audit.checks).
    """
    files = sorted(p for p in traces.glob("**/*") if p.is_file())
    unhashed = 0
    for path in files:
        try:
            if path.suffix == ".json":
                meta = json.loads(path.read_text())
                if path.name == "meta.json" and not isinstance(meta, dict):
                    check.fail(f"{path}: expected a JSON object")
                elif path.name == "meta.json" and "plan_hash" in meta:
                    hashes.check(meta["plan_hash"], f"{path}: recorded", check)
                elif path.name == "meta.json":
                    unhashed += 1
            elif path.suffix == ".parquet":
                pq.ParquetFile(path).metadata  # noqa: B018 (reads the footer: fails if truncated)
        except Exception as exc:  # json, pyarrow and OS errors alike mean an unreadable trace
            check.fail(f"{path}: corrupt or truncated ({type(exc).__name__}: {exc})")
    check.notes.append(f"{len(files)} trace file(s) under {traces}")
    if unhashed:
        check.notes.append(f"{unhashed} meta.json file(s) record no plan_hash (not compared)")


def _record_id(directory: Path, traces: Path) -> str:
    """'<condition>_s<seed>' for a <traces>/<condition>/seed<seed> directory, else its path."""
    rel = directory.relative_to(traces).parts
    seed = re.fullmatch(r"seed(\d+)", rel[-1]) if len(rel) == 2 else None
    return f"{rel[0]}_s{int(seed.group(1))}" if seed else str(directory)


def _show(value) -> str:
    """A table cell as Python writes it (NumPy scalars as the value they hold)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _same(recorded, derived) -> bool:
    if isinstance(derived, float) or isinstance(recorded, float):
        try:
            a, b = float(recorded), float(derived)
        except (TypeError, ValueError):
            return False
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9)
    return recorded == derived


def check_run_files(
    runs: pd.DataFrame | None,
    plan: dict,
    paths: StudyPaths,
    traces: Path,
    log: DeviationLog,
    check: Check,
) -> None:
    """Fail every per-run problem, unregistered record and runs-table row the files contradict.

    ``runs`` is the runs table as read (None when it could not be read: the files
    are still checked).
    """
    specs = expand_design(plan, paths.scale, str(paths.plan))
    derived, records, problems = derive_runs(traces, plan, specs)
    for problem in problems:
        check.fail(problem)
    for directory in unregistered_records(traces, specs):
        item = _record_id(directory, traces)
        files = sorted(p.name for p in directory.iterdir() if p.is_file())
        message = (
            f"{directory}: run records ({', '.join(files)}) of {item}, which "
            f"design.scales.{paths.scale} of {paths.plan} does not register"
        )
        dev = log.covering("extra_runs", item, paths.scale)
        if dev:
            check.declare(message, dev.id)
        else:
            check.fail(message)
    check.notes.append(
        f"{len(records)} of {len(specs)} registered run(s) read from {traces} and re-derived"
    )
    _check_gathered(paths, {r.row["run_id"]: r for r in records}, check)
    if runs is None:
        return
    by_id = {r.row["run_id"]: r.directory for r in records}
    derived = derived.set_index("run_id")
    for row in runs.to_dict("records"):
        if row["run_id"] not in derived.index:
            continue  # a missing or damaged run (failed above) or an unregistered one (design)
        want = derived.loc[row["run_id"]]
        for column in columns("runs")[1:]:
            if not _same(row[column], want[column]):
                source = by_id[row["run_id"]] / source_file(column)
                if column in ("excluded", "exclusion_reason"):
                    source = f"{source} and the plan's exclusion rules"
                check.fail(
                    f"{paths.runs_table}: run {row['run_id']}: {column} is {_show(row[column])}, "
                    f"but its files give {_show(want[column])} (from {source})"
                )


def _same_column(recorded: pd.Series, derived: pd.Series) -> bool:
    """``_same`` of every pair of cells, at once where both columns are numbers or
    booleans (floats: equal to 1e-9 relative, or both NaN), cell by cell otherwise."""
    kinds = recorded.dtype.kind + derived.dtype.kind
    if set(kinds) <= set("biu") or not set(kinds) <= set("biuf"):
        if set(kinds) <= set("biu") and recorded.dtype.kind == derived.dtype.kind:
            return bool((recorded.to_numpy() == derived.to_numpy()).all())
        return all(map(_same, recorded.tolist(), derived.tolist()))
    a, b = recorded.to_numpy(dtype=float), derived.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= 1e-9 * np.maximum(np.abs(a), np.abs(b))
    return bool((close | (a == b) | (np.isnan(a) & np.isnan(b))).all())


def _check_gathered(paths: StudyPaths, records: dict[str, RunRecord], check: Check) -> None:
    """The study's steps and scores tables hold exactly the per-run traces and scores."""
    tables = paths.runs_table.parent
    for table, name, source in (
        ("steps", "steps.parquet", "trace"),
        ("scores", "scores.parquet", "scores"),
    ):
        path = tables / name
        try:
            gathered = read_table(path, table)
        except TableError as exc:
            check.fail(str(exc))
            continue
        unknown = sorted(set(gathered["run_id"]) - set(records))
        if unknown:
            check.fail(
                f"{path}: rows of run(s) {unknown}, of which no registered run's files "
                "could be read"
            )
        by_run = dict(iter(gathered.groupby("run_id", sort=False)))
        for run_id, record in records.items():
            mine = by_run.get(run_id, gathered.iloc[:0]).reset_index(drop=True)
            theirs = getattr(record, source)
            file = record.directory / f"{source}.parquet"
            if len(mine) != len(theirs):
                check.fail(f"{path}: {len(mine)} row(s) of run {run_id}, {file} has {len(theirs)}")
                continue
            for column in columns(table):
                if not _same_column(mine[column], theirs[column]):
                    check.fail(f"{path}: column '{column}' of run {run_id} differs from {file}")
                    break
