"""The power routine predicts the empirical power of the registered tests.

Under a simulated effect, the share of simulated studies in which the actual
confirmatory routine rejects must match ``analysis.exploratory.power``'s prediction within
Monte-Carlo error (3 combined standard errors); for H1 without covariates the
prediction must also match the closed form (noncentral t).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.exploratory.power import (
    power_h1,
    power_h2,
    power_h3,
    seeds_needed,
    variance_components,
)
from analysis.hypotheses.h2_phase import late_minus_early
from analysis.hypotheses.h3_equivalence import paired_tost
from analysis.runs.simulate import simulate_runs
from analysis.stats.mixed_model import mixed_slope
from preregistration.plan import load_plan

PLAN = Path(__file__).resolve().parents[2] / "preregistration" / "plan.yaml"
SLOPE, SD_SEED, SD_RESID = 0.006, 0.02, 0.02


def assert_agrees(empirical: np.ndarray, predicted: float, n_predicted: int) -> None:
    rate = float(np.mean(empirical))
    se = np.sqrt(predicted * (1 - predicted) * (1 / len(empirical) + 1 / n_predicted))
    print(f"empirical power {rate:.3f} ({len(empirical)} studies), predicted {predicted:.3f}")
    assert abs(rate - predicted) <= 3 * se, f"empirical {rate:.3f} vs predicted {predicted:.3f}"


@pytest.fixture(scope="module")
def plan() -> dict:
    return load_plan(PLAN)


@pytest.fixture(scope="module")
def design(plan) -> pd.DataFrame:
    return simulate_runs(plan, "cpu", arms=["batch_sweep"])


def _levels(design: pd.DataFrame) -> np.ndarray:
    return np.log(design.groupby("condition")["int_pne_star"].mean().to_numpy())


def test_h1_power_matches_noncentral_t(design):
    levels = _levels(design)
    n_seeds = 3
    pred = power_h1(levels, SLOPE, SD_SEED, SD_RESID, n_seeds, n_covariates=0, n_sim=8000)
    sxx = n_seeds * np.sum((levels - levels.mean()) ** 2)
    dof = n_seeds * len(levels) - n_seeds - 1
    ncp = SLOPE * np.sqrt(sxx) / SD_RESID
    exact = stats.nct.sf(stats.t.ppf(0.95, dof), dof, ncp)
    assert 0.2 < exact < 0.9  # a design where power is informative
    p = pred.at[0, "power"]
    assert abs(p - exact) <= 3 * np.sqrt(exact * (1 - exact) / 8000)


@pytest.mark.slow
def test_h1_empirical_power_of_mixed_model_matches_prediction(design):
    """Studies simulated with a true slope, analysed by the registered routine."""
    levels = _levels(design)
    pred = power_h1(levels, SLOPE, SD_SEED, SD_RESID, 3, n_covariates=1, n_sim=8000)
    rng = np.random.default_rng(11)
    # the exposures the routine sees are the condition means the prediction used
    x = design["condition"].map(dict(zip(sorted(design.condition.unique()), levels, strict=True)))
    seeds = design["seed"].to_numpy()
    reject = []
    for _ in range(1000):
        runs = design[["seed"]].copy()
        runs["int_pne_star"] = np.exp(x.to_numpy())
        runs["final_val_loss"] = 2.0 + 0.02 * rng.uniform(-1, 1, len(runs))
        runs["icl_auc"] = (
            0.5
            + SLOPE * x.to_numpy()
            + rng.normal(0, SD_SEED, 3)[seeds]
            + rng.normal(0, SD_RESID, len(runs))
        )
        reject.append(mixed_slope(runs).at[0, "p"] < 0.05)
    assert_agrees(np.array(reject), pred.at[0, "power"], 8000)


@pytest.mark.slow
def test_h3_empirical_power_of_paired_tost_matches_prediction():
    sd_diff, margin, n = 0.008, 0.02, 4
    pred = power_h3(sd_diff, margin, n, true_diff=0.005, n_sim=8000).at[0, "power"]
    assert 0.2 < pred < 0.9
    rng = np.random.default_rng(12)
    reject = []
    for _ in range(1000):
        a = 0.5 + rng.normal(0, 0.02, n)
        b = a - 0.005 - rng.normal(0, sd_diff, n)
        df = pd.DataFrame(
            {
                "condition": ["a"] * n + ["b"] * n,
                "seed": list(range(n)) * 2,
                "icl_auc": np.concatenate([a, b]),
            }
        )
        reject.append(paired_tost(df, "icl_auc", ("a", "b"), margin).at[0, "p"] < 0.05)
    assert_agrees(np.array(reject), pred, 8000)


def test_variance_components_recover_the_simulation(plan):
    pilot = simulate_runs(
        plan, "cpu", icl_slope=0.0, sd_seed=0.03, sd_resid=0.01, seeds=range(12),
        arms=["batch_sweep"],
    )  # fmt: skip
    vc = variance_components(pilot).iloc[0]
    assert vc["sd_resid"] == pytest.approx(0.01, rel=0.2)
    assert vc["sd_group"] == pytest.approx(0.03, rel=0.5)


def test_seeds_needed_picks_the_first_design_with_target_power(plan):
    pilot = simulate_runs(
        plan, "cpu", icl_slope=0.01, sd_seed=0.02, sd_resid=0.02, arms=["batch_sweep"]
    )
    table = seeds_needed(pilot, plan, "H1", effect=0.01, target_power=0.8, max_seeds=15)
    assert table["power"].is_monotonic_increasing or table["power"].diff().min() > -0.03
    chosen = table[table["chosen"]]
    assert len(chosen) == 1
    n = int(chosen["n_seeds"].iloc[0])
    assert (table.loc[table["n_seeds"] < n, "power"] < 0.8).all()
    assert table.loc[table["n_seeds"] == n, "power"].iloc[0] >= 0.8
    h3 = seeds_needed(pilot, plan, "H3", target_power=0.8, max_seeds=12)
    assert set(h3["hypothesis"]) == {"H3"} and h3["n_seeds"].min() == 2


def test_h2_power_matches_noncentral_t():
    effect, sd, n, budgets = 0.02, 0.016, 5, 2
    pred = power_h2(effect, sd, n, budgets, n_sim=40000, random_state=3).at[0, "power"]
    ncp = effect / (sd * np.sqrt(2 / budgets)) * np.sqrt(n)
    exact = stats.nct.sf(stats.t.ppf(0.95, n - 1), n - 1, ncp)
    assert pred == pytest.approx(exact, abs=3 * np.sqrt(exact * (1 - exact) / 40000))


@pytest.mark.slow
def test_h2_empirical_power_of_late_minus_early_matches_prediction():
    effect, sd, n, budgets = 0.02, 0.016, 4, 2
    pred = power_h2(effect, sd, n, budgets, n_sim=8000).at[0, "power"]
    assert 0.2 < pred < 0.9
    rng = np.random.default_rng(21)
    reject = []
    shift = {"early": -0.5, "mid": 0.0, "late": 0.5}
    for _ in range(600):
        u = rng.normal(0, 0.03, n)  # seed intercepts: cancel within seed
        runs = pd.DataFrame(
            [
                {"seed": s, "pne_budget": b, "phase": ph,
                 "icl_auc": 0.5 + 0.01 * b + u[s] + effect * shift[ph] + rng.normal(0, sd)}
                for s in range(n) for b in range(1, budgets + 1) for ph in shift
            ]
        )  # fmt: skip
        reject.append(late_minus_early(runs).at[0, "p"] < 0.05)
    assert_agrees(np.array(reject), pred, 8000)


def test_seeds_needed_for_h2_and_h3_ends_at_the_first_sufficient_design(plan):
    pilot = simulate_runs(
        plan, "cpu", icl_slope=0.01, sd_seed=0.01, sd_resid=0.016, arms=["batch_sweep"]
    )
    for key, source in (("H2", "H3 margin"), ("H3", "no difference")):
        table = seeds_needed(pilot, plan, key, max_seeds=40, n_sim=2000, until_sufficient=True)
        chosen = table[table["chosen"]]
        assert len(chosen) == 1 and chosen.index[0] == table.index[-1], key
        assert (table["power"].iloc[:-1] < 0.8).all() and chosen["power"].iloc[0] >= 0.8
        assert table["effect_source"].iloc[0] == source
    h2 = seeds_needed(pilot, plan, "H2", n_sim=2000, until_sufficient=True)
    assert h2["effect"].iloc[0] == plan["hypotheses"]["H3"]["margin"]
