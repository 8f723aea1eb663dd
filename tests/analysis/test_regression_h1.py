"""H1 on the regression family: the registered exploratory replication
(analysis.report.regression_tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.report.regression_tables import NAME, h1_regression
from preregistration.plan import load_plan
from tests.conftest import REPO

PLAN = load_plan(REPO / "preregistration/plan.yaml")


def _runs(slope: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(3):
        for i, b in enumerate((8, 16, 32, 64)):
            exposure = 2.0 ** (3 - i) * (1 + 0.05 * s)
            rows.append({
                "run_id": f"reg_bs{b}_fixed_s{s}", "condition": f"reg_bs{b}_fixed",
                "arm": "regression_sweep", "seed": s, "excluded": False,
                "int_pne_star": exposure, "final_val_loss": 0.9 + 0.005 * rng.standard_normal(),
                "reg_icl_area": 0.3 + slope * np.log(exposure) + 0.01 * s
                + 0.005 * rng.standard_normal(),
            })  # fmt: skip
    rows.append({**rows[0], "run_id": "bs8_fixed_s0", "arm": "batch_sweep", "reg_icl_area": np.nan})
    return pd.DataFrame(rows)


def test_mixed_slope_recovers_a_positive_trend_labelled_exploratory():
    table = h1_regression(_runs(0.05), PLAN, n_boot=200, n_perm=99)
    slope = table[table["analysis"] == "mixed_effects_slope"].iloc[0]
    assert slope["estimate"] == pytest.approx(0.05, abs=0.01)
    assert slope["p"] < 0.01 and slope["n_runs"] == 12  # the batch_sweep run is not used
    assert set(table["label"]) == {"exploratory"} and set(table["hypothesis"]) == {NAME}


def test_no_trend_gives_no_evidence():
    slope = h1_regression(_runs(0.0, seed=0), PLAN, n_boot=200, n_perm=99).iloc[0]
    assert slope["p"] > 0.05


def test_a_missing_outcome_names_the_run():
    runs = _runs(0.05)
    runs.loc[2, "reg_icl_area"] = np.nan
    with pytest.raises(ValueError, match="reg_bs32_fixed_s0"):
        h1_regression(runs, PLAN, n_boot=50, n_perm=19)


def test_per_shot_table_is_the_scores_rows_side_by_side():
    from analysis.report.regression_tables import per_shot_table
    from preregistration.tables import validate

    stems = ("model", "ridge", "ols", "knn", "avg", "zero")
    scores = pd.DataFrame(
        [{"run_id": "reg_bs8_fixed_s1", "measure": f"reg_{stem}_error", "shots": k,
          "value": 10.0 * i + k, "chance": float(k), "n_items": 4}
         for i, stem in enumerate(stems) for k in range(3)]
        + [{"run_id": "bs8_fixed_s1", "measure": "icl_accuracy", "shots": 1, "value": 0.5,
            "chance": 0.25, "n_items": 4}]
    )  # fmt: skip
    runs = pd.DataFrame({"run_id": ["reg_bs8_fixed_s1", "bs8_fixed_s1"],
                         "condition": ["reg_bs8_fixed", "bs8_fixed"], "seed": [1, 1]})  # fmt: skip
    table = validate(per_shot_table(scores, runs), "regression_shots", source="test")
    assert table["shot"].tolist() == [0, 1, 2] and set(table["run_id"]) == {"reg_bs8_fixed_s1"}
    for i, stem in enumerate(stems):
        assert table[f"{stem}_error"].tolist() == [10.0 * i + k for k in range(3)]
