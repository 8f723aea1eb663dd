"""The tidy tables through which the stages meet, declared once.

Every table the pipeline writes or reads is declared here (the analysis' reported
tables in ``preregistration.report_tables``): its columns, their types, units and
meanings, and the values each column may hold. ``schema`` turns a declaration into
a pandera ``DataFrameSchema`` (``preregistration.contracts``); ``write_table``
validates a DataFrame before writing; ``read_table`` validates a file after
reading. A violation raises ``TableError`` naming the file, the column, what was
expected and the offending rows. Nothing else in the project lists these columns.

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
from preregistration.report_tables import REGRESSION_PREDICTORS, REPORT_SCHEMAS, REPORT_VALUES

__all__ = ["Column", "TableError", "columns", "describe", "read_table", "validate", "write_table"]


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
    _c(
        "val_loss",
        "float",
        "nats/token",
        "validation loss after step t (NaN when the step did not validate)",
        nullable=True,
    ),
    _c("validated", "bool", "-", "whether the validation loss was measured after step t"),
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
    # added by the estimator (gradnoise.estimation.logger): diagnostics of the same logging step.
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
    # Noise arms (issue 10; training/noise_arms.py): NaN for runs without a controller.
    _c(
        "noise_scale",
        "float",
        "-",
        "controller multiplier s_t of the injected covariance at this step (noise arms)",
        nullable=True,
    ),
    _c(
        "target_int_pne_star",
        "float",
        "-",
        "controller target at this step: the reference's int P-NE* (injection) or the budget ramp",
        nullable=True,
    ),
    _c(
        "int_pne_star_injected",
        "float",
        "-",
        "integrated P-NE* due to the injected covariance so far (0 without injection)",
        nullable=True,
    ),
)

# The measures training.evaluate writes to the scores table; the first three are
# accuracies in [0, 1]. The end-of-run probes' measures are PROBE_RUN_MEASURES (below).
ACCURACY_MEASURES = ("icl_accuracy", "fact_recall", "in_weights_accuracy")
EVALUATE_MEASURES = (*ACCURACY_MEASURES, "induction_score", "val_loss")

SCORES = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c(
        "measure",
        "str",
        "-",
        f"{' | '.join(EVALUATE_MEASURES)} "
        "(training.evaluate), or an end-of-run probe (training.probe_scores' docstring)",
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
        "the value a model without the skill obtains, in the measure's unit (NaN if none)",
        nullable=True,
    ),
    _c("n_items", "int", "items", "number of evaluated episodes or probes"),
)

# End-of-run evaluation measures of a run (analysis.run_measures reads them from the
# run's probes.parquet and lm_eval.parquet; NaN when the run has no such file). Each
# column is named after its measure: the probe measures of training.probe_scores, and
# lm_eval_<task>_<metric> for the project's lm-eval tasks (training.lm_eval_suite).
PROBE_RUN_MEASURES = {  # measure -> (unit, meaning)
    "hessian_top_eigenvalue": (
        "nats/token",
        "top Hessian eigenvalue (largest magnitude), Lanczos to a tolerance, probe batch",
    ),
    "sam_sharpness": ("nats/token", "first-order SAM sharpness L(w + rho g/|g|) - L(w)"),
    "fisher_trace": ("-", "trace of the empirical Fisher, per-sequence gradients"),
    "induction_head_score": ("fraction", "largest per-head prefix-matching score"),
    "induction_head_copying": ("nats", "copying score of the best prefix-matching head"),
    "order_std_icl": ("probability", "ICL order sensitivity: std of label probs over orders"),
    "order_std_sgd": ("probability", "the same for one-pair SGD fine-tuning"),
    "overlap_top_gd": ("fraction", "top-k label overlap of GD fine-tuning with ICL"),
    "overlap_top_adam": ("fraction", "top-k label overlap of Adam fine-tuning with ICL"),
    "overlap_top_icl": ("fraction", "top-k label overlap of ICL in another order with ICL"),
    "overlap_cos_gd": ("-", "cosine of GD fine-tuning's label distribution with ICL's"),
    "overlap_cos_adam": ("-", "cosine of Adam fine-tuning's label distribution with ICL's"),
    "overlap_cos_icl": ("-", "cosine of ICL in another order with ICL"),
    "accuracy_icl": ("fraction", "accuracy of ICL on the ICL-vs-GD episodes"),
    "accuracy_gd": ("fraction", "accuracy of GD fine-tuning on those episodes"),
    "accuracy_adam": ("fraction", "accuracy of Adam fine-tuning on those episodes"),
    "fact_logprob": ("nats", "mean log-probability of the correct fact value, no context"),
    "fact_rank": ("rank", "mean rank of the correct fact value (1 = best)"),
    "in_weights_logprob": ("nats", "mean log-probability of the fixed in-weights label"),
    "in_weights_rank": ("rank", "mean rank of the fixed in-weights label"),
    "format_accuracy": ("fraction", "zero-shot control: answers in the right token family"),
    "format_accuracy_icl": ("fraction", "its part on held-out ICL queries without demos"),
    "format_accuracy_facts": ("fraction", "its part on the fact keys"),
}
LM_EVAL_RUN_MEASURES = {  # runs-table column -> (task, metric, unit, meaning)
    "lm_eval_pne_icl_fewshot_acc": (
        "pne_icl_fewshot",
        "acc",
        "fraction",
        "lm-eval few-shot ICL classification accuracy",
    ),
    "lm_eval_pne_copy_cloze_exact_match": (
        "pne_copy_cloze",
        "exact_match",
        "fraction",
        "lm-eval copy cloze exact match (greedy)",
    ),
    "lm_eval_pne_heldout_rolling_word_perplexity": (
        "pne_heldout_rolling",
        "word_perplexity",
        "-",
        "lm-eval rolling perplexity per token",
    ),
}

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
        "b_simple_run",
        "float",
        "sequences",
        "gradient noise scale of the run, sum Tr(C) / sum |G|^2 over its steps "
        "(McCandlish et al. 2018, App. A)",
        nullable=True,
    ),
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
    _c(
        "reg_icl_area",
        "float",
        "-",
        "in-context regression: 1 - excess squared error over Bayes ridge relative to the "
        "zero predictor's, shots 1..k_max-1 (1 = Bayes-optimal, larger = better ICL)",
        nullable=True,
    ),
    _c(
        "reg_excess_area",
        "float",
        "squared error",
        "in-context regression: mean excess squared error over Bayes ridge, shots "
        "1..k_max-1 (0 = Bayes-optimal, lower = better ICL)",
        nullable=True,
    ),
    _c("plan_hash", "str", "-", "SHA-256 of the plan file the run was trained under"),
    _c("wall_time_s", "float", "s", "training wall time"),
    # The causal arms (issue 10): the registered noise options of the run's spec, and
    # how well its noise controller met them (meta.json ``noise_control``).
    _c("role", "str", "-", "condition | reference (a run registered as another arm's reference)"),
    _c("noise_form", "str", "-", "form of the added noise as registered ('none' without noise)"),
    _c("phase", "str", "-", "early | mid | late: window of the added P-NE* budget ('' if none)",
       nullable=True),
    _c("pne_budget", "float", "-", "registered level of the added P-NE* budget (NaN if none)",
       nullable=True),
    _c("reference_run", "str", "-", "run_id (same seed) whose trace the noise controller "
       "followed ('' if none)", nullable=True),
    _c("tracking_error_median", "float", "fraction", "median per-window relative error of the "
       "run's integrated P-NE* against its controller target (NaN without controller)",
       nullable=True),
    _c("pne_star_ratio_reference", "float", "-", "integrated P-NE* at the stop / the reference "
       "run's (NaN without reference)", nullable=True),
    _c("realised_budget", "float", "-", "added P-NE* in the phase window / registered budget "
       "(NaN without budget)", nullable=True),
    # End-of-run evaluation measures, one column each (above).
    *(_c(m, "float", u, d, nullable=True) for m, (u, d) in PROBE_RUN_MEASURES.items()),
    *(_c(c, "float", u, d, nullable=True) for c, (_, _, u, d) in LM_EVAL_RUN_MEASURES.items()),
)  # fmt: skip
NOISE_FORMS = ("none", "gaussian", "anisotropic", "student_t", "nap", "sgld", "precond_freeze")

# One row per (run, task, metric) of the lm-eval harness on one trained model
# (training.lm_eval_suite.lm_eval_scores; the run's lm_eval.parquet).
LM_EVAL = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("task", "str", "-", "lm-eval task name (training/lm_eval_tasks/<task>.yaml)"),
    _c("metric", "str", "-", "the task's registered metric (acc, exact_match, word_perplexity)"),
    _c("value", "float", "-", "the metric's value over the task's documents"),
    _c("stderr", "float", "-", "lm-eval's standard error (NaN where it gives none)", nullable=True),
    _c("n_docs", "int", "documents", "documents evaluated"),
)

# Exploratory slopes of the evaluation measures on log integrated P-NE* at matched loss
# (analysis.evaluation_slopes; results/tables/evaluation.csv): one row per measure.
EVALUATION = (
    _c("measure", "str", "-", "runs-table column of the measure (the outcome)"),
    _c("role", "str", "-", "zero_shot_control | icl | memorization | probe | lm_eval"),
    _c("predictor", "str", "-", "log(int_pne_star)"),
    _c("slope", "float", "measure / log unit", "mixed-model slope on the predictor", nullable=True),
    _c("se", "float", "measure / log unit", "its standard error", nullable=True),
    _c("ci_low", "float", "measure / log unit", "lower bound of its two-sided CI", nullable=True),
    _c("ci_high", "float", "measure / log unit", "upper bound of its two-sided CI", nullable=True),
    _c("p", "float", "-", "two-sided p of the slope (exploratory, uncorrected)", nullable=True),
    _c(
        "spearman_rho",
        "float",
        "-",
        "Spearman rho of the measure with the predictor",
        nullable=True,
    ),
    _c("n_runs", "int", "runs", "included runs with the measure"),
    _c("n_missing", "int", "runs", "included runs without it"),
    _c("method", "str", "-", "the model fitted (analysis.h1_monotonicity.mixed_slope)"),
)

# Per-layer breakdown of a logged step (added by the estimator, gradnoise.estimation.logger: the
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
    "layers": LAYERS,
    "lm_eval": LM_EVAL,
    "evaluation": EVALUATION,
    **REPORT_SCHEMAS,
}

# The values each column may hold (DESIGN §8); a column without an entry is checked
# for its type and nullability only. Kept apart from the column lists above so that a
# new column is one line there.
# The measures of the scores table, from the names declared above: training.evaluate's,
# the end-of-run probes of training.probe_scores (per-head scores carry their layer and
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
            _SCORE_MEASURES, "a measure of training.evaluate or training.probe_scores"
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
    writes such a row last (``training.train``); ``analysis.run_status`` checks that.
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
