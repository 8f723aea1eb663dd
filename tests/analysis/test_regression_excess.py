"""The regression family's excess over Bayes ridge per condition and shot (issue 22, item 1;
analysis.report.regression_tables.excess_table): the means, ranges and ratios against a
hand computation on a hand-built per-shot table, excluded runs left out; the report's
sentence at k = 2d for a passing and a failing study; the tables through their contracts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from output_checks import assert_markdown_table

from analysis.report.regression_tables import (
    ZERO_FRACTION,
    excess_table,
    half_zero_sentence,
    per_shot_table,
    write_excess_table,
    write_per_shot_table,
)
from analysis.runs.simulate import simulate_runs
from preregistration.exploratory_columns import REGRESSION_PREDICTORS
from preregistration.plan import load_plan
from preregistration.tables import TableError, columns, read_table, write_table

REPO = Path(__file__).resolve().parents[2]
PLAN_PATH = REPO / "preregistration/plan.yaml"
BATCHES = (8, 16, 32, 64)


def shots_frame(model_over_zero: dict[int, float], n_seeds: int = 3, k_max: int = 8):
    """Per-shot errors of runs reg_bs<B>_fixed_s<s>: zero predictor 1 + k / 10, ridge
    0.1 + 0.5 / (1 + k), model = ridge + (zero - ridge) x share, where the share is
    ``model_over_zero[B]`` at shot 6 scaled by (1 + s / 10) for seed s, and 1 at
    shot 0; one run per (condition, seed) and a run that a rule excluded (s = 9)."""
    rows = []
    for b, share in model_over_zero.items():
        for s in [*range(n_seeds), 9]:
            for k in range(k_max):
                zero, ridge = 1 + k / 10, 0.1 + 0.5 / (1 + k)
                q = 1.0 if k == 0 else share * (1 + s / 10)
                rows.append({"run_id": f"reg_bs{b}_fixed_s{s}", "condition": f"reg_bs{b}_fixed",
                             "seed": s, "shot": k, "zero_error": zero, "ridge_error": ridge,
                             "model_error": ridge + (zero - ridge) * q})  # fmt: skip
    shots = pd.DataFrame(rows)
    runs = shots[["run_id"]].drop_duplicates().assign(excluded=lambda f: f.run_id.str.endswith("9"))
    return shots, runs


def test_excess_per_condition_and_shot_is_the_hand_computation():
    shots, runs = shots_frame({8: 0.2, 64: 0.4})
    table = excess_table(shots, runs)
    assert list(table.columns) == columns("regression_excess")
    assert len(table) == 2 * 8 and set(table["n_seeds"]) == {3}
    row = table[(table["condition"] == "reg_bs64_fixed") & (table["shot"] == 6)].iloc[0]
    zero, ridge = 1.6, 0.1 + 0.5 / 7
    excess = [(zero - ridge) * 0.4 * (1 + s / 10) for s in range(3)]  # seed 9 excluded
    ratio = [(ridge + e) / zero for e in excess]
    assert row["excess_mean"] == pytest.approx(np.mean(excess), rel=1e-12)
    assert row["excess_min"] == pytest.approx(min(excess), rel=1e-12)
    assert row["excess_max"] == pytest.approx(max(excess), rel=1e-12)
    assert row["model_over_zero_mean"] == pytest.approx(np.mean(ratio), rel=1e-12)
    assert row["model_over_zero_max"] == pytest.approx(max(ratio), rel=1e-12)
    assert row["model_error"] == pytest.approx(ridge + np.mean(excess), rel=1e-12)
    assert (row["ridge_error"], row["zero_error"]) == pytest.approx((ridge, zero))
    first = table[table["shot"] == 0]  # no demonstration: the model is the zero predictor
    assert first["model_over_zero_mean"].tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="zero_error"):
        excess_table(shots.drop(columns="zero_error"), runs)


def test_the_sentence_at_2d_shots_passes_and_fails_on_the_numbers():
    passing = excess_table(*shots_frame({8: 0.2, 16: 0.3}))
    text = half_zero_sentence(passing, 3, "regression_sweep")
    assert text.startswith(
        "At k = 2d = 6 shots (d = 3) the models' squared error of regression_sweep is at most "
        "half the zero predictor's in every condition (model / zero predictor error, mean over "
        "seeds, "
    )
    at6 = passing[passing["shot"] == 6]
    assert f"{at6['model_over_zero_mean'].min():.3g}-" in text
    assert f"largest single run {at6['model_over_zero_max'].max():.3g}" in text
    assert ZERO_FRACTION == 0.5
    # reg_bs64: model / zero at 6 shots ~0.70 > 0.5 (reg_bs8 ~0.30)
    failing = excess_table(*shots_frame({8: 0.2, 64: 0.6}))
    ratio = failing.query("shot == 6 and condition == 'reg_bs64_fixed'")["model_over_zero_mean"]
    text = half_zero_sentence(failing, 3)
    assert text.startswith(
        "At k = 2d = 6 shots (d = 3) the models' squared error is not at most half the zero "
        f"predictor's in every condition: above half in 1 of 2 (reg_bs64_fixed {ratio.iloc[0]:.3g})"
    )
    # d = 5: k = 10 is past the evaluated shots 0-7
    assert half_zero_sentence(passing, 5) == (
        "At k = 2d = 10 shots (d = 5): not evaluated; the runs give shots 0-7."
    )


def scores_and_runs(plan: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A runs table of the regression family (the simulated batch sweep's fixed-LR runs,
    renamed) and its scores: every predictor's error per shot, the model's a share of the
    way from ridge to zero that grows with the batch."""
    runs = simulate_runs(plan, "cpu", arms=["batch_sweep"])
    runs = runs[runs["lr_rule"] == "fixed"].copy()
    runs["arm"], runs["condition"] = "regression_sweep", "reg_" + runs["condition"]
    runs["run_id"] = runs["condition"] + "_s" + runs["seed"].astype(str)
    runs["excluded"] = False
    rows = []
    for r in runs.itertuples():
        for k in range(8):
            zero, ridge = 1.06, 0.0625 + 1 / (1 + k)
            errors = {"zero": zero, "ridge": ridge, "ols": ridge * 2, "knn": zero, "avg": zero}
            errors["model"] = ridge + (zero - ridge) * r.global_batch / 128
            rows += [{"run_id": r.run_id, "measure": f"reg_{stem}_error", "shots": k,
                      "value": errors[stem], "chance": zero, "n_items": 64}
                     for stem in REGRESSION_PREDICTORS]  # fmt: skip
    return pd.DataFrame(rows), runs.reset_index(drop=True)


def test_written_tables_satisfy_their_contracts_and_damage_is_refused(tmp_path: Path):
    plan = load_plan(PLAN_PATH)
    scores, runs = scores_and_runs(plan)
    write_table(scores, "scores", tmp_path / "scores.parquet")
    write_table(runs, "runs", tmp_path / "runs.parquet", plan=plan)
    write_per_shot_table(tmp_path / "scores.parquet", tmp_path / "runs.parquet", PLAN_PATH,
                         tmp_path)  # fmt: skip
    paths = write_excess_table(
        tmp_path / "scores.parquet", tmp_path / "runs.parquet", PLAN_PATH, "cpu", tmp_path
    )
    assert [p.name for p in paths] == ["regression_excess.csv", "regression_excess.md"]
    shots = read_table(tmp_path / "regression_shots.csv", "regression_shots")
    assert shots["excess_error"].tolist() == pytest.approx(
        (shots["model_error"] - shots["ridge_error"]).tolist()
    )
    table = read_table(tmp_path / "regression_excess.csv", "regression_excess")
    assert len(table) == runs["condition"].nunique() * 8
    assert_markdown_table(tmp_path / "regression_excess.md", columns("regression_excess"),
                          len(table))  # fmt: skip
    d = plan["design"]["scales"]["cpu"]["arms"]["regression_sweep"]["task"]["d"]
    text = (tmp_path / "regression_excess.md").read_text()
    assert half_zero_sentence(table, d, "regression_sweep") in text
    assert "is not at most half the zero predictor's in every condition" in text  # reg_bs64: ~0.60
    damaged = table.copy()
    damaged.loc[0, "zero_error"] = -1.0
    with pytest.raises(TableError, match="zero_error"):
        write_table(damaged, "regression_excess", tmp_path / "damaged.csv")
    with pytest.raises(TableError, match="excess_error"):
        write_table(shots.drop(columns="excess_error"), "regression_shots", tmp_path / "d.csv")


def test_per_shot_table_carries_the_excess():
    plan = load_plan(PLAN_PATH)
    scores, runs = scores_and_runs(plan)
    table = per_shot_table(scores, runs)
    assert table["excess_error"].tolist() == pytest.approx(
        (table["model_error"] - table["ridge_error"]).tolist()
    )
    row = table[(table["run_id"] == "reg_bs8_fixed_s0") & (table["shot"] == 3)].iloc[0]
    assert row["excess_error"] == pytest.approx((1.06 - 0.0625 - 1 / 4) * 8 / 128, rel=1e-12)
