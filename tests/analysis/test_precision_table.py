"""The precision H2 and H3 achieved and their power on the runs (issue 22, item 5;
analysis.exploratory.precision, analysis.report.precision_tables): the CI width against
what the plan registers, and the power of the registered tests simulated by the
registered power code with the observed SD, on hand-built inputs whose answer is known;
the inputs equal the registered tests' on simulated runs; the table through its
contract; the report's words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from output_checks import assert_markdown_table

from analysis.exploratory.power import power_h3
from analysis.exploratory.power_phase import power_h2
from analysis.exploratory.precision import (
    INPUT_COLUMNS,
    precision_sentence,
    precision_sentences,
    precision_table,
)
from analysis.hypotheses.arm_tests import arm_runs, h3_pairs, h3_tests
from analysis.hypotheses.h2_phase import late_minus_early
from analysis.report.pages import summary_rst
from analysis.report.precision_tables import precision_inputs, write_precision
from analysis.runs.simulate import causal_arm_specs, simulate_runs, sweep_specs
from preregistration.plan import load_plan
from preregistration.tables import TableError, columns, read_table, write_table

REPO = Path(__file__).resolve().parents[2]
PLAN_PATH = REPO / "preregistration/plan.yaml"
N_SIM = 2000


def h2_input(**changes) -> dict:
    """A hand-built H2 row: 6 seeds over 2 budget levels, CI of width 0.03."""
    row = dict(hypothesis="H2", test="two_way_anova_late_minus_early", outcome="icl_auc",
               estimate=0.02, ci_low=0.005, ci_high=0.035, ci_level=0.95, alpha=0.05,
               alternative="greater", margin=np.nan, n_runs=24, n_units=6, sd_difference=0.01,
               n_budgets=2, n_budgets_registered=2, n_seeds_registered=6, effect=0.02,
               effect_source="power.H2.effect", sd_planned=0.0158,
               method="within-seed contrast")  # fmt: skip
    return row | changes


def h3_input(**changes) -> dict:
    """A hand-built H3 row: 13 pairs, margin 0.02, 90 % CI of width 0.018."""
    row = dict(hypothesis="H3", test="paired_tost", outcome="icl_auc", estimate=0.001,
               ci_low=-0.008, ci_high=0.01, ci_level=0.9, alpha=0.05, alternative="equivalence",
               margin=0.02, n_runs=26, n_units=13, sd_difference=0.019, n_budgets=np.nan,
               n_budgets_registered=np.nan, n_seeds_registered=13, effect=0.0,
               effect_source="power.H3.effect", sd_planned=0.0223,
               method="paired TOST")  # fmt: skip
    return row | changes


def table_of(*rows: dict) -> pd.DataFrame:
    return precision_table(pd.DataFrame(list(rows)), n_sim=N_SIM, random_state=3)


def test_width_is_set_against_twice_the_margin_for_h3_and_the_effect_for_h2():
    out = table_of(h2_input(), h3_input()).set_index("hypothesis")
    assert out.at["H3", "ci_width"] == pytest.approx(0.018)
    assert out.at["H3", "reference"] == pytest.approx(0.04)
    assert out.at["H3", "width_ratio"] == pytest.approx(0.45)
    assert out.at["H2", "ci_width"] == pytest.approx(0.03)
    assert out.at["H2", "reference"] == pytest.approx(0.02)
    assert out.at["H2", "width_ratio"] == pytest.approx(1.5)
    assert out.at["H3", "unit"] == "pairs" and out.at["H2", "unit"] == "seeds"
    assert out.at["H2", "n_runs"] == 24 and out.at["H3", "n_units"] == 13


@pytest.mark.filterwarnings("ignore:divide by zero")  # no spread: t is infinite
def test_power_is_one_without_spread_and_alpha_without_effect():
    exact = table_of(
        h2_input(sd_difference=0.0, effect=0.5), h3_input(sd_difference=0.0, effect=0.0)
    )  # fmt: skip
    assert exact["power"].tolist() == [1.0, 1.0]
    # no late - early contrast: the one-sided test rejects at its level alpha
    null = table_of(h2_input(effect=0.0, n_seeds_registered=10)).iloc[0]
    assert null["power"] == pytest.approx(0.05, abs=3 * np.sqrt(0.05 * 0.95 / N_SIM))
    # a true difference at the margin: the TOST shows equivalence at most alpha of the time
    edge = table_of(h3_input(effect=0.02, sd_difference=0.004, n_seeds_registered=30)).iloc[0]
    assert edge["power"] == pytest.approx(0.05, abs=3 * np.sqrt(0.05 * 0.95 / N_SIM))


def test_power_is_the_registered_power_codes_at_the_registered_seeds_and_observed_sd():
    out = table_of(h2_input(n_budgets=4, n_budgets_registered=3), h3_input())
    h2, h3 = out.iloc[0], out.iloc[1]
    # H2's residual SD is the one that gives the observed SD of the per-seed contrasts
    assert h2["sd_power"] == pytest.approx(0.01 * np.sqrt(2))
    want = power_h2(0.02, 0.01 * np.sqrt(2), 6, 3, 0.05, "greater", N_SIM, 3).iloc[0]
    assert h2["power"] == want["power"] and h2["n_sim"] == N_SIM
    want = power_h3(0.019, 0.02, 13, 0.0, 0.05, N_SIM, 3).iloc[0]
    assert h3["power"] == want["power"] and h3["sd_power"] == 0.019
    # the observed SD, not the planned one, enters: a larger SD gives less power
    wider = table_of(h3_input(sd_difference=0.03)).iloc[0]
    assert wider["power"] < h3["power"]


def test_a_test_that_did_not_run_and_a_scale_with_one_seed_say_why():
    why = "not run (1 seed(s) with both early and late runs; the contrast needs 2)"
    blank = {c: np.nan for c in ("estimate", "ci_low", "ci_high", "sd_difference")}
    out = table_of(h2_input(**blank, n_runs=0, n_units=0, method=why),
                   h3_input(n_seeds_registered=1))  # fmt: skip
    h2, h3 = out.iloc[0], out.iloc[1]
    assert np.isnan(h2["power"]) and h2["method"] == why and h2["n_sim"] == 0
    assert precision_sentence(h2) == f"H2: {why}; no precision or power from the runs."
    assert np.isnan(h3["power"]) and "registers 1 seed(s); the test needs 2" in h3["method"]
    assert "power at the registered seeds not computed (the scale registers 1 seed(s)" in (
        precision_sentence(h3)
    )
    with pytest.raises(ValueError, match="H1"):
        precision_table(pd.DataFrame([h3_input(hypothesis="H1")]))
    with pytest.raises(ValueError, match="sd_difference"):
        precision_table(pd.DataFrame([h3_input()]).drop(columns="sd_difference"))


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_the_words_are_the_rows_numbers():
    out = table_of(h2_input(), h3_input(sd_difference=0.0))
    h2, h3 = precision_sentences(out)
    assert h3.startswith(
        "H3 (paired TOST of icl_auc, 13 pairs, 26 runs): 90 % CI width 0.018 against the "
        "equivalence region's 0.04 (2 x margin 0.02), ratio 0.45; power at the registered 13 "
        "seeds with the observed SD of the paired differences 0 (the registered power "
        "analysis assumed 0.0223), under no true difference: 1 "
    )
    assert h2.startswith(
        "H2 (late - early contrast of icl_auc, 6 seeds, 24 runs): 95 % CI width 0.03 against "
        "the smallest contrast of interest (power.H2.effect) 0.02, ratio 1.5; power at the "
        "registered 6 seeds with the observed residual SD 0.01 (the registered power analysis "
        f"assumed 0.0158), under a true contrast of 0.02: {out.at[0, 'power']:.3g} "
    )


@pytest.fixture(scope="module")
def plan() -> dict:
    return load_plan(PLAN_PATH)


@pytest.fixture(scope="module")
def runs(plan) -> pd.DataFrame:
    specs = causal_arm_specs(sweep_specs(plan), injection_seeds=list(range(6)))
    return simulate_runs(
        plan, "cpu", icl_slope=0.03, sd_seed=0.01, sd_resid=0.008, specs=specs,
        phase_effect=0.03, injection_diff={"gaussian": 0.004, "anisotropic": -0.01},
    )  # fmt: skip


def test_inputs_are_the_registered_tests_on_the_runs(plan, runs):
    inputs = precision_inputs(runs, plan, "cpu").set_index("hypothesis")
    assert list(inputs.reset_index().columns) == list(INPUT_COLUMNS)
    hyp2, hyp3 = plan["hypotheses"]["H2"], plan["hypotheses"]["H3"]
    data, _, _ = arm_runs(runs, hyp2)
    ref = late_minus_early(data, alternative=hyp2["sidedness"]).iloc[0]
    h2 = inputs.loc["H2"]
    assert (h2.ci_low, h2.ci_high, h2.n_units) == (ref.ci_low, ref.ci_high, ref.n_blocks)
    means = data[data["phase"].isin(["early", "late"])].groupby(["seed", "phase"])["icl_auc"]
    d = means.mean().unstack().eval("late - early")
    assert h2.sd_difference == pytest.approx(d.std(ddof=1), rel=1e-12)
    t3 = h3_tests(runs, hyp3, 0.05)
    row = t3[t3["label"] == "confirmatory"].iloc[0]
    h3 = inputs.loc["H3"]
    assert (h3.ci_low, h3.ci_high, h3.n_units, h3.margin) == (
        row.ci_low, row.ci_high, row.n_pairs, hyp3["margin"]
    )  # fmt: skip
    wide, _ = h3_pairs(runs, hyp3, "icl_auc")
    pairs = wide[wide["noise_form"] == hyp3["noise_form"]]
    diffs = pairs["y_reference"] - pairs["y_injected"]
    assert h3.sd_difference == pytest.approx(diffs.std(ddof=1), rel=1e-12)
    # the seeds the scale registers, not the ones run (6 here)
    cpu = plan["design"]["scales"]["cpu"]["arms"]
    assert h3.n_seeds_registered == len(cpu["noise_injection"]["seeds"][hyp3["noise_form"]])
    assert h2.n_seeds_registered == len(cpu["phase_schedule"]["seeds"])
    assert h2.effect == plan["power"]["H2"]["effect"]
    assert h3.effect == plan["power"]["H3"]["effect"]


def test_written_table_satisfies_its_contract_and_damage_is_refused(runs, tmp_path: Path):
    paths = write_precision(runs, PLAN_PATH, "cpu", tmp_path)
    assert [p.name for p in paths] == ["precision.csv", "precision.md"]
    table = read_table(tmp_path / "precision.csv", "precision")
    assert table["hypothesis"].tolist() == ["H2", "H3"]
    assert table["power"].between(0, 1).all() and (table["n_sim"] > 0).all()
    assert_markdown_table(tmp_path / "precision.md", columns("precision"), len(table))
    text = (tmp_path / "precision.md").read_text()
    for sentence in precision_sentences(table):
        assert sentence in text
    damaged = table.copy()
    damaged.loc[0, "power"] = 1.5
    with pytest.raises(TableError, match="power"):
        write_table(damaged, "precision", tmp_path / "damaged.csv")
    damaged = table.copy()
    damaged.loc[1, "unit"] = "runs"
    with pytest.raises(TableError, match="unit"):
        write_table(damaged, "precision", tmp_path / "damaged.csv")


def test_report_opens_with_the_words_beside_h2_and_h3(runs, tmp_path: Path):
    write_precision(runs, PLAN_PATH, "cpu", tmp_path)
    audit = {"passed": True, "scale": "cpu", "plan_sha256": "ab" * 32, "deviations": [],
             "locked_at": "2026-12-07T00:00:00+00:00", "checks": []}  # fmt: skip
    (tmp_path / "audit.json").write_text(json.dumps(audit))
    write_table(pd.DataFrame(columns=columns("tests")), "tests", tmp_path / "t1.csv")
    pd.DataFrame({"run_id": ["a"], "excluded": [False], "exclusion_reason": [""]}).to_csv(
        tmp_path / "t2.csv", index=False
    )
    deviations = REPO / "preregistration/deviations.yaml"
    args = (tmp_path / "audit.json", tmp_path / "t1.csv", tmp_path / "t2.csv", deviations)
    text = summary_rst(*args, precision_path=tmp_path / "precision.csv")
    title = "Precision achieved and power on the runs (exploratory, beside H2 and H3)"
    assert text.index("(T1)") < text.index(title) < text.index("Runs: 1")
    assert text.count("- H2 (late - early contrast of icl\\_auc") == 1
    assert text.count("- H3 (paired TOST of icl\\_auc, 6 pairs, 12 runs): 90 \\% CI width") == 1
    assert title not in summary_rst(*args)
