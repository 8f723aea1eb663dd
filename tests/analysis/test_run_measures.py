"""The end-of-run evaluation files of a run join the runs table, one column per measure:
the values are the files' values, a run without the files gets NaN, a damaged file
stops the collection naming it, and the audit catches a runs table that disagrees."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from run_factory import Study

from analysis.runs.files import RunFilesError
from preregistration.tables import (
    LM_EVAL_RUN_MEASURES,
    PROBE_RUN_MEASURES,
    columns,
    read_table,
    write_table,
)


def _probes(run_id: str, level: float) -> pd.DataFrame:
    """A probes table (table ``scores``) with every run-level measure and one per-head row."""
    rows = [(m, -1, level + i / 100, math.nan, 8) for i, m in enumerate(PROBE_RUN_MEASURES)]
    rows.append(("prefix_matching_l0_h1", -1, 0.9, 0.1, 8))  # per head: not a runs column
    frame = pd.DataFrame(rows, columns=["measure", "shots", "value", "chance", "n_items"])
    return frame.assign(run_id=run_id)[columns("scores")]


def _lm_eval(run_id: str, level: float) -> pd.DataFrame:
    rows = [
        (run_id, task, metric, level + i, 0.01, 50)
        for i, (task, metric, _, _) in enumerate(LM_EVAL_RUN_MEASURES.values())
    ]
    return pd.DataFrame(rows, columns=columns("lm_eval"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One study for the module (creating it takes seconds); tests restore what they damage."""
    study = Study.create(tmp_path_factory.mktemp("study"))
    specs = study.specs()
    for i, spec in enumerate(specs[:-1]):  # the last run has no evaluation files
        directory = study.run_dir(spec.run_id)
        write_table(_probes(spec.run_id, i), "scores", directory / "probes.parquet")
        write_table(_lm_eval(spec.run_id, 10 * i), "lm_eval", directory / "lm_eval.parquet")
    return study


def test_measures_join_the_runs_table_by_name(study):
    runs = study.collect().set_index("run_id")
    specs = study.specs()
    for i, spec in enumerate(specs[:-1]):
        for j, measure in enumerate(PROBE_RUN_MEASURES):
            assert runs.loc[spec.run_id, measure] == pytest.approx(i + j / 100)
        for j, column in enumerate(LM_EVAL_RUN_MEASURES):
            assert runs.loc[spec.run_id, column] == pytest.approx(10 * i + j)
    last = runs.loc[specs[-1].run_id]
    assert np.isnan(last[list(PROBE_RUN_MEASURES) + list(LM_EVAL_RUN_MEASURES)].astype(float)).all()
    assert "prefix_matching_l0_h1" not in runs.columns


@pytest.fixture
def damage(study):
    """Overwrite per-run files for one test; their contents are restored afterwards."""
    saved = {}

    def write(path, content: bytes):
        saved.setdefault(path, path.read_bytes())
        path.write_bytes(content)

    yield write
    for path, content in saved.items():
        path.write_bytes(content)


def test_a_damaged_or_foreign_file_is_named(study, damage, tmp_path):
    spec = study.specs()[0]
    directory = study.run_dir(spec.run_id)
    damage(directory / "lm_eval.parquet", b"not parquet")
    other = study.specs()[1].run_id
    write_table(_probes(other, 0.0), "scores", tmp_path / "foreign.parquet")
    damage(directory / "probes.parquet", (tmp_path / "foreign.parquet").read_bytes())
    with pytest.raises(RunFilesError) as error:
        study.collect()
    message = str(error.value)
    assert f"{directory / 'lm_eval.parquet'}: cannot be read" in message
    assert f"{directory / 'probes.parquet'}: column 'run_id'" in message


def test_a_repeated_measure_is_named(study, damage, tmp_path):
    spec = study.specs()[0]
    probes = _probes(spec.run_id, 0.0)
    write_table(pd.concat([probes, probes.iloc[:1]]), "scores", tmp_path / "repeated.parquet")
    damage(
        study.run_dir(spec.run_id) / "probes.parquet", (tmp_path / "repeated.parquet").read_bytes()
    )
    with pytest.raises(RunFilesError, match="probe measure is repeated"):
        study.collect()


def test_the_audit_names_the_file_a_changed_measure_comes_from(study):
    study.collect()
    study.write_t1()
    runs = read_table(study.runs, "runs")
    assert study.audit().passed
    runs.loc[0, "sam_sharpness"] += 1.0
    write_table(runs, "runs", study.runs)
    result = study.audit()
    assert not result.passed
    failures = "\n".join(f for c in result.checks for f in c.failures)
    assert "sam_sharpness" in failures and "probes.parquet" in failures
