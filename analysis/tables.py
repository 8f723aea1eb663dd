"""The tidy tables through which the stages meet, declared once.

Every table the pipeline writes or reads is declared here: its columns, their
types, units and meanings. ``write_table`` checks a DataFrame against its
declaration before writing; ``read_table`` checks a file after reading and names
the file and the problem when it does not match. Nothing else in the project
lists these columns.

Tables
------
steps   one row per logged optimizer step of one run (the P-NE trace).
scores  one row per (run, measure, shots) score of one trained model.
runs    one row per run of the study: condition, seed, exposure, loss, scores,
        status and exclusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class TableError(ValueError):
    """A table file is missing, unreadable, or does not match its schema."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "int", "float", "str" or "bool"
    unit: str
    meaning: str
    nullable: bool = False


def _c(name: str, dtype: str, unit: str, meaning: str, nullable: bool = False) -> Column:
    return Column(name, dtype, unit, meaning, nullable)


# Per-step P-NE quantities (DESIGN §2, seed 003). Held estimates: the value of the
# latest logging step. "potential" uses unclipped fp32 gradients; "effective"
# multiplies the noise covariance by the squared clip factor the update really used.
STEPS = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c(
        "step",
        "int",
        "optimizer steps",
        "optimizer step t (1-based) after which the row was logged",
    ),
    _c("tokens", "int", "tokens", "training tokens seen up to and including step t"),
    _c("lr", "float", "-", "learning rate eta_t used by step t"),
    _c("train_loss", "float", "nats/token", "mean training loss of step t's global batch"),
    _c("val_loss", "float", "nats/token", "validation loss after step t", nullable=True),
    _c("grad_norm", "float", "-", "L2 norm of the unclipped global-batch gradient at step t"),
    _c(
        "clip_coef",
        "float",
        "-",
        "factor c_t = min(1, max_norm/grad_norm) the update used at step t",
    ),
    _c(
        "clip_rate",
        "float",
        "fraction",
        "share of steps since the previous row whose update was clipped",
    ),
    _c("global_batch", "int", "sequences", "B_t = m * K * W"),
    _c(
        "trace_pcp",
        "float",
        "-",
        "Tr(P_t C_t P_t)/B_t from the K*W micro-batch gradients (potential)",
    ),
    _c("trace_pfp", "float", "-", "Tr(P_t F_t P_t), registered curvature proxy (empirical Fisher)"),
    _c("pne", "float", "-", "P-NE_t = eta_t Tr(P C P)/B (potential)"),
    _c("pne_star", "float", "-", "P-NE*_t = P-NE_t / max(floor, Tr(P F P)) (potential)"),
    _c("pne_eff", "float", "-", "effective P-NE_t = c_t^2 P-NE_t (after clipping)"),
    _c("pne_star_eff", "float", "-", "effective P-NE*_t = c_t^2 P-NE*_t (after clipping)"),
    _c("pne_eta2", "float", "-", "eta_t^2 Tr(P C P)/B, the eta-squared variant of seeds 000/001"),
    _c(
        "b_simple",
        "float",
        "sequences",
        "Tr(C)/|G|^2 of step t alone (McCandlish et al. 2018; biased upwards)",
    ),
    _c(
        "int_pne",
        "float",
        "-",
        "sum over steps s <= t of eta_s Tr(P C_held P)/B, P at most 3 steps old (potential)",
    ),
    _c("int_pne_star", "float", "-", "integrated P-NE* (potential)"),
    _c("int_pne_eff", "float", "-", "integrated effective P-NE (each step's own c_s^2)"),
    _c("int_pne_star_eff", "float", "-", "integrated effective P-NE*"),
    _c("int_pne_eta2", "float", "-", "integrated eta-squared variant"),
    # added by the estimator (training/pne.py): diagnostics of the same logging step.
    _c("trace_cov", "float", "-", "Tr(C_t), trace of the per-example gradient covariance"),
    _c(
        "grad_sq",
        "float",
        "-",
        "unbiased |G_t|^2 = |G_bar|^2 - Tr(C)/B (< 0 possible when noise dominates)",
    ),
    _c(
        "trace_pfp_fisher",
        "float",
        "-",
        "Tr(P F P) with the empirical Fisher diagonal, whatever the proxy",
    ),
    _c("pne_star_fisher", "float", "-", "P-NE*_t with the empirical Fisher denominator"),
    _c(
        "int_pne_star_fisher",
        "float",
        "-",
        "integrated P-NE* with the empirical Fisher denominator",
    ),
    _c(
        "trace_pgp_ggn",
        "float",
        "-",
        "Tr(P G P), G the generalized Gauss-Newton (probes through the logits; NaN when off)",
        nullable=True,
    ),
    _c("pne_star_ggn", "float", "-", "P-NE*_t with the GGN denominator", nullable=True),
    _c(
        "int_pne_star_ggn", "float", "-", "integrated P-NE* with the GGN denominator", nullable=True
    ),
    _c(
        "trace_pfp_true_fisher",
        "float",
        "-",
        "Tr(P F P), F the true Fisher (labels sampled from the model; NaN when off)",
        nullable=True,
    ),
    _c(
        "pne_star_true_fisher",
        "float",
        "-",
        "P-NE*_t with the true-Fisher denominator",
        nullable=True,
    ),
    _c(
        "int_pne_star_true_fisher",
        "float",
        "-",
        "integrated P-NE* with the true-Fisher denominator",
        nullable=True,
    ),
    _c(
        "trace_php_hessian",
        "float",
        "-",
        "Hutchinson Tr(P H P) of the raw, indefinite loss Hessian (reported only; NaN when off)",
        nullable=True,
    ),
    _c(
        "b_simple_window",
        "float",
        "sequences",
        "B_simple = sum Tr(C) / sum |G|^2 over the latest b_simple_window (16) logged estimates",
    ),
    _c(
        "int_trace_cov",
        "float",
        "-",
        "sum over steps <= t of the held Tr(C) (numerator of b_simple_run)",
    ),
    _c(
        "int_grad_sq",
        "float",
        "-",
        "sum over steps <= t of the held unbiased |G|^2 (denominator of b_simple_run)",
    ),
    _c(
        "b_simple_run",
        "float",
        "sequences",
        "B_simple of the run so far: int_trace_cov / int_grad_sq (ratio of step means)",
    ),
    _c("spectrum_top", "float", "-", "top eigenvalue of P C P / B from the randomized sketch"),
    _c(
        "spectrum_top_share",
        "float",
        "fraction",
        "share of the sketched trace in the top sketch_rank eigenvalues",
        nullable=True,
    ),
    _c(
        "eff_rank",
        "float",
        "-",
        "participation ratio (sum l)^2/sum l^2 of P C P / B (<= K*W - 1)",
        nullable=True,
    ),
    _c(
        "hill_tail_index",
        "float",
        "-",
        "Hill tail index of the centred micro-batch gradient coordinates",
        nullable=True,
    ),
)

SCORES = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c(
        "measure",
        "str",
        "-",
        "icl_accuracy | fact_recall | in_weights_accuracy | induction_score | val_loss",
    ),
    _c(
        "shots",
        "int",
        "demonstrations",
        "number of in-context demonstrations (-1 when not applicable)",
    ),
    _c(
        "value",
        "float",
        "-",
        "accuracy in [0, 1], loss in nats/token, or score as the measure says",
    ),
    _c(
        "chance",
        "float",
        "-",
        "the value a model without the skill obtains (NaN if none)",
        nullable=True,
    ),
    _c("n_items", "int", "items", "number of evaluated episodes or probes"),
)

RUNS = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("condition", "str", "-", "registered condition name (preregistration/plan.yaml)"),
    _c("arm", "str", "-", "registered arm the condition belongs to"),
    _c("seed", "int", "-", "seed of initialization and data order"),
    _c("global_batch", "int", "sequences", "B = m * K * W"),
    _c("lr_peak", "float", "-", "peak learning rate after the registered LR rule"),
    _c("lr_rule", "str", "-", "fixed | sqrt | linear"),
    _c("status", "str", "-", "reached_target | token_cap | diverged"),
    _c("excluded", "bool", "-", "whether a registered exclusion rule excludes the run"),
    _c("exclusion_reason", "str", "-", "the registered rule that excluded the run ('' if none)"),
    _c("steps", "int", "optimizer steps", "optimizer steps taken"),
    _c("tokens", "int", "tokens", "training tokens seen"),
    _c(
        "final_val_loss",
        "float",
        "nats/token",
        "validation loss at the end of training",
        nullable=True,
    ),
    _c("int_pne", "float", "-", "integrated P-NE (potential)"),
    _c("int_pne_star", "float", "-", "integrated P-NE* (potential)"),
    _c("int_pne_eff", "float", "-", "integrated P-NE (effective, after clipping)"),
    _c("int_pne_star_eff", "float", "-", "integrated P-NE* (effective, after clipping)"),
    _c("int_pne_eta2", "float", "-", "integrated eta-squared variant (seeds 000/001)"),
    _c(
        "icl_auc",
        "float",
        "-",
        "area under ICL accuracy vs log2(1+shots), normalised to [0, 1]",
        nullable=True,
    ),
    _c(
        "icl_acc_max_shots",
        "float",
        "-",
        "ICL accuracy at the largest number of shots",
        nullable=True,
    ),
    _c(
        "icl_acc_zero_shot",
        "float",
        "-",
        "ICL accuracy with no demonstration (chance level)",
        nullable=True,
    ),
    _c("fact_recall", "float", "-", "key -> value recall without context", nullable=True),
    _c(
        "in_weights_accuracy",
        "float",
        "-",
        "fixed item -> label accuracy without context",
        nullable=True,
    ),
    _c("memorization", "float", "-", "mean of fact_recall and in_weights_accuracy", nullable=True),
    _c(
        "induction_score",
        "float",
        "nats/token",
        "loss on a segment's first copy minus its repeat",
        nullable=True,
    ),
    _c("plan_hash", "str", "-", "SHA-256 of the plan file the run was trained under"),
    _c("wall_time_s", "float", "s", "training wall time"),
)

# Table T1: one row per statistical test the analysis ran (confirmatory, control or
# exploratory). The audit compares the registered tests of the plan with these rows.
TESTS = (
    _c("hypothesis", "str", "-", "plan key (H1..H4, a control name) or an exploratory label"),
    _c("label", "str", "-", "confirmatory | control | exploratory"),
    _c("test", "str", "-", "test name as registered in the plan"),
    _c("outcome", "str", "-", "outcome column of the runs table"),
    _c("sidedness", "str", "-", "greater | less | two-sided | equivalence"),
    _c("alpha", "float", "-", "significance level used"),
    _c(
        "margin",
        "float",
        "-",
        "equivalence margin (NaN when not an equivalence test)",
        nullable=True,
    ),
    _c("family", "str", "-", "correction family ('' when none)"),
    _c(
        "estimate", "float", "-", "point estimate (slope, contrast, difference, rho)", nullable=True
    ),
    _c("ci_low", "float", "-", "lower confidence bound", nullable=True),
    _c("ci_high", "float", "-", "upper confidence bound", nullable=True),
    _c("p", "float", "-", "p-value as the test defines it", nullable=True),
    _c("p_holm", "float", "-", "Holm-adjusted p within the family (NaN outside it)", nullable=True),
    _c("n_runs", "int", "runs", "number of included runs the test used"),
    _c("decision", "str", "-", "supported | not supported | not run (reason) | exploratory"),
)

# Per-layer breakdown of a logged step (added by the estimator, training/pne.py: the
# ``layers`` entry of NoiseLogger's record). A layer is a module (parameter name without
# its last component); trace_pcp, pne, pne_star and pne_eff sum over layers to the step's
# totals in the steps table.
LAYERS = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("step", "int", "optimizer steps", "logged optimizer step t"),
    _c("layer", "str", "-", "module name, e.g. blocks.0.attn.qkv"),
    _c("n_params", "int", "parameters", "number of parameters of the module"),
    _c("trace_pcp", "float", "-", "the module's part of Tr(P C P)/B"),
    _c("trace_pfp", "float", "-", "the module's part of Tr(P F P), empirical Fisher"),
    _c("trace_cov", "float", "-", "the module's part of Tr(C)"),
    _c("grad_sq", "float", "-", "the module's part of the unbiased |G|^2"),
    _c("pne", "float", "-", "the module's part of P-NE_t (potential)"),
    _c("pne_star", "float", "-", "the module's P-NE over the whole model's curvature trace"),
    _c("pne_eff", "float", "-", "the module's part of effective P-NE_t"),
)

SCHEMAS: dict[str, tuple[Column, ...]] = {
    "steps": STEPS,
    "scores": SCORES,
    "runs": RUNS,
    "tests": TESTS,
    "layers": LAYERS,
}

_PANDAS_KIND = {"int": "iu", "float": "fiu", "str": "OSU", "bool": "b"}


def columns(table: str) -> list[str]:
    """Column names of ``table`` in their declared order."""
    return [c.name for c in _schema(table)]


def _schema(table: str) -> tuple[Column, ...]:
    if table not in SCHEMAS:
        raise KeyError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
    return SCHEMAS[table]


def validate(df: pd.DataFrame, table: str, source: str | Path = "<DataFrame>") -> pd.DataFrame:
    """Check ``df`` against the declaration of ``table``; return it with declared column order.

    Raises ``TableError`` naming ``source``, the column and what was expected.
    Extra columns are kept after the declared ones (later stages may add measures).
    """
    schema = _schema(table)
    missing = [c.name for c in schema if c.name not in df.columns]
    if missing:
        raise TableError(f"{source}: table '{table}' lacks column(s) {missing}")
    for col in schema:
        series = df[col.name]
        if col.dtype == "str":
            ok = series.map(lambda v: isinstance(v, str)).all() if len(series) else True
        else:
            ok = series.dtype.kind in _PANDAS_KIND[col.dtype]
        if not ok:
            raise TableError(
                f"{source}: column '{col.name}' of table '{table}' should be {col.dtype}, "
                f"found {series.dtype}"
            )
        if not col.nullable and col.dtype != "str" and series.isna().any():
            row = int(series.isna().to_numpy().argmax())
            raise TableError(
                f"{source}: column '{col.name}' of table '{table}' is empty at row {row}"
            )
    extra = [c for c in df.columns if c not in {c.name for c in schema}]
    return df[[c.name for c in schema] + extra]


def empty_table(table: str) -> pd.DataFrame:
    """A table with no rows and every declared column typed (e.g. a run that diverged at once)."""
    kinds = {"int": "int64", "float": "float64", "str": "object", "bool": "bool"}
    return pd.DataFrame({c.name: pd.Series(dtype=kinds[c.dtype]) for c in _schema(table)})


def write_table(df: pd.DataFrame, table: str, path: str | Path) -> Path:
    """Validate ``df`` as ``table`` and write it as Parquet (or CSV if the suffix says so)."""
    path = Path(path)
    if df.empty and len(df.columns) == 0:
        df = empty_table(table)
    df = validate(df.reset_index(drop=True), table, source=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def read_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read ``path`` and validate it as ``table``; errors name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: file not found (expected table '{table}')")
    try:
        df = _read_csv(path, table) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for truncated or corrupt files
        raise TableError(f"{path}: cannot be read as table '{table}' ({exc})") from exc
    return validate(df, table, source=path)


def _read_csv(path: Path, table: str) -> pd.DataFrame:
    """CSV with empty strings kept as '' in text columns and read as NaN elsewhere."""
    schema = _schema(table)
    return pd.read_csv(
        path,
        dtype={c.name: str for c in schema if c.dtype == "str"},
        keep_default_na=False,
        na_values={c.name: ["", "NaN", "nan"] for c in schema if c.dtype != "str"},
    )


def describe(table: str) -> str:
    """A Markdown table documenting ``table``'s columns (for README and docs)."""
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    for c in _schema(table):
        lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {c.meaning} |")
    return "\n".join(lines)
