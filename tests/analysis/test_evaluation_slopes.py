"""The exploratory table of evaluation measures against P-NE*: a slope planted in a measure
at matched loss is recovered within its CI, a measure unrelated to exposure gets a CI
covering 0, and a measure no run has is reported as not estimated, never dropped."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.exploratory.evaluation import ROLES, evaluation_slopes
from analysis.runs.simulate import simulate_runs
from preregistration.plan import load_plan
from preregistration.tables import validate


def test_planted_slopes_are_recovered_and_missing_measures_reported():
    plan = load_plan("preregistration/plan.yaml")
    runs = simulate_runs(plan, "cpu", seeds=[0, 1, 2, 3], arms=["batch_sweep"])
    rng = np.random.default_rng(0)
    log_e = np.log(runs["int_pne_star"].to_numpy())
    runs["induction_head_score"] = 0.3 + 0.05 * log_e + 0.002 * rng.normal(size=len(runs))
    runs["format_accuracy"] = 0.9 + 0.002 * rng.normal(size=len(runs))  # unrelated to exposure
    table = validate(evaluation_slopes(runs), "evaluation").set_index("measure")
    assert list(table.index) == list(ROLES)
    induction = table.loc["induction_head_score"]
    assert induction.ci_low <= 0.05 <= induction.ci_high
    assert induction.slope == pytest.approx(0.05, abs=0.01)
    assert induction.p < 1e-6 and induction.spearman_rho > 0.9
    control = table.loc["format_accuracy"]
    assert control.ci_low <= 0 <= control.ci_high
    included = int((~runs["excluded"]).sum())
    assert control.n_runs == included and control.n_missing == 0
    sam = table.loc["sam_sharpness"]  # not simulated: every run lacks it
    assert np.isnan(sam.slope) and sam.n_runs == 0 and sam.n_missing == included
    assert sam.method.startswith("not estimated")
