"""Read one registered run's files and check them against its place and each other.

A run of the study lives in ``<traces>/<condition>/seed<seed>/``: ``meta.json``,
``trace.parquet`` (table ``steps``), ``scores.parquet`` (table ``scores``) and
``layers.parquet`` (table ``layers``, checked when present). ``read_run`` returns
the run's row of the runs table, built from what the files show, or the list of
problems found, each naming the file, the key or column and the rows:

- a required file is missing, unreadable, or does not match its table schema;
- a file contradicts its place: ``run_id``, ``condition`` or ``seed`` of
  ``meta.json``, or the ``run_id`` of a table row, is not the directory's run;
- the trace breaks the trainer's invariants, or ``meta.json`` says otherwise than
  the trace about status, steps, tokens or final loss (``analysis.runs.ending``);
- scores repeat a (measure, shots) pair or hold an accuracy outside [0, 1].

``required_measure_problems`` then checks the included runs of the finished runs
table: every measure a registered test uses must be finite (and > 0 where the test
takes its log), or the analysis stops naming the file it comes from. A run is never
dropped: it is in the runs table, excluded by a registered rule with its reason, or
the analysis fails.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs.ending import (
    derive_ending,
    meta_problems,
    other_run_rows,
    trace_problems,
)
from analysis.runs.measures import MEASURE_FILES, read_measures
from analysis.runs.measures import SOURCES as MEASURE_SOURCES
from analysis.runs.noise_columns import design_columns, noise_control_columns
from analysis.runs.table_reader import TableReader
from preregistration.plan import apply_exclusions
from preregistration.scores import summarize_scores
from preregistration.table_columns import ACCURACY_MEASURES
from preregistration.tables import (
    EXPOSURES,
    TableError,
    columns,
    empty_table,
    read_table,
)

REQUIRED_FILES = ("meta.json", "trace.parquet", "scores.parquet")
OPTIONAL_TABLES = {"layers.parquet": "layers"}
META_TYPES = {  # key -> accepted JSON types
    "run_id": (str,),
    "condition": (str,),
    "arm": (str,),
    "seed": (int,),
    "global_batch": (int,),
    "lr_peak": (int, float),
    "lr_rule": (str,),
    "status": (str,),
    "steps": (int,),
    "tokens": (int,),
    "final_val_loss": (int, float, type(None)),
    "plan_hash": (str,),
    "wall_time_s": (int, float),
}
SCORE_COLUMNS = tuple(summarize_scores(pd.DataFrame(columns=columns("scores"))))


class RunFilesError(TableError):
    """Registered runs' files are missing, damaged, or contradict each other."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        listed = "\n  ".join(problems)
        super().__init__(f"{len(problems)} problem(s) in the per-run files:\n  {listed}")


@dataclass(frozen=True)
class RunRecord:
    """A registered run as its files show it: its runs-table row, trace and scores."""

    directory: Path
    meta: dict
    row: dict  # runs-table columns except excluded / exclusion_reason
    trace: pd.DataFrame
    scores: pd.DataFrame


def run_dir(traces: str | Path, condition: str, seed: int) -> Path:
    return Path(traces) / condition / f"seed{seed}"


def missing_run_files(traces: str | Path, specs) -> list[str]:
    """One message per registered run that lacks required files, naming them."""
    return [p for p in (_absent(traces, spec) for spec in specs) if p]


def _absent(traces: str | Path, spec) -> str:
    """'registered run <id>: file(s) not found: <paths>', or '' when all are there."""
    directory = run_dir(traces, spec.condition, spec.seed)
    absent = [str(directory / name) for name in REQUIRED_FILES if not (directory / name).is_file()]
    return f"registered run {spec.run_id}: file(s) not found: {', '.join(absent)}" if absent else ""


def unregistered_records(traces: str | Path, specs) -> list[Path]:
    """Directories under ``traces`` holding files but no registered run (sorted).

    A folder inside a registered run's directory holds that run's own records (the states
    a replay base saves, ``replay/``; TensorBoard events), not another run's.
    """
    traces = Path(traces)
    registered = {run_dir(traces, s.condition, s.seed) for s in specs}
    if not traces.is_dir():
        return []
    dirs = {p.parent for p in traces.rglob("*") if p.is_file()}
    return sorted(d for d in dirs if d not in registered and registered.isdisjoint(d.parents))


def read_meta(path: Path) -> tuple[dict | None, list[str]]:
    """``meta.json`` as a mapping with every key of META_TYPES, typed; or the problems."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, [f"{path}: corrupt run metadata ({exc})"]
    if not isinstance(meta, dict):
        return None, [f"{path}: expected a JSON object, found {type(meta).__name__}"]
    problems = []
    missing = [k for k in META_TYPES if k not in meta]
    if missing:
        problems.append(f"{path}: run metadata lacks key(s) {missing}")
    for key, types in META_TYPES.items():
        value = meta.get(key)
        if key in meta and (isinstance(value, bool) or not isinstance(value, types)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{path}: key {key!r} is {value!r}, expected {names}")
    block = meta.get("config", {}).get("model", {}) if isinstance(meta.get("config"), dict) else {}
    size = block.get("block_size") if isinstance(block, dict) else None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"{path}: key 'config.model.block_size' is {size!r}, expected an int >= 1")
    return (None, problems) if problems else (meta, [])


def place_problems(meta: dict, spec, path: Path) -> list[str]:
    """Where meta.json names another run than the directory it lies in."""
    problems = []
    for key in ("run_id", "condition", "seed"):
        if meta[key] != getattr(spec, key):
            problems.append(
                f"{path}: {key} is {meta[key]!r}, but the file lies in the directory of "
                f"run {spec.run_id} ({key} {getattr(spec, key)!r})"
            )
    return problems


def scores_problems(scores: pd.DataFrame, spec, path: Path) -> list[str]:
    """Rows of another run, repeated (measure, shots) pairs, accuracies outside [0, 1]."""
    problems = other_run_rows(scores, spec.run_id, path)
    dup = scores.duplicated(["measure", "shots"], keep=False).to_numpy()
    if dup.any():
        problems.append(
            f"{path}: (measure, shots) repeated at rows {np.flatnonzero(dup)[:8].tolist()}"
        )
    value = scores["value"].to_numpy(dtype=float)
    out = scores["measure"].isin(ACCURACY_MEASURES).to_numpy() & ~((value >= 0) & (value <= 1))
    if out.any():
        problems.append(
            f"{path}: column 'value' is not an accuracy in [0, 1] at rows "
            f"{np.flatnonzero(out)[:8].tolist()} (measures {sorted(set(scores.measure[out]))})"
        )
    return problems


def _read(path: Path, table: str, problems: list[str], read=read_table) -> pd.DataFrame | None:
    try:
        return read(path, table)
    except TableError as exc:
        problems.append(str(exc))
        return None


def read_run(traces: str | Path, spec, read=read_table) -> tuple[RunRecord | None, list[str]]:
    """The run's record from its files, or (None, problems) naming files and rows.

    ``read(path, table)`` reads and validates one table file (``read_table``, or a
    ``TableReader`` that has read many runs' files at once).
    """
    directory = run_dir(traces, spec.condition, spec.seed)
    absent = _absent(traces, spec)
    if absent:
        return None, [absent]
    meta, problems = read_meta(directory / "meta.json")
    trace = _read(directory / "trace.parquet", "steps", problems, read)
    scores = _read(directory / "scores.parquet", "scores", problems, read)
    extra = {}
    for name, table in OPTIONAL_TABLES.items():
        if (directory / name).exists():
            extra[name] = _read(directory / name, table, problems, read)
    if any(x is None for x in (meta, trace, scores, *extra.values())):
        return None, problems
    block = int(meta["config"]["model"]["block_size"])
    problems += place_problems(meta, spec, directory / "meta.json")
    problems += trace_problems(trace, spec, block, directory / "trace.parquet")
    problems += scores_problems(scores, spec, directory / "scores.parquet")
    logged = sorted(set(trace["global_batch"].tolist()))
    if logged and logged != [meta["global_batch"]]:
        problems.append(
            f"{directory / 'meta.json'}: global_batch {meta['global_batch']!r}, but the trace "
            f"logged global_batch {logged}"
        )
    if "layers.parquet" in extra:
        problems += _layers_problems(extra["layers.parquet"], trace, spec, directory)
    ending, found = derive_ending(trace, spec, block, directory / "trace.parquet")
    problems += found
    measures, found = read_measures(directory, spec.run_id, read)  # probes, lm-eval (optional)
    problems += found
    if ending is not None:
        problems += meta_problems(meta, ending, directory / "meta.json")
    design = design_columns(spec)
    control, found = noise_control_columns(meta, design["noise_form"], directory / "meta.json")
    problems += found
    if problems:
        return None, problems
    row = {k: meta[k] for k in META_TYPES if k not in ("status", "steps", "tokens")}
    row |= {"status": ending.status, "steps": ending.steps, "tokens": ending.tokens}
    row |= {"final_val_loss": ending.final_val_loss, "b_simple_run": ending.b_simple_run}
    row |= ending.exposure | summarize_scores(scores) | design | control
    row |= measures
    return RunRecord(directory, meta, row, trace, scores), []


def _layers_problems(layers: pd.DataFrame, trace: pd.DataFrame, spec, directory: Path) -> list:
    path = directory / "layers.parquet"
    problems = other_run_rows(layers, spec.run_id, path)
    unknown = ~layers["step"].isin(trace["step"]).to_numpy()
    if unknown.any():
        problems.append(
            f"{path}: column 'step' names steps the trace did not log at rows "
            f"{np.flatnonzero(unknown)[:8].tolist()}"
        )
    return problems


def required_measures(plan: dict) -> dict[str, bool]:
    """Runs-table column -> whether a registered test takes its log; from the plan.

    The plan's primary metrics, and every registered test's outcome, predictor
    (``log(x)`` names x) and covariates.
    """
    out = {col: False for col in plan["primary_metrics"].values()}
    specs = list(plan["hypotheses"].values()) + list(plan.get("controls", {}).values())
    for spec in specs:
        out.setdefault(spec["outcome"], False)
        for col in spec.get("covariates", []):
            out.setdefault(col, False)
        if "predictor" in spec:
            logged = re.fullmatch(r"log\((.*)\)", spec["predictor"])
            column = logged.group(1) if logged else spec["predictor"]
            out[column] = out.get(column, False) or bool(logged)
    return out


def source_file(column: str) -> str:
    """The per-run file a runs-table column is derived from."""
    if column in SCORE_COLUMNS:
        return "scores.parquet"
    if column in MEASURE_SOURCES:
        return MEASURE_SOURCES[column]
    if column in EXPOSURES or column in (
        "final_val_loss",
        "b_simple_run",
        "status",
        "steps",
        "tokens",
    ):
        return "trace.parquet"
    return "meta.json"


def tested_arms(plan: dict) -> set[str]:
    """Arms whose runs a registered test uses; an arm no test names (e.g. the regression
    family's, analysed as an exploratory replication) needs none of their measures."""
    specs = list(plan["hypotheses"].values()) + list(plan.get("controls", {}).values())
    return {arm for spec in specs for arm in spec.get("arms", [])}


def required_measure_problems(
    runs: pd.DataFrame, plan: dict, directories: dict[str, Path]
) -> list[str]:
    """Included runs (of the tested arms) whose required measures are missing, not finite,
    or not > 0 for a log."""
    problems = []
    included = runs[~runs["excluded"].astype(bool)]
    included = included[included["arm"].isin(tested_arms(plan))]
    for column, logged in required_measures(plan).items():
        values = included[column].to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (logged & ~(values > 0))
        for run_id, value in zip(included["run_id"][bad], values[bad].tolist(), strict=True):
            need = "finite and > 0 (a registered test takes its log)" if logged else "finite"
            problems.append(
                f"{directories[run_id] / source_file(column)}: run {run_id} is included by "
                f"the registered exclusion rules but its {column!r} is {value!r}; a registered "
                f"test needs it {need}"
            )
    return problems


def recorded_exclusion_problems(runs: pd.DataFrame, records: list[RunRecord]) -> list[str]:
    """A meta.json that records an exclusion other than the registered rules give."""
    problems = []
    for record, row in zip(records, runs.itertuples(index=False), strict=True):
        for key in ("excluded", "exclusion_reason"):
            if key in record.meta and record.meta[key] != getattr(row, key):
                problems.append(
                    f"{record.directory / 'meta.json'}: {key} is {record.meta[key]!r}, but the "
                    f"registered exclusion rules give {getattr(row, key)!r} for run {row.run_id}"
                )
    return problems


def prefetched_reader(traces: str | Path, specs) -> TableReader:
    """A ``read_table`` for ``read_run`` that has read and validated every registered
    run's table files at once (``analysis.runs.table_reader``): one validation per table,
    not per file; a file that fails is validated alone, and its error names it."""
    read = TableReader()
    dirs = [run_dir(traces, s.condition, s.seed) for s in specs]
    tables = {"trace.parquet": "steps", "scores.parquet": "scores"}
    for name, table in (tables | OPTIONAL_TABLES | MEASURE_FILES).items():
        read.prefetch([d / name for d in dirs], table)
    return read


def derive_runs(
    traces: str | Path, plan: dict, specs
) -> tuple[pd.DataFrame, list[RunRecord], list[str]]:
    """The runs table of the readable registered runs, their records, and every problem.

    The table holds one row per run whose files passed ``read_run``, exclusions
    applied by the plan's rules; the problems list every run that did not, every
    recorded exclusion the rules contradict, and every required measure missing
    from an included run.
    """
    records, problems = [], []
    read = prefetched_reader(traces, specs)
    for spec in specs:
        record, found = read_run(traces, spec, read)
        problems += found
        if record is not None:
            records.append(record)
    if not records:
        return empty_table("runs"), records, problems
    runs = apply_exclusions(pd.DataFrame([r.row for r in records]), plan)[columns("runs")]
    directories = {r.row["run_id"]: r.directory for r in records}
    problems += recorded_exclusion_problems(runs, records)
    problems += required_measure_problems(runs, plan, directories)
    return runs, records, problems
