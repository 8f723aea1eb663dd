"""The tables the analysis reports (CSV beside a rounded Markdown copy), declared once
(the last eight in ``preregistration.exploratory_columns``, registered here).

tests           T1, one row per statistical test the analysis ran (the audit reads it)
h1              every H1 analysis, confirmatory and exploratory (``h1.csv``)
inventory       T2, every run with its exclusion and whether the design lists it
equivalence     T3, the H3 paired TOSTs (and their loss-matching control)
loss_matching   T4, each condition's final loss against target +- tolerance
sensitivity     the estimator-sensitivity table (curvature proxy, eta vs eta^2, clipping)
power           simulated power of H1, H2 and H3 by number of seeds
noise_control   per run of the causal arms: tracking error, P-NE* ratio, phase budgets
clock_runs      per run: integrated P-NE* against the step-size clock sum eta_t / B_t
clock_summary   per arm: how far log P-NE* follows log clock; H1's slope with the clock
precision       H2 and H3: the CI width achieved against the registered margin, and the
                power at the registered seeds with the runs' SD
regression_shots one row per (run, shot) of the regression family: the squared error of
                the model and of each baseline, and the model's excess over Bayes ridge
regression_excess one row per (condition, shot) of the regression family: the excess over
                Bayes ridge and the model's error relative to the zero predictor's, over seeds
cnr_predictions one row per (replay case, horizon, candidate, method, metric) of the
                Counterfactual Noise Replay: the change in the metric it predicts, with its
                interval (the replay job's predictions.csv, gathered)
cnr_expected    one row per (replay case, horizon, candidate, method, metric) of the expected
                (second-order) predictions of ``python -m training.replay predict
                --expected-out``: the change of E[metric] and its parts and intervals
cnr_retrains    one row per (replay case, horizon, retrained candidate, metric): the
                metric after retraining from the switch point and its change against the
                recorded noise's retrain (the replay job's retrains.csv, gathered)
cnr_validation  one row per (method, metric, horizon) of the replay: rank correlation,
                interval coverage, sign agreement and error of the predictions against the
                retrains, the noise floor of a fresh draw, and the cost of each

A row of a test that did not run keeps its text columns and leaves
the numbers missing, so most numeric columns here are nullable.
"""

from __future__ import annotations

from preregistration.contracts import (
    COUNT,
    FINITE,
    NONNEGATIVE,
    PROBABILITY,
    Column,
    Domain,
    from_plan,
    matching,
    one_of,
)
from preregistration.exploratory_columns import (  # the exploratory tables of issues 22, 21
    CLOCK_RUNS,
    CLOCK_RUNS_VALUES,
    CLOCK_SUMMARY,
    CLOCK_SUMMARY_VALUES,
    CNR_EXPECTED,
    CNR_EXPECTED_VALUES,
    CNR_PREDICTIONS,
    CNR_PREDICTIONS_VALUES,
    CNR_RETRAINS,
    CNR_RETRAINS_VALUES,
    CNR_VALIDATION,
    CNR_VALIDATION_VALUES,
    PRECISION,
    PRECISION_VALUES,
    REGRESSION_EXCESS,
    REGRESSION_EXCESS_VALUES,
    REGRESSION_SHOTS,
    REGRESSION_SHOTS_VALUES,
)


def _c(name: str, dtype: str, unit: str, meaning: str, nullable: bool = False) -> Column:
    return Column(name, dtype, unit, meaning, nullable)


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
TESTS_VALUES: dict[str, Domain] = {
    "label": one_of("confirmatory", "control", "exploratory"),
    "sidedness": one_of("greater", "less", "two-sided", "equivalence"),
    "alpha": PROBABILITY,
    "margin": NONNEGATIVE,
    "ci_low": FINITE,
    "ci_high": FINITE,
    "p": PROBABILITY,
    "p_holm": PROBABILITY,
    "n_runs": COUNT,
    "decision": matching(
        r"supported|not supported|exploratory|not run \(.*\)",
        "supported | not supported | not run (reason) | exploratory",
    ),
}

_SIDES = ("greater", "less", "two-sided")
_LABELS = ("confirmatory", "control", "exploratory")

H1 = (
    _c("hypothesis", "str", "-", "H1"),
    _c("analysis", "str", "-", "which H1 analysis (mixed slope, isotonic, Page, Spearman, ...)",
       nullable=True),
    _c("label", "str", "-", "confirmatory (the registered test) | exploratory"),
    _c("outcome", "str", "-", "outcome column of the runs table", nullable=True),
    _c("predictor", "str", "-", "exposure column (log scale where the method says)",
       nullable=True),
    _c("estimate", "float", "-", "slope, trend statistic or rho", nullable=True),
    _c("ci_low", "float", "-", "lower confidence bound", nullable=True),
    _c("ci_high", "float", "-", "upper confidence bound", nullable=True),
    _c("ci_level", "float", "fraction", "confidence level of the interval", nullable=True),
    _c("statistic", "float", "-", "test statistic (z, L, ...)", nullable=True),
    _c("df", "float", "-", "degrees of freedom, where the test has them", nullable=True),
    _c("p", "float", "-", "p-value as the test defines it", nullable=True),
    _c("alternative", "str", "-", "greater | less | two-sided", nullable=True),
    _c("n_runs", "int", "runs", "included runs the analysis used", nullable=True),
    _c("n_groups", "int", "-", "seeds (random-effect groups) or conditions", nullable=True),
    _c("method", "str", "-", "the method, or why the analysis did not run"),
)  # fmt: skip
H1_VALUES: dict[str, Domain] = {
    "label": one_of("confirmatory", "exploratory"),
    "ci_low": FINITE,
    "ci_high": FINITE,
    "ci_level": PROBABILITY,
    "p": PROBABILITY,
    "alternative": one_of(*_SIDES),
    "n_runs": COUNT,
    "n_groups": COUNT,
}

INVENTORY = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("condition", "str", "-", "registered condition name"),
    _c("arm", "str", "-", "registered arm"),
    _c("seed", "int", "-", "seed of initialization and data order"),
    _c("global_batch", "int", "sequences", "B = m * K * W"),
    _c("lr_rule", "str", "-", "fixed | sqrt | linear"),
    _c("lr_peak", "float", "-", "peak learning rate"),
    _c("status", "str", "-", "how training stopped (plan stopping.statuses)"),
    _c("steps", "int", "optimizer steps", "optimizer steps taken"),
    _c("tokens", "int", "tokens", "training tokens seen"),
    _c("final_val_loss", "float", "nats/token", "validation loss at the end", nullable=True),
    _c("int_pne_star", "float", "-", "integrated P-NE* (potential)"),
    _c("icl_auc", "float", "-", "area under ICL accuracy vs log2(1+shots)", nullable=True),
    _c("memorization", "float", "-", "mean of fact recall and in-weights accuracy",
       nullable=True),
    _c("excluded", "bool", "-", "excluded by a registered rule"),
    _c("exclusion_reason", "str", "-", "the rule that excluded the run ('' if none)"),
    _c("in_design", "bool", "-", "the plan's design lists this (condition, seed)"),
    _c("plan_hash", "str", "-", "SHA-256 of the plan the run was trained under"),
)  # fmt: skip
INVENTORY_VALUES: dict[str, Domain] = {
    "seed": COUNT,
    "global_batch": COUNT,
    "lr_rule": one_of("fixed", "sqrt", "linear"),
    "lr_peak": NONNEGATIVE,
    "status": from_plan("stopping", "statuses"),
    "steps": COUNT,
    "tokens": COUNT,
    "final_val_loss": NONNEGATIVE,
    "int_pne_star": NONNEGATIVE,
    "icl_auc": PROBABILITY,
    "memorization": PROBABILITY,
}

EQUIVALENCE = (
    _c("hypothesis", "str", "-", "H3"),
    _c("label", "str", "-", "confirmatory (ICL, registered form) | exploratory (ICL, other "
       "forms) | control (final loss)"),
    _c("noise_form", "str", "-", "noise form of the injected runs of the pairing",
       nullable=True),
    _c("outcome", "str", "-", "outcome column of the runs table"),
    _c("condition_a", "str", "-", "the reference (small-batch) condition of the pairing",
       nullable=True),
    _c("condition_b", "str", "-", "the matched injected-noise condition", nullable=True),
    _c("n_pairs", "int", "seeds", "seeds with both conditions", nullable=True),
    _c("estimate", "float", "-", "mean paired difference a - b", nullable=True),
    _c("ci_low", "float", "-", "lower bound of the 1 - 2 alpha CI", nullable=True),
    _c("ci_high", "float", "-", "upper bound of the 1 - 2 alpha CI", nullable=True),
    _c("ci_level", "float", "fraction", "1 - 2 alpha", nullable=True),
    _c("margin", "float", "-", "equivalence margin delta"),
    _c("p", "float", "-", "TOST p = max of the two one-sided p", nullable=True),
    _c("equivalent", "bool", "-", "p < alpha", nullable=True),
    _c("method", "str", "-", "the method, or why the test did not run"),
)  # fmt: skip
EQUIVALENCE_VALUES: dict[str, Domain] = {
    "label": one_of(*_LABELS),
    "n_pairs": COUNT,
    "ci_level": PROBABILITY,
    "margin": NONNEGATIVE,
    "p": PROBABILITY,
}

LOSS_MATCHING = (
    _c("condition", "str", "-", "registered condition name"),
    _c("arm", "str", "-", "registered arm"),
    _c("n_runs", "int", "runs", "included runs of the condition"),
    _c("mean", "float", "nats/token", "mean final validation loss"),
    _c("sd", "float", "nats/token", "standard deviation (NaN with one run)", nullable=True),
    _c("target", "float", "nats/token", "registered target validation loss"),
    _c("estimate", "float", "nats/token", "mean - target"),
    _c("ci_low", "float", "nats/token", "lower bound of the 1 - 2 alpha CI", nullable=True),
    _c("ci_high", "float", "nats/token", "upper bound of the 1 - 2 alpha CI", nullable=True),
    _c("ci_level", "float", "fraction", "1 - 2 alpha"),
    _c("margin", "float", "nats/token", "registered tolerance"),
    _c("p", "float", "-", "TOST p (NaN with fewer than 2 runs)", nullable=True),
    _c("equivalent", "bool", "-", "p < alpha"),
)  # fmt: skip
LOSS_MATCHING_VALUES: dict[str, Domain] = {
    "n_runs": COUNT,
    "mean": NONNEGATIVE,
    "sd": NONNEGATIVE,
    "target": NONNEGATIVE,
    "estimate": FINITE,
    "ci_level": PROBABILITY,
    "margin": NONNEGATIVE,
    "p": PROBABILITY,
}

SENSITIVITY = (
    _c("analysis", "str", "-", "which estimator choice is compared"),
    _c("scope", "str", "-", "per run, across runs, ..."),
    _c("condition", "str", "-", "condition or run the row is about ('' across runs)",
       nullable=True),
    _c("measure", "str", "-", "what ``value`` is"),
    _c("value", "float", "-", "the measure's value", nullable=True),
    _c("ci_low", "float", "-", "lower bootstrap bound", nullable=True),
    _c("ci_high", "float", "-", "upper bootstrap bound", nullable=True),
    _c("n", "int", "-", "runs or steps the value uses"),
    _c("note", "str", "-", "what the reader should know about the row", nullable=True),
)  # fmt: skip
SENSITIVITY_VALUES: dict[str, Domain] = {"n": COUNT}

POWER = (
    _c("hypothesis", "str", "-", "H1 | H2 | H3"),
    _c("n_seeds", "int", "seeds", "seeds per condition (H1, H2) or per pairing (H3)"),
    _c("power", "float", "fraction", "share of simulated studies that reject (H1, H2) or "
       "show equivalence (H3)"),
    _c("mc_se", "float", "fraction", "Monte-Carlo standard error of power"),
    _c("effect", "float", "-", "simulated effect (slope; late - early contrast for H2; "
       "difference for H3)"),
    _c("effect_source", "str", "-", "pilot estimate | assumed | no difference | H3 margin"),
    _c("sd_group", "float", "-", "seed intercept SD of the pilot mixed model"),
    _c("sd_resid", "float", "-", "residual SD of the pilot mixed model"),
    _c("target_power", "float", "fraction", "the power aimed at"),
    _c("sufficient", "bool", "-", "power >= target_power"),
    _c("chosen", "bool", "-", "the smallest sufficient number of seeds"),
)  # fmt: skip
POWER_VALUES: dict[str, Domain] = {
    "n_seeds": COUNT,
    "power": PROBABILITY,
    "mc_se": NONNEGATIVE,
    "effect": FINITE,
    "sd_group": NONNEGATIVE,
    "sd_resid": NONNEGATIVE,
    "target_power": PROBABILITY,
}

# Per run of the causal arms: how the noise controller met its registration
# (meta.json noise_control) and whether the phase budgets of a level agree.
NOISE_CONTROL = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("arm", "str", "-", "registered arm"),
    _c("condition", "str", "-", "registered condition name"),
    _c("seed", "int", "-", "seed of initialization and data order"),
    _c("noise_form", "str", "-", "registered noise form"),
    _c("phase", "str", "-", "window of the added budget ('' if none)", nullable=True),
    _c("pne_budget", "float", "-", "registered budget level (NaN if none)", nullable=True),
    _c("excluded", "bool", "-", "excluded by a registered rule"),
    _c("tracking_error_median", "float", "fraction", "median per-window tracking error",
       nullable=True),
    _c("pne_star_ratio_reference", "float", "-", "integrated P-NE* / the reference run's",
       nullable=True),
    _c("realised_budget", "float", "-", "added P-NE* in the window / registered budget",
       nullable=True),
    _c("budget_vs_other_phases", "float", "fraction", "realised budget / mean of the other "
       "phases' at the same seed and level, minus 1 (NaN without phase)", nullable=True),
    _c("tracking_ok", "bool", "-", "tracking error <= 10 % (NaN without controller)",
       nullable=True),
    _c("ratio_ok", "bool", "-", "integrated P-NE* within 5 % of the reference (NaN without "
       "reference)", nullable=True),
    _c("phase_budget_ok", "bool", "-", "|budget_vs_other_phases| <= 5 % (NaN without phase)",
       nullable=True),
)  # fmt: skip
NOISE_CONTROL_VALUES: dict[str, Domain] = {
    "seed": COUNT,
    "pne_budget": NONNEGATIVE,
    "tracking_error_median": NONNEGATIVE,
    "pne_star_ratio_reference": NONNEGATIVE,
    "realised_budget": NONNEGATIVE,
    "budget_vs_other_phases": FINITE,
}

REPORT_SCHEMAS: dict[str, tuple[Column, ...]] = {
    "tests": TESTS,
    "h1": H1,
    "inventory": INVENTORY,
    "equivalence": EQUIVALENCE,
    "loss_matching": LOSS_MATCHING,
    "sensitivity": SENSITIVITY,
    "power": POWER,
    "noise_control": NOISE_CONTROL,
    "clock_runs": CLOCK_RUNS,
    "clock_summary": CLOCK_SUMMARY,
    "precision": PRECISION,
    "regression_shots": REGRESSION_SHOTS,
    "regression_excess": REGRESSION_EXCESS,
    "cnr_predictions": CNR_PREDICTIONS,
    "cnr_expected": CNR_EXPECTED,
    "cnr_retrains": CNR_RETRAINS,
    "cnr_validation": CNR_VALIDATION,
}
REPORT_VALUES: dict[str, dict[str, Domain]] = {
    "tests": TESTS_VALUES,
    "h1": H1_VALUES,
    "inventory": INVENTORY_VALUES,
    "equivalence": EQUIVALENCE_VALUES,
    "loss_matching": LOSS_MATCHING_VALUES,
    "sensitivity": SENSITIVITY_VALUES,
    "power": POWER_VALUES,
    "noise_control": NOISE_CONTROL_VALUES,
    "clock_runs": CLOCK_RUNS_VALUES,
    "clock_summary": CLOCK_SUMMARY_VALUES,
    "precision": PRECISION_VALUES,
    "regression_shots": REGRESSION_SHOTS_VALUES,
    "regression_excess": REGRESSION_EXCESS_VALUES,
    "cnr_predictions": CNR_PREDICTIONS_VALUES,
    "cnr_expected": CNR_EXPECTED_VALUES,
    "cnr_retrains": CNR_RETRAINS_VALUES,
    "cnr_validation": CNR_VALIDATION_VALUES,
}
