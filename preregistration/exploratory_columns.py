"""The columns of the exploratory tables of issue 22, declared once (``report_tables``
registers them beside the others).

clock_runs         per run: integrated P-NE* against the step-size clock sum eta_t / B_t
clock_summary      per arm: how far log P-NE* follows log clock; H1's slope with the clock
precision          H2 and H3: the CI width achieved against the registered margin, and the
                   power at the registered seeds with the runs' SD
regression_shots   per (run, shot) of the regression family: the squared error of the model
                   and of each baseline, and the model's excess over Bayes ridge
regression_excess  per (condition, shot) of the regression family over its seeds: the excess
                   over Bayes ridge and the model's error relative to the zero predictor's

and of issue 21's Counterfactual Noise Replay (CNR; exploratory, deviation D10):

cnr_predictions    per (case, horizon, candidate, method, metric): the predicted change
cnr_retrains       per (case, horizon, retrained candidate, metric): the realised change
cnr_validation     per (method, metric, horizon): the predictions against the retrains
"""

from __future__ import annotations

from preregistration.contracts import (
    COUNT,
    FINITE,
    NONNEGATIVE,
    POSITIVE_COUNT,
    PROBABILITY,
    Column,
    Domain,
    from_plan,
    one_of,
)


def _c(name: str, dtype: str, unit: str, meaning: str, nullable: bool = False) -> Column:
    return Column(name, dtype, unit, meaning, nullable)


# What P-NE* is made of (issue 22 item 4, deviation D6; analysis.exploratory.clock): per run
# the integrated P-NE* against the step-size clock, and per arm what follows from it.
CLOCK_RUNS = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("arm", "str", "-", "registered arm"),
    _c("condition", "str", "-", "registered condition name"),
    _c("seed", "int", "-", "seed of initialization and data order"),
    _c("excluded", "bool", "-", "excluded by a registered rule (left out of clock_summary)"),
    _c("n_steps", "int", "optimizer steps", "the run's last logged step"),
    _c("n_logged", "int", "steps", "logged steps of the run"),
    _c("int_pne_star", "float", "-", "integrated P-NE* at the last logged step"),
    _c("int_clock", "float", "1/sequences", "step-size clock: sum of eta_t / B_t over every "
       "step up to the last logged one"),
    _c("noise_fraction", "float", "-", "int_pne_star / int_clock: the clock-weighted mean "
       "noise fraction Tr(PCP) / Tr(PFP)", nullable=True),
    _c("noise_fraction_fisher", "float", "-", "int_pne_star_fisher / int_clock (empirical "
       "Fisher denominator)", nullable=True),
    _c("noise_fraction_ggn", "float", "-", "int_pne_star_ggn / int_clock (NaN when the run did "
       "not log the GGN)", nullable=True),
    _c("noise_fraction_true_fisher", "float", "-", "int_pne_star_true_fisher / int_clock (NaN "
       "when the run did not log the true Fisher)", nullable=True),
    _c("median_step_fraction", "float", "-", "median over logged steps of pne_star_t / (eta_t "
       "/ B_t), the noise fraction where it was estimated", nullable=True),
)  # fmt: skip
CLOCK_RUNS_VALUES: dict[str, Domain] = {
    "seed": COUNT,
    "n_steps": COUNT,
    "n_logged": COUNT,
    "int_pne_star": NONNEGATIVE,
    "int_clock": NONNEGATIVE,
    "noise_fraction": NONNEGATIVE,
    "noise_fraction_fisher": NONNEGATIVE,
    "noise_fraction_ggn": NONNEGATIVE,
    "noise_fraction_true_fisher": NONNEGATIVE,
    "median_step_fraction": NONNEGATIVE,
}

CLOCK_SUMMARY = (
    _c("analysis", "str", "-", "correlation | spread | noise_fraction | slope"),
    _c("scope", "str", "-", "the arm, or 'pooled: <arms>' for the pooled slopes"),
    _c("measure", "str", "-", "what ``estimate`` is"),
    _c("estimate", "float", "-", "Pearson's r on logs, max / min ratio, median ratio or slope",
       nullable=True),
    _c("ci_low", "float", "-", "lower bound (Fisher-z or t CI; the minimum for a median ratio)",
       nullable=True),
    _c("ci_high", "float", "-", "upper bound (the maximum for a median ratio)", nullable=True),
    _c("p", "float", "-", "two-sided p (correlation, slope)", nullable=True),
    _c("n_runs", "int", "runs", "included runs the value uses"),
    _c("n_groups", "int", "-", "seeds among them"),
    _c("method", "str", "-", "how the value was estimated, or why it was not", nullable=True),
)  # fmt: skip
CLOCK_SUMMARY_VALUES: dict[str, Domain] = {
    "analysis": one_of("correlation", "spread", "noise_fraction", "slope"),
    "ci_low": FINITE,
    "ci_high": FINITE,
    "p": PROBABILITY,
    "n_runs": COUNT,
    "n_groups": COUNT,
}

# The precision H2 and H3 achieved and their power on the runs' variance (issue 22, item 5;
# exploratory; analysis.exploratory.precision.precision_table). One row per hypothesis.
PRECISION = (
    _c("hypothesis", "str", "-", "H2 | H3"),
    _c("test", "str", "-", "the registered test"),
    _c("outcome", "str", "-", "outcome column of the runs table"),
    _c("estimate", "float", "-", "late - early contrast (H2), mean paired difference "
       "reference - injected (H3)", nullable=True),
    _c("ci_low", "float", "-", "lower bound of the test's CI", nullable=True),
    _c("ci_high", "float", "-", "upper bound of the test's CI", nullable=True),
    _c("ci_level", "float", "fraction", "1 - alpha (H2, two-sided), 1 - 2 alpha (H3)"),
    _c("ci_width", "float", "-", "ci_high - ci_low", nullable=True),
    _c("reference", "float", "-", "what the width is set against: 2 x margin (H3), the "
       "smallest contrast of interest (H2)"),
    _c("reference_measure", "str", "-", "what ``reference`` is"),
    _c("width_ratio", "float", "-", "ci_width / reference", nullable=True),
    _c("n_runs", "int", "runs", "included runs the test used"),
    _c("n_units", "int", "-", "seeds with both phases (H2) or pairs (H3) the test used"),
    _c("unit", "str", "-", "seeds | pairs"),
    _c("sd_difference", "float", "-", "SD of the per-seed contrasts (H2) or paired "
       "differences (H3) in the runs", nullable=True),
    _c("sd_power", "float", "-", "SD the power simulation takes (H2: residual SD = "
       "sd_difference x sqrt(budget levels / 2); H3: sd_difference)", nullable=True),
    _c("sd_planned", "float", "-", "the registered power analysis's SD on sd_power's scale",
       nullable=True),
    _c("n_seeds_registered", "int", "seeds", "seeds the scale registers for the test"),
    _c("effect", "float", "-", "effect of the registered power analysis (H2: contrast; H3: "
       "true difference)"),
    _c("effect_source", "str", "-", "plan key of ``effect``, or the default taken"),
    _c("power", "float", "fraction", "share of simulated studies at n_seeds_registered that "
       "reject (H2) or show equivalence (H3), with sd_power", nullable=True),
    _c("mc_se", "float", "fraction", "Monte-Carlo standard error of power", nullable=True),
    _c("n_sim", "int", "-", "simulated studies (0 when power was not computed)"),
    _c("method", "str", "-", "the test's method, or why it or the power did not run"),
)  # fmt: skip
PRECISION_VALUES: dict[str, Domain] = {
    "hypothesis": one_of("H2", "H3"),
    "ci_low": FINITE,
    "ci_high": FINITE,
    "ci_level": PROBABILITY,
    "ci_width": NONNEGATIVE,
    "reference": NONNEGATIVE,
    "width_ratio": NONNEGATIVE,
    "n_runs": COUNT,
    "n_units": COUNT,
    "unit": one_of("seeds", "pairs"),
    "sd_difference": NONNEGATIVE,
    "sd_power": NONNEGATIVE,
    "sd_planned": NONNEGATIVE,
    "n_seeds_registered": COUNT,
    "effect": FINITE,
    "power": PROBABILITY,
    "mc_se": NONNEGATIVE,
    "n_sim": COUNT,
}

# The in-context regression family's predictors by their stem: the trained model and
# the baselines it is compared with. Each is a measure reg_<stem>_error of the scores
# table (preregistration.tables) and a column <stem>_error here.
REGRESSION_PREDICTORS = {
    "model": "the trained transformer",
    "ridge": "Bayes ridge, lambda = sigma^2 / tau^2",
    "ols": "minimum-norm least squares",
    "knn": "3-nearest neighbours",
    "avg": "averaging, x . mean(y_i x_i)",
    "zero": "the prior mean 0",
}

# The in-context regression family's errors per shot, one row per run and shot
# (analysis.report.regression_tables.per_shot_table, from the reg_<stem>_error rows of the scores).
REGRESSION_SHOTS = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("condition", "str", "-", "registered condition name"),
    _c("seed", "int", "-", "seed of initialization and data order"),
    _c("shot", "int", "demonstrations", "in-context examples before the query"),
    *(
        _c(f"{stem}_error", "float", "squared error", f"{what}: mean (prediction - y)^2")
        for stem, what in REGRESSION_PREDICTORS.items()
    ),
    _c("excess_error", "float", "squared error", "model_error - ridge_error: the excess over "
       "Bayes ridge"),
)  # fmt: skip
REGRESSION_SHOTS_VALUES: dict[str, Domain] = {
    "seed": COUNT,
    "shot": COUNT,
    **{f"{stem}_error": NONNEGATIVE for stem in REGRESSION_PREDICTORS},
    "excess_error": FINITE,
}

# The regression family per condition and shot over its included seeds (issue 22, item 1;
# analysis.report.regression_tables.excess_table): the excess over Bayes ridge and the
# model's error relative to the zero predictor's.
REGRESSION_EXCESS = (
    _c("condition", "str", "-", "registered condition name"),
    _c("shot", "int", "demonstrations", "in-context examples before the query"),
    _c("n_seeds", "int", "seeds", "included seeds of the condition"),
    _c("excess_mean", "float", "squared error", "mean over seeds of model_error - "
       "ridge_error"),
    _c("excess_min", "float", "squared error", "smallest over seeds of model_error - "
       "ridge_error"),
    _c("excess_max", "float", "squared error", "largest over seeds of model_error - "
       "ridge_error"),
    _c("model_error", "float", "squared error", "mean over seeds of the model's error"),
    _c("ridge_error", "float", "squared error", "mean over seeds of Bayes ridge's error"),
    _c("zero_error", "float", "squared error", "mean over seeds of the zero predictor's error"),
    _c("model_over_zero_mean", "float", "-", "mean over seeds of model_error / zero_error",
       nullable=True),
    _c("model_over_zero_max", "float", "-", "largest over seeds of model_error / zero_error",
       nullable=True),
)  # fmt: skip
REGRESSION_EXCESS_VALUES: dict[str, Domain] = {
    "shot": COUNT,
    "n_seeds": COUNT,
    "excess_mean": FINITE,
    "excess_min": FINITE,
    "excess_max": FINITE,
    "model_error": NONNEGATIVE,
    "ridge_error": NONNEGATIVE,
    "zero_error": NONNEGATIVE,
    "model_over_zero_mean": NONNEGATIVE,
    "model_over_zero_max": NONNEGATIVE,
}


# Counterfactual Noise Replay (seed 002 §4, issue 21, deviation D10; exploratory, never in the
# confirmatory family). A case is one switch point of one base run: (base_run, switch_fraction).
# The replay job (training/replay/, rule in workflow/rules/cnr.smk) writes per base run a
# predictions.csv and a retrains.csv; analysis.exploratory.cnr.gather_cnr reads them through
# these contracts and rule cnr_tables writes them gathered, beside cnr_validation.
CNR_METHODS = {
    "adamw": "CNR: the AdamW update linearised along the recorded trajectory",
    "sgd": "baseline: the Jacobian of a plain SGD step (no preconditioner)",
    "identity": "baseline: J = I (each step's noise change carried forward unchanged)",
    "no_change": "baseline: predicts a change of 0",
}
CNR_ROLES = ("candidate", "noise_floor", "recorded")
CORRELATION = Domain("a correlation in [-1, 1]", low=-1.0, high=1.0)

_CNR_CASE = (
    _c("base_run", "str", "-", "the base run replayed, condition_s<seed> (e.g. "
       "inj_gaussian_bs64_s0)"),
    _c("condition", "str", "-", "registered condition of the base run"),
    _c("seed", "int", "-", "seed of the base run"),
    _c("switch_fraction", "float", "fraction", "registered switch point: a fraction of the "
       "base run's steps (plan replay.switch_points)"),
    _c("switch_step", "int", "optimizer steps", "the recorded checkpoint the replay starts "
       "from: the last at or before switch_fraction x the run's steps"),
    _c("horizon", "int", "optimizer steps", "steps after the switch at which the metric is "
       "read (plan replay.horizons)"),
)  # fmt: skip
_CNR_CASE_VALUES: dict[str, Domain] = {
    "seed": COUNT,
    "switch_fraction": PROBABILITY,
    "switch_step": COUNT,
    "horizon": POSITIVE_COUNT,
}

CNR_PREDICTIONS = (
    *_CNR_CASE,
    _c("candidate", "str", "-", "the counterfactual noise (plan replay.candidates, or "
       "fresh_draw_<i>: the recorded form with a fresh draw)"),
    _c("role", "str", "-", "candidate (a registered candidate) | noise_floor (a fresh draw)"),
    _c("method", "str", "-", "adamw (CNR) | sgd | identity | no_change (the baselines)"),
    _c("metric", "str", "-", "the metric predicted (plan replay.metrics)"),
    _c("predicted_change", "float", "metric units", "predicted metric under the candidate "
       "minus under the recorded noise, horizon steps after the switch"),
    _c("interval_low", "float", "metric units", "lower bound of the prediction interval (0 "
       "for no_change)"),
    _c("interval_high", "float", "metric units", "upper bound of the prediction interval (0 "
       "for no_change)"),
    _c("level", "float", "fraction", "nominal level of the interval (plan "
       "replay.interval_level)"),
    _c("cost_s", "float", "s", "wall seconds of the replay work of this case and method, "
       "shared by its candidates (0 for no_change)"),
)  # fmt: skip
CNR_PREDICTIONS_VALUES: dict[str, Domain] = {
    **_CNR_CASE_VALUES,
    "role": one_of("candidate", "noise_floor"),
    "method": one_of(*CNR_METHODS),
    "metric": from_plan("replay", "metrics"),
    "predicted_change": FINITE,
    "interval_low": FINITE,
    "interval_high": FINITE,
    "level": PROBABILITY,
    "cost_s": NONNEGATIVE,
}

# The expected (second-order) predictions of ``python -m training.replay predict
# --expected-out``: E[f~] - E[f] under the candidate's covariance against the recorded one.
CNR_EXPECTED = (
    *_CNR_CASE,
    _c("candidate", "str", "-", "the counterfactual noise (its covariance; a fresh draw's is "
       "the recorded one)"),
    _c("method", "str", "-", "adamw (CNR) | sgd | identity: the Jacobian propagating the "
       "covariance"),
    _c("metric", "str", "-", "the metric predicted (plan replay.metrics)"),
    _c("predicted_change", "float", "metric units", "predicted E[metric] under the candidate "
       "minus under the recorded noise: curvature + mean_shift"),
    _c("curvature", "float", "metric units", "1/2 tr(H_f (C~ - C)), the probes' mean"),
    _c("mean_shift", "float", "metric units", "grad f . w: the second-moment channel (adamw "
       "only; 0 for the baselines)"),
    _c("interval_low", "float", "metric units", "lower bound of the interval of the expected "
       "change (probes' spread, normal)"),
    _c("interval_high", "float", "metric units", "upper bound of that interval"),
    _c("run_low", "float", "metric units", "lower quantile of one candidate run against one "
       "recorded-noise run"),
    _c("run_high", "float", "metric units", "upper quantile of one candidate run against one "
       "recorded-noise run"),
    _c("level", "float", "fraction", "nominal level of both intervals"),
    _c("n_probes", "int", "-", "random probes per covariance"),
    _c("cost_s", "float", "s", "wall seconds of the expected prediction at this horizon, all "
       "candidates and Jacobians"),
)  # fmt: skip
CNR_EXPECTED_VALUES: dict[str, Domain] = {
    **_CNR_CASE_VALUES,
    "method": one_of("adamw", "sgd", "identity"),
    "metric": from_plan("replay", "metrics"),
    "predicted_change": FINITE,
    "curvature": FINITE,
    "mean_shift": FINITE,
    "interval_low": FINITE,
    "interval_high": FINITE,
    "run_low": FINITE,
    "run_high": FINITE,
    "level": PROBABILITY,
    "n_probes": COUNT,
    "cost_s": NONNEGATIVE,
}

CNR_RETRAINS = (
    *_CNR_CASE,
    _c("candidate", "str", "-", "the noise retrained with: a registered candidate, "
       "fresh_draw_<i>, or recorded (the recorded noise itself)"),
    _c("role", "str", "-", "candidate | noise_floor (a fresh draw) | recorded"),
    _c("metric", "str", "-", "the metric read (plan replay.metrics)"),
    _c("value", "float", "metric units", "the metric after the retrain's first horizon steps"),
    _c("realised_change", "float", "metric units", "value minus the recorded retrain's value "
       "at the same horizon and metric (0 for recorded)"),
    _c("cost_s", "float", "s", "wall seconds of the whole retrain (every horizon), the same on "
       "each of its rows"),
)  # fmt: skip
CNR_RETRAINS_VALUES: dict[str, Domain] = {
    **_CNR_CASE_VALUES,
    "role": one_of(*CNR_ROLES),
    "metric": from_plan("replay", "metrics"),
    "value": FINITE,
    "realised_change": FINITE,
    "cost_s": NONNEGATIVE,
}

# The predictions against the retrains (analysis.exploratory.cnr.cnr_validation): one row per
# (method, metric, horizon) over the registered candidates (role candidate) of every case.
CNR_VALIDATION = (
    _c("method", "str", "-", "adamw (CNR) | sgd | identity | no_change"),
    _c("metric", "str", "-", "the metric (plan replay.metrics)"),
    _c("horizon", "int", "optimizer steps", "steps after the switch"),
    _c("n_cases", "int", "cases", "(base run, switch point) pairs with a candidate row"),
    _c("n_rows", "int", "-", "candidate rows (cases x candidates) the statistics use"),
    _c("spearman", "float", "-", "Spearman's rho of predicted and realised change, pooled "
       "over the candidates of every case (NaN when the predictions are constant)",
       nullable=True),
    _c("spearman_ci_low", "float", "-", "lower bound of the percentile bootstrap CI of "
       "spearman, cases resampled (NaN with fewer than 2 cases)", nullable=True),
    _c("spearman_ci_high", "float", "-", "upper bound of that CI", nullable=True),
    _c("ci_level", "float", "fraction", "level of the bootstrap CI"),
    _c("median_case_spearman", "float", "-", "Spearman's rho within each case across its "
       "candidates, the median over cases", nullable=True),
    _c("coverage", "float", "fraction", "share of realised changes inside [interval_low, "
       "interval_high] (NaN for no_change)", nullable=True),
    _c("interval_level", "float", "fraction", "nominal level of those intervals, for "
       "comparison with coverage (NaN for no_change)", nullable=True),
    _c("sign_agreement", "float", "fraction", "share of rows with sign(predicted) = "
       "sign(realised) (NaN for no_change)", nullable=True),
    _c("mae", "float", "metric units", "mean |predicted - realised|"),
    _c("relative_error", "float", "-", "mae / mean_abs_realised (NaN when that is 0)",
       nullable=True),
    _c("mean_abs_realised", "float", "metric units", "mean |realised change| of the "
       "candidates (the mae of no_change)"),
    _c("noise_floor_sd", "float", "metric units", "RMS of the fresh draws' realised changes at "
       "this metric and horizon over every case: how much a fresh draw alone moves the "
       "metric (NaN without fresh draws)", nullable=True),
    _c("n_floor", "int", "-", "fresh-draw rows noise_floor_sd uses"),
    _c("share_above_floor", "float", "fraction", "share of the candidates' realised changes "
       "with |change| > 2 noise_floor_sd", nullable=True),
    _c("replay_s", "float", "s", "mean over cases of the method's cost_s"),
    _c("retrain_s", "float", "s", "mean over cases of the summed cost_s of the candidate "
       "retrains, each retrain counted once"),
    _c("cost_ratio", "float", "-", "replay_s / retrain_s (NaN when retrain_s is 0)",
       nullable=True),
)  # fmt: skip
CNR_VALIDATION_VALUES: dict[str, Domain] = {
    "method": one_of(*CNR_METHODS),
    "metric": from_plan("replay", "metrics"),
    "horizon": POSITIVE_COUNT,
    "n_cases": COUNT,
    "n_rows": COUNT,
    "spearman": CORRELATION,
    "spearman_ci_low": CORRELATION,
    "spearman_ci_high": CORRELATION,
    "ci_level": PROBABILITY,
    "median_case_spearman": CORRELATION,
    "coverage": PROBABILITY,
    "interval_level": PROBABILITY,
    "sign_agreement": PROBABILITY,
    "mae": NONNEGATIVE,
    "relative_error": NONNEGATIVE,
    "mean_abs_realised": NONNEGATIVE,
    "noise_floor_sd": NONNEGATIVE,
    "n_floor": COUNT,
    "share_above_floor": PROBABILITY,
    "replay_s": NONNEGATIVE,
    "retrain_s": NONNEGATIVE,
    "cost_ratio": NONNEGATIVE,
}
