"""Table contracts: a table that violates its contract fails naming file, column and rows.

Also: every declared table has a pandera schema carrying unit and meaning; validation
converts nothing; the import layers of pyproject.toml hold.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.runs.simulate import simulate_runs
from preregistration.plan import load_plan
from preregistration.scores import icl_auc, summarize_scores
from preregistration.tables import (
    SCHEMAS,
    TableError,
    columns,
    describe,
    read_table,
    schema,
    validate,
    write_table,
)

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "preregistration" / "plan.yaml"


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return simulate_runs(load_plan(PLAN), "cpu", n_excluded=2)


def _fails(df: pd.DataFrame, path: Path, table: str = "runs") -> str:
    """Write ``df`` unvalidated, read it back through the contract, return the error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    with pytest.raises(TableError) as info:
        read_table(path, table)
    return str(info.value)


def _line(message: str, column: str) -> str:
    """The line of the message about ``column``."""
    lines = [line for line in message.splitlines() if f"'{column}'" in line]
    assert lines, f"no line names column {column!r} in:\n{message}"
    return lines[0]


def test_simulated_runs_satisfy_the_contract_unchanged(runs):
    out = validate(runs, "runs")
    pd.testing.assert_frame_equal(out, runs[columns("runs")])  # nothing converted


def test_accuracy_above_one_names_file_column_and_rows(runs, tmp_path):
    bad = runs.copy()
    bad.loc[[3, 11], "icl_auc"] = 1.2
    path = tmp_path / "tables" / "runs.parquet"
    message = _fails(bad, path)
    assert message.startswith(str(path))
    line = _line(message, "icl_auc")
    assert "[0, 1]" in line and "row(s) 3, 11" in line and "1.2" in line
    assert "'fact_recall'" not in message  # only the failing column is named


def test_negative_exposure_names_file_column_and_row(runs, tmp_path):
    bad = runs.copy()
    bad.loc[5, "int_pne_star_eff"] = -1e-4
    path = tmp_path / "runs.csv"
    message = _fails(bad, path)
    line = _line(message, "int_pne_star_eff")
    assert message.startswith(str(path)) and ">= 0" in line and "row(s) 5;" in line


def test_infinite_exposure_is_refused(runs, tmp_path):
    bad = runs.copy()
    bad.loc[0, "int_pne"] = np.inf
    assert "row(s) 0;" in _line(_fails(bad, tmp_path / "runs.parquet"), "int_pne")


def test_unknown_status_names_the_plans_statuses(runs, tmp_path):
    bad = runs.copy()
    bad.loc[7, "status"] = "crashed"
    line = _line(_fails(bad, tmp_path / "runs.parquet"), "status")
    statuses = load_plan(PLAN)["stopping"]["statuses"]
    assert all(s in line for s in statuses) and "row(s) 7;" in line and "crashed" in line


def test_status_list_comes_from_the_plan_given(runs):
    plan = load_plan(PLAN)
    plan["stopping"]["statuses"] = ["reached_target", "token_cap", "diverged", "preempted"]
    other = runs.assign(status="preempted")
    accepted = validate(other, "runs", plan=plan)  # a plan that registers the status accepts it
    assert (accepted["status"] == "preempted").all() and len(accepted) == len(runs)
    with pytest.raises(TableError, match="status"):
        validate(other, "runs")


def test_missing_column_is_named(runs, tmp_path):
    message = _fails(runs.drop(columns=["arm", "tokens"]), tmp_path / "runs.parquet")
    assert "missing column(s)" in message and "'arm'" in message and "'tokens'" in message


def test_nan_in_a_non_nullable_column_names_the_rows(runs, tmp_path):
    bad = runs.copy()
    bad["wall_time_s"] = bad["wall_time_s"].astype(float)
    bad.loc[[2, 4], "wall_time_s"] = np.nan
    line = _line(_fails(bad, tmp_path / "runs.parquet"), "wall_time_s")
    assert "missing values" in line and "row(s) 2, 4" in line


def test_nan_in_a_nullable_column_is_accepted(runs, tmp_path):
    ok = runs.copy()
    ok.loc[1, "icl_auc"] = np.nan  # nullable: a run without ICL scores
    pd.testing.assert_frame_equal(validate(ok, "runs"), ok[columns("runs")])  # kept as given
    back = read_table(write_table(ok, "runs", tmp_path / "runs.parquet"), "runs")
    assert np.isnan(back.loc[1, "icl_auc"]) and back["icl_auc"].isna().sum() == 1
    # the same missing value where the contract forbids it, and a value out of range, fail
    bad = ok.copy()
    bad.loc[1, "int_pne"] = np.nan
    assert "row(s) 1" in _line(_fails(bad, tmp_path / "bad.parquet"), "int_pne")
    bad = ok.copy()
    bad.loc[2, "icl_auc"] = 1.5
    assert "row(s) 2;" in _line(_fails(bad, tmp_path / "bad.parquet"), "icl_auc")


def test_wrong_type_is_named(runs, tmp_path):
    bad = runs.copy()
    bad["steps"] = bad["steps"] + 0.5
    line = _line(_fails(bad, tmp_path / "runs.parquet"), "steps")
    assert "integer" in line and "float64" in line


def test_every_violation_is_listed_at_once(runs, tmp_path):
    bad = runs.copy()
    bad.loc[0, "icl_auc"] = -0.1
    bad.loc[1, "status"] = "lost"
    bad.loc[2, "lr_rule"] = "cubic"
    message = _fails(bad, tmp_path / "runs.parquet")
    for row, column in enumerate(("icl_auc", "status", "lr_rule")):
        assert f"row(s) {row};" in _line(message, column), message


def _steps() -> pd.DataFrame:
    """Two logged steps, every value inside its range."""
    steps = pd.DataFrame({c: [0.5, 0.5] for c in columns("steps")})
    return steps.assign(
        run_id="r_s0", step=[1, 2], tokens=[64, 128], global_batch=8, validated=True
    )


def test_steps_contract_refuses_clip_rate_out_of_range(tmp_path):
    steps = _steps()
    validate(steps, "steps")
    bad = steps.copy()
    bad.loc[1, "clip_rate"] = 1.5
    bad.loc[0, "train_loss"] = -1.0
    message = _fails(bad, tmp_path / "trace.parquet", "steps")
    assert "row(s) 1;" in _line(message, "clip_rate")
    assert "row(s) 0;" in _line(message, "train_loss")


def test_diverged_run_may_end_with_infinite_validation_loss(tmp_path):
    steps = _steps()
    steps.loc[1, "val_loss"] = np.inf
    pd.testing.assert_frame_equal(validate(steps, "steps"), steps[columns("steps")])
    # A divergence row is still held to its contract: no -inf loss, its exposure so far.
    bad = steps.copy()
    bad.loc[1, "val_loss"] = -np.inf
    assert "row(s) 1;" in _line(_fails(bad, tmp_path / "trace.parquet", "steps"), "val_loss")
    bad = steps.copy()
    bad.loc[1, "int_pne"] = np.nan
    assert "row(s) 1" in _line(_fails(bad, tmp_path / "trace.parquet", "steps"), "int_pne")


def test_write_refuses_a_violating_frame_and_writes_nothing(runs, tmp_path):
    bad = runs.copy()
    bad.loc[0, "memorization"] = 2.0
    path = tmp_path / "runs.parquet"
    with pytest.raises(TableError, match=r"'memorization'.*row\(s\) 0;"):
        write_table(bad, "runs", path)
    assert not path.exists()


def test_empty_text_of_a_nullable_column_counts_as_missing_in_csv(tmp_path):
    h1 = pd.DataFrame([{"hypothesis": "H1", "label": "confirmatory", "method": "not run (x)"}])
    path = write_table(h1.reindex(columns=columns("h1")), "h1", tmp_path / "h1.csv")
    back = read_table(path, "h1")
    assert back.loc[0, "alternative"] == "" and np.isnan(back.loc[0, "p"])


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_every_table_has_a_schema_with_units_and_meanings(table):
    contract = schema(table)
    assert list(contract.columns) == columns(table)
    for name, column in contract.columns.items():
        assert column.metadata["unit"] and column.metadata["meaning"], (table, name)
    assert describe(table).count("\n") == len(columns(table)) + 1


def test_score_summary_matches_its_definition():
    shots = [0, 1, 2, 4]
    acc = [0.125, 0.25, 0.5, 0.75]
    scores = pd.DataFrame(
        {
            "measure": ["icl_accuracy"] * 4 + ["fact_recall", "in_weights_accuracy"],
            "shots": shots + [-1, -1],
            "value": acc + [0.1, 0.3],
        }
    )
    x = np.log2(1 + np.array(shots))
    expected = np.sum(np.diff(x) * (np.array(acc[1:]) + np.array(acc[:-1])) / 2) / (x[-1] - x[0])
    summary = summarize_scores(scores)
    assert summary["icl_auc"] == pytest.approx(expected) == icl_auc(shots, acc)
    assert summary["memorization"] == pytest.approx(0.2)
    assert summary["icl_acc_max_shots"] == 0.75 and summary["icl_acc_zero_shot"] == 0.125


def test_import_layers_hold():
    """preregistration imports no stage; training and analysis are independent; figures
    never import training; gradnoise imports nothing of the study and its estimation,
    injection, control and replay are independent; no cycles; inside analysis, its layers
    (report and audit over the tests and analyses, over the statistics and the runs) hold and the
    statistics import nothing of the study; inside training, its layers (the scale and the
    run commands over the loop and the evaluations, over the corpora and the regression
    family) hold, and the corpora, the regression family and the evaluations import
    nothing of the loop (pyproject.toml [tool.importlinter])."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "13 kept, 0 broken" in result.stdout
    for contract in (
        "gradnoise, the noise library, imports nothing of the study KEPT",
        "gradnoise: estimation, injection, control and replay are independent KEPT",
        "the general statistics import nothing of the study KEPT",
        "training: the evaluations read a trained model and never import the loop KEPT",
    ):
        assert contract in result.stdout
