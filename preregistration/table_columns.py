"""The columns of the scores, runs, lm-eval and evaluation tables: name, type, unit, meaning.

``SCORES`` and ``LM_EVAL`` (one trained model's), the study's ``RUNS`` table and the
exploratory ``EVALUATION`` table, with the measure names they are built from; the
per-step tables (``STEPS``, the P-NE trace, and ``LAYERS``) are in
``preregistration.trace_columns``. ``preregistration.tables`` turns them into
contracts (with the values each column may hold) and reads and writes the tables;
what each table is, is listed in its docstring.
"""

from __future__ import annotations

from preregistration.contracts import Column

_c = Column  # _c(name, dtype, unit, meaning[, nullable]): one line per column


ACCURACY_MEASURES = ("icl_accuracy", "fact_recall", "in_weights_accuracy")
EVALUATE_MEASURES = (*ACCURACY_MEASURES, "induction_score", "val_loss")

SCORES = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c(
        "measure",
        "str",
        "-",
        f"{' | '.join(EVALUATE_MEASURES)} (training.evaluation.scores), "
        "or an end-of-run probe (training.evaluation.probes' docstring)",
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

# End-of-run evaluation measures of a run (analysis.runs.measures reads them from the
# run's probes.parquet and lm_eval.parquet; NaN when the run has no such file). Each
# column is named after its measure: the probe measures of training.evaluation.probes, and
# lm_eval_<task>_<metric> for the project's lm-eval tasks (training.evaluation.lm_eval_suite).
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
# (training.evaluation.lm_eval_suite.lm_eval_scores; the run's lm_eval.parquet).
LM_EVAL = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("task", "str", "-", "lm-eval task name (training/evaluation/lm_eval_tasks/<task>.yaml)"),
    _c("metric", "str", "-", "the task's registered metric (acc, exact_match, word_perplexity)"),
    _c("value", "float", "-", "the metric's value over the task's documents"),
    _c("stderr", "float", "-", "lm-eval's standard error (NaN where it gives none)", nullable=True),
    _c("n_docs", "int", "documents", "documents evaluated"),
)

# Exploratory slopes of the evaluation measures on log integrated P-NE* at matched loss
# (analysis.exploratory.evaluation; results/tables/evaluation.csv): one row per measure.
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
    _c("method", "str", "-", "the model fitted (analysis.stats.mixed_model.mixed_slope)"),
)

# Per-layer breakdown of a logged step (added by the estimator, gradnoise.estimation.logger: the
# ``layers`` entry of NoiseLogger's record). A layer is a module (parameter name without
# its last component); trace_pcp, pne, pne_star and pne_eff sum over layers to the step's
# totals in the steps table.
