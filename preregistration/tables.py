"""The tidy tables through which the stages meet, declared once.

Every table the pipeline writes or reads is declared here: its columns, their types,
units and meanings (``preregistration.trace_columns``,
``preregistration.table_columns``; the analysis' reported tables in
``preregistration.report_tables``), and the values each column may hold. ``schema``
turns a declaration into a pandera ``DataFrameSchema``
(``preregistration.contracts``); ``write_table`` validates a DataFrame before writing;
``read_table`` validates a file after reading. A violation raises ``TableError``
naming the file, the column, what was expected and the offending rows. Nothing else in
the project lists these columns.

Tables
------
steps   one row per logged optimizer step of one run (the P-NE trace).
scores  one row per (run, measure, shots) score of one trained model.
runs    one row per run of the study: condition, seed, exposure, loss, scores,
        status and exclusion.
layers  one row per (logged step, module) of one run: the per-layer P-NE breakdown.
lm_eval one row per (run, task, metric) of the lm-eval harness on one trained model.
evaluation one row per evaluation measure: its exploratory slope on log integrated
        P-NE* at matched loss (``evaluation.csv``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from preregistration.contracts import (
    COUNT,
    FINITE,
    NONNEGATIVE,
    NONNEGATIVE_OR_INF,
    POSITIVE_COUNT,
    PROBABILITY,
    Column,
    Domain,
    TableError,
    check_frame,
    dataframe_schema,
    describe_columns,
    empty_frame,
    from_plan,
    matching,
    one_of,
    read_frame,
)
from preregistration.exploratory_columns import REGRESSION_PREDICTORS
from preregistration.report_tables import REPORT_SCHEMAS, REPORT_VALUES
from preregistration.table_columns import (
    EVALUATE_MEASURES,
    EVALUATION,
    LM_EVAL,
    LM_EVAL_RUN_MEASURES,
    NOISE_FORMS,
    PROBE_RUN_MEASURES,
    RUNS,
    SCORES,
)
from preregistration.trace_columns import LAYERS, STEPS

__all__ = ["Column", "TableError", "columns", "describe", "read_table", "validate", "write_table"]


SCHEMAS: dict[str, tuple[Column, ...]] = {
    "steps": STEPS,
    "scores": SCORES,
    "runs": RUNS,
    "layers": LAYERS,
    "lm_eval": LM_EVAL,
    "evaluation": EVALUATION,
    **REPORT_SCHEMAS,
}

# The values each column may hold (DESIGN §8); a column without an entry is checked
# for its type and nullability only. Kept apart from the column lists above so that a
# new column is one line there.
# The measures of the scores table, from the names declared above: training.evaluation.scores's,
# the end-of-run probes of training.evaluation.probes (per-head scores carry their layer and
# head) and the regression family's errors (preregistration.report_tables).
_SCORE_MEASURES = "|".join(
    [
        *map(re.escape, [*EVALUATE_MEASURES, *PROBE_RUN_MEASURES]),
        r"(prefix_matching|copying)_l\d+_h\d+",
        rf"reg_({'|'.join(map(re.escape, REGRESSION_PREDICTORS))})_error",
    ]
)
# The integrated exposures of a run, in the steps table (at each step) and the runs table.
EXPOSURES = ("int_pne", "int_pne_star", "int_pne_eff", "int_pne_star_eff", "int_pne_eta2")
VALUES: dict[str, dict[str, Domain]] = {
    "steps": {
        "step": POSITIVE_COUNT,
        "tokens": COUNT,
        "lr": NONNEGATIVE,
        "train_loss": NONNEGATIVE,
        "val_loss": NONNEGATIVE_OR_INF,  # +inf at the last row of a diverged run
        "grad_norm": NONNEGATIVE,
        "clip_coef": PROBABILITY,
        "clip_rate": PROBABILITY,
        "global_batch": POSITIVE_COUNT,
        "trace_pcp": NONNEGATIVE,
        "trace_pfp": NONNEGATIVE,
        "pne": NONNEGATIVE,
        "pne_star": NONNEGATIVE,
        "pne_eff": NONNEGATIVE,
        "pne_star_eff": NONNEGATIVE,
        "pne_eta2": NONNEGATIVE,
        "b_simple": NONNEGATIVE_OR_INF,  # +inf when the unbiased |G|^2 is <= 0
        **{name: NONNEGATIVE for name in EXPOSURES},
        "int_clock": NONNEGATIVE,
        "trace_cov": NONNEGATIVE,
        "grad_sq": FINITE,
        "trace_pfp_fisher": NONNEGATIVE,
        "pne_star_fisher": NONNEGATIVE,
        "int_pne_star_fisher": NONNEGATIVE,
        "trace_pgp_ggn": NONNEGATIVE,
        "pne_star_ggn": NONNEGATIVE,
        "int_pne_star_ggn": NONNEGATIVE,
        "trace_pfp_true_fisher": NONNEGATIVE,
        "pne_star_true_fisher": NONNEGATIVE,
        "int_pne_star_true_fisher": NONNEGATIVE,
        "trace_php_hessian": FINITE,  # the raw Hessian is indefinite: may be negative
        "b_simple_window": NONNEGATIVE_OR_INF,  # +inf when the summed |G|^2 is <= 0
        "int_trace_cov": NONNEGATIVE,
        "int_grad_sq": FINITE,  # a sum of unbiased estimates: may be negative
        "b_simple_run": NONNEGATIVE_OR_INF,
        "spectrum_top": NONNEGATIVE,
        "spectrum_top_share": PROBABILITY,
        "eff_rank": NONNEGATIVE,
        "hill_tail_index": NONNEGATIVE,
    },
    "scores": {
        "measure": matching(
            _SCORE_MEASURES, "a measure of training.evaluation.scores or training.evaluation.probes"
        ),
        "shots": Domain("a count >= 0, or -1 when not applicable", low=-1.0),
        "value": FINITE,
        "chance": FINITE,  # in the measure's own unit: an accuracy, a log-probability, a rank
        "n_items": COUNT,
    },
    "runs": {
        "seed": COUNT,
        "global_batch": POSITIVE_COUNT,
        "lr_peak": NONNEGATIVE,
        "lr_rule": one_of("fixed", "sqrt", "linear"),
        "status": from_plan("stopping", "statuses"),
        "steps": COUNT,
        "tokens": COUNT,
        "final_val_loss": NONNEGATIVE_OR_INF,  # +inf when a run diverged at its last check
        **{name: NONNEGATIVE for name in EXPOSURES},
        "b_simple_run": NONNEGATIVE_OR_INF,
        "icl_auc": PROBABILITY,
        "icl_acc_max_shots": PROBABILITY,
        "icl_acc_zero_shot": PROBABILITY,
        "fact_recall": PROBABILITY,
        "in_weights_accuracy": PROBABILITY,
        "memorization": PROBABILITY,
        "induction_score": FINITE,
        "reg_icl_area": FINITE,
        "reg_excess_area": FINITE,
        "plan_hash": matching(r"[0-9a-f]{64}", "a SHA-256 in hex"),
        "wall_time_s": NONNEGATIVE,
        "role": one_of("condition", "reference"),
        "noise_form": one_of(*NOISE_FORMS),
        "phase": one_of("early", "mid", "late"),
        "pne_budget": NONNEGATIVE,
        "tracking_error_median": NONNEGATIVE,
        "pne_star_ratio_reference": NONNEGATIVE,
        "realised_budget": NONNEGATIVE,
        **{m: FINITE for m in PROBE_RUN_MEASURES},
        **{c: FINITE for c in LM_EVAL_RUN_MEASURES},
    },
    "lm_eval": {"value": FINITE, "stderr": NONNEGATIVE, "n_docs": COUNT},
    "evaluation": {"p": PROBABILITY, "n_runs": COUNT, "n_missing": COUNT},
    "layers": {
        "step": POSITIVE_COUNT,
        "n_params": COUNT,
        "trace_pcp": NONNEGATIVE,
        "trace_pfp": NONNEGATIVE,
        "trace_cov": NONNEGATIVE,
        "grad_sq": FINITE,
        "pne": NONNEGATIVE,
        "pne_star": NONNEGATIVE,
        "pne_eff": NONNEGATIVE,
    },
    **REPORT_VALUES,
}


def divergence_rows(steps: pd.DataFrame) -> pd.Series:
    """Rows of a steps table that record a diverged step: a non-finite training loss or
    gradient norm, or a validation that gave a non-finite loss.

    A row of the first kind has no estimate (its per-step P-NE columns are missing);
    its integrated columns (``int_*``) hold the exposure up to that step. The trainer
    writes such a row last (``training.train``); ``analysis.runs.ending`` checks that.
    """

    def finite(column: str) -> np.ndarray:
        values = pd.to_numeric(steps[column], errors="coerce").to_numpy(dtype=float)
        return np.isfinite(values)

    validated = (steps["validated"] == True).to_numpy(dtype=bool)  # noqa: E712
    bad = ~finite("train_loss") | ~finite("grad_norm") | (validated & ~finite("val_loss"))
    return pd.Series(bad, index=steps.index)


# Columns a divergence row of the steps table must still hold: where and when it is,
# and the exposure integrated so far. Its losses may be non-finite, its estimates missing.
_DIVERGENCE_KEPT = ("run_id", "step", "tokens", "lr", "global_batch", "validated")
_DIVERGENCE_LOSSES = ("train_loss", "val_loss", "grad_norm")


def divergence_schema(plan: dict | None = None) -> pa.DataFrameSchema:
    """The contract of a steps table's divergence rows (``divergence_rows``)."""
    kept = lambda name: name in _DIVERGENCE_KEPT or name.startswith("int_")  # noqa: E731
    declared = tuple(
        Column(c.name, c.dtype, c.unit, c.meaning, nullable=c.nullable or not kept(c.name))
        for c in STEPS
    )
    domains = {k: v for k, v in VALUES["steps"].items() if k not in _DIVERGENCE_LOSSES}
    domains |= dict.fromkeys(_DIVERGENCE_LOSSES, NONNEGATIVE_OR_INF)
    return dataframe_schema("steps", declared, domains, plan)


def _declared(table: str) -> tuple[Column, ...]:
    if table not in SCHEMAS:
        raise KeyError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
    return SCHEMAS[table]


def columns(table: str) -> list[str]:
    """Column names of ``table`` in their declared order."""
    return [c.name for c in _declared(table)]


def schema(table: str, plan: dict | None = None) -> pa.DataFrameSchema:
    """The pandera contract of ``table`` (``plan``: the plan whose lists it refers to;
    default ``preregistration/plan.yaml``)."""
    return dataframe_schema(table, _declared(table), VALUES.get(table, {}), plan)


def validate(
    df: pd.DataFrame,
    table: str,
    source: str | Path = "<DataFrame>",
    plan: dict | None = None,
) -> pd.DataFrame:
    """Check ``df`` against the contract of ``table``; return it with declared column order.

    Raises ``TableError`` naming ``source``, each failing column, what was expected
    and the offending rows. Extra columns are kept after the declared ones (later
    stages may add measures). Nothing is converted.
    """
    if table == "steps" and {*_DIVERGENCE_LOSSES, "validated"} <= set(df.columns):
        diverged = divergence_rows(df)
        check_frame(df[~diverged], schema(table, plan), source)
        check_frame(df[diverged], divergence_schema(plan), source)
    else:
        check_frame(df, schema(table, plan), source)
    declared = columns(table)
    return df[declared + [c for c in df.columns if c not in set(declared)]]


def empty_table(table: str) -> pd.DataFrame:
    """A table with no rows and every declared column typed (e.g. a run that diverged at once)."""
    return empty_frame(_declared(table))


def write_table(df: pd.DataFrame, table: str, path: str | Path, plan: dict | None = None) -> Path:
    """Validate ``df`` as ``table`` and write it as Parquet (or CSV if the suffix says so).

    A frame without rows is written with every declared column, typed.
    """
    path = Path(path)
    if len(df) == 0:
        extra = [c for c in df.columns if c not in set(columns(table))]
        df = pd.concat([empty_table(table), df[extra].astype(object)], axis=1)
    df = validate(df.reset_index(drop=True), table, source=path, plan=plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def read_table(path: str | Path, table: str, plan: dict | None = None) -> pd.DataFrame:
    """Read ``path`` and validate it as ``table``; errors name the file, column and rows."""
    df = read_frame(path, table, _declared(table))
    return validate(df, table, source=path, plan=plan)


def describe(table: str) -> str:
    """A Markdown table documenting ``table``'s columns (for README and docs)."""
    return describe_columns(_declared(table), VALUES.get(table, {}))
