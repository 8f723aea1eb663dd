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
"""

from __future__ import annotations

from preregistration.contracts import (
    COUNT,
    FINITE,
    NONNEGATIVE,
    PROBABILITY,
    Column,
    Domain,
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
