"""Gather every run's trace, scores and metadata into the study's tidy tables.

Reads ``<traces>/<condition>/seed<seed>/{meta.json, trace.parquet, scores.parquet}``
for every registered run and writes ``runs.parquet`` (one row per run, exclusions
applied by the plan's registered rules, nothing dropped) and ``steps.parquet``
(every logged step of every run). A missing, corrupt or truncated file stops with
its path and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from preregistration.plan import apply_exclusions, load_plan
from preregistration.scores import summarize_scores
from preregistration.tables import TableError, read_table, write_table

META_FIELDS = (
    "run_id",
    "condition",
    "arm",
    "seed",
    "global_batch",
    "lr_peak",
    "lr_rule",
    "status",
    "steps",
    "tokens",
    "final_val_loss",
    "plan_hash",
    "wall_time_s",
)
EXPOSURES = ("int_pne", "int_pne_star", "int_pne_eff", "int_pne_star_eff", "int_pne_eta2")


def run_dir(traces: str | Path, condition: str, seed: int) -> Path:
    return Path(traces) / condition / f"seed{seed}"


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TableError(f"{path}: file not found (run metadata)") from exc
    except json.JSONDecodeError as exc:
        raise TableError(f"{path}: corrupt run metadata ({exc})") from exc
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise TableError(f"{path}: run metadata lacks {missing}")
    return meta


def run_row(directory: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One runs-table row, the run's steps and its scores, from its directory."""
    meta = read_meta(directory / "meta.json")
    trace = read_table(directory / "trace.parquet", "steps")
    scores = read_table(directory / "scores.parquet", "scores")
    if len(trace) == 0 and meta["status"] != "diverged":
        raise TableError(
            f"{directory / 'trace.parquet'}: no logged step in a run that did not diverge"
        )
    last = trace.iloc[-1] if len(trace) else None
    exposure = {k: float(last[k]) if last is not None else float("nan") for k in EXPOSURES}
    row = {k: meta[k] for k in META_FIELDS} | exposure | summarize_scores(scores)
    row |= {"excluded": False, "exclusion_reason": ""}
    return row, trace, scores


def collect(
    traces: str | Path,
    plan_path: str | Path,
    run_ids: list[tuple[str, int]],
    runs_out: str | Path,
    steps_out: str | Path,
    scores_out: str | Path,
) -> pd.DataFrame:
    """Write runs, steps and scores tables for the (condition, seed) pairs listed."""
    plan = load_plan(plan_path)
    rows, traces_, scores_ = [], [], []
    for condition, seed in run_ids:
        row, trace, scores = run_row(run_dir(traces, condition, seed))
        rows.append(row)
        traces_.append(trace)
        scores_.append(scores)
    runs = apply_exclusions(pd.DataFrame(rows), plan)
    runs["steps"] = runs["steps"].astype(int)
    runs["tokens"] = runs["tokens"].astype(int)
    runs["final_val_loss"] = runs["final_val_loss"].astype(float)
    write_table(runs, "runs", runs_out, plan=plan)
    write_table(pd.concat(traces_, ignore_index=True), "steps", steps_out)
    write_table(pd.concat(scores_, ignore_index=True), "scores", scores_out)
    return runs
