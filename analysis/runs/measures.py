"""A run's end-of-run evaluation measures: the runs-table columns of its probes and lm-eval files.

Beside ``scores.parquet``, a run directory may hold ``probes.parquet`` (table
``scores``: the probes of ``training.evaluation.probes``) and ``lm_eval.parquet`` (table
``lm_eval``: ``training.evaluation.lm_eval_suite``). Each run-level measure becomes the runs-table
column of the same name (``preregistration.tables`` PROBE_RUN_MEASURES; the lm-eval
ones ``lm_eval_<task>_<metric>``, LM_EVAL_RUN_MEASURES). A file that is absent gives
NaN columns (traces made before these measures existed stay readable); a file that
is present must match its contract, hold only its own run's rows and no repeated
measure, or the problem names the file and the rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs.ending import other_run_rows
from preregistration.tables import (
    LM_EVAL_RUN_MEASURES,
    PROBE_RUN_MEASURES,
    TableError,
    read_table,
)

MEASURE_FILES = {"probes.parquet": "scores", "lm_eval.parquet": "lm_eval"}
SOURCES = {m: "probes.parquet" for m in PROBE_RUN_MEASURES} | {
    c: "lm_eval.parquet" for c in LM_EVAL_RUN_MEASURES
}


def probe_columns(probes: pd.DataFrame, path: Path | str) -> tuple[dict[str, float], list[str]]:
    """Runs-table columns of a probes table (one value per measure), and problems."""
    keep = probes[probes["measure"].isin(list(PROBE_RUN_MEASURES))]
    dup = keep.duplicated("measure", keep=False).to_numpy()
    if dup.any():
        rows = keep.index[dup][:8].tolist()
        return {}, [f"{path}: a probe measure is repeated at rows {rows}"]
    values = keep.set_index("measure")["value"]
    return {m: float(values.get(m, np.nan)) for m in PROBE_RUN_MEASURES}, []


def lm_eval_columns(table: pd.DataFrame, path: Path | str) -> tuple[dict[str, float], list[str]]:
    """Runs-table columns of an lm-eval table (one value per task and metric), and problems."""
    dup = table.duplicated(["task", "metric"], keep=False).to_numpy()
    if dup.any():
        return {}, [f"{path}: (task, metric) repeated at rows {np.flatnonzero(dup)[:8].tolist()}"]
    values = table.set_index(["task", "metric"])["value"]
    out = {
        column: float(values.get((task, metric), np.nan))
        for column, (task, metric, _, _) in LM_EVAL_RUN_MEASURES.items()
    }
    return out, []


def read_measures(
    directory: Path, run_id: str, read=read_table
) -> tuple[dict[str, float], list[str]]:
    """Every evaluation column of the run in ``directory`` (NaN where its file is absent),
    and the problems of the files that are present (``read``: as ``read_table``)."""
    out = dict.fromkeys(SOURCES, float("nan"))
    problems: list[str] = []
    readers = {"probes.parquet": probe_columns, "lm_eval.parquet": lm_eval_columns}
    for name, table in MEASURE_FILES.items():
        path = directory / name
        if not path.exists():
            continue
        try:
            frame = read(path, table)
        except TableError as exc:
            problems.append(str(exc))
            continue
        found = other_run_rows(frame, run_id, path)
        columns, more = readers[name](frame, path)
        problems += found + more
        out |= columns
    return out, problems
