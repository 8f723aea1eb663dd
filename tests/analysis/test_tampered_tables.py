"""Nothing is taken on trust: a runs or gathered table that says otherwise than the
per-run files fails the audit naming the run; a failed run stays in the runs table,
excluded with its reason; an unregistered run directory is listed; ``make analysis``
on a damaged study fails and keeps no stale table.

The study is tests/damage.py's clean smoke-scale study, copied for each test.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from damage import (
    CAPPED,
    DIVERGED,
    RUN,
    SCORES,
    TRACE,
    both,
    clean_study,
    copy_study,
    edit_meta,
    edit_table,
    remove,
    set_cell,
    truncate,
)
from damage import failures as _failures
from run_factory import REPO, Study

from analysis.runs.files import RunFilesError
from preregistration.tables import read_table, write_table

# every test changes a copy of a study and runs the collection or the audit on it
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Study:
    return clean_study(tmp_path_factory.mktemp("clean"))


@pytest.fixture
def study(clean: Study, tmp_path: Path) -> Study:
    return copy_study(clean, tmp_path)


KEPT = {
    "diverged at its last row": (DIVERGED, None, "diverged"),
    "at its token cap": (CAPPED, None, "missed_target"),
    "diverged on validation loss": (
        RUN,
        both(
            edit_table(TRACE, set_cell("val_loss", -1, math.inf)),
            edit_meta(status="diverged", final_val_loss=None),
        ),
        "diverged",
    ),
    "diverged with no ICL scores": (
        DIVERGED,
        edit_table(SCORES, lambda df: df[df.measure != "icl_accuracy"]),
        "diverged",
    ),
}


@pytest.mark.parametrize("case", list(KEPT), ids=list(KEPT))
def test_failed_run_is_kept_excluded_with_its_reason(study: Study, case: str):
    run_id, change, reason = KEPT[case]
    if change is not None:
        change(study.run_dir(run_id))
    runs = study.collect().set_index("run_id")
    assert len(runs) == len(study.specs())
    assert bool(runs.loc[run_id, "excluded"]) and runs.loc[run_id, "exclusion_reason"] == reason
    result = study.audit()
    assert _failures(result, "files") == "" and _failures(result, "exclusions") == ""


def test_diverged_exposure_is_its_last_row(study: Study):
    # the diverging step applied no update: its row holds the exposure integrated so far
    runs = study.collect().set_index("run_id")
    trace = pd.read_parquet(study.run_dir(DIVERGED) / TRACE)
    assert runs.loc[DIVERGED, "int_pne_star"] == trace["int_pne_star"].iloc[-1]
    assert runs.loc[DIVERGED, "status"] == "diverged"
    assert np.isnan(runs.loc[DIVERGED, "final_val_loss"])


@pytest.mark.parametrize(
    "column, value, expect",
    [
        ("status", "token_cap", "status is 'token_cap', but its files give 'reached_target'"),
        ("icl_auc", 0.99, "icl_auc is 0.99, but its files give"),
        ("final_val_loss", 3.0, "final_val_loss is 3.0, but its files give"),
        ("int_pne_star", 7.0, "int_pne_star is 7.0, but its files give"),
        ("tokens", 1, "tokens is 1, but its files give"),
        ("plan_hash", "0" * 64, f"plan_hash is '{'0' * 64}', but its files give"),
    ],
)
def test_tampered_runs_table_fails_the_audit(study: Study, column: str, value, expect: str):
    runs = read_table(study.runs, "runs")
    i = runs.index[runs.run_id == RUN][0]
    runs.loc[i, column] = value
    if column == "status":  # keep the exclusion consistent with the claimed status
        runs.loc[i, ["excluded", "exclusion_reason"]] = [True, "missed_target"]
    write_table(runs, "runs", study.runs)
    files = _failures(study.audit(), "files")
    assert str(study.runs) in files and f"run {RUN}: {expect}" in files, files


@pytest.mark.parametrize(
    "name, change, expect",
    [
        ("steps.parquet", set_cell("int_pne_star", 5, 9.0), "column 'int_pne_star' of run"),
        ("steps.parquet", lambda df: df.iloc[1:], "3 row(s) of run bs4_fixed_s0"),
        ("scores.parquet", lambda df: df.assign(run_id="bs8_sqrt_s9"), "['bs8_sqrt_s9']"),
        ("scores.parquet", lambda df: df.iloc[:0], "0 row(s) of run"),
    ],
)
def test_tampered_gathered_table_fails_the_audit(study: Study, name: str, change, expect: str):
    path = study.tables / name
    change(pd.read_parquet(path)).to_parquet(path, index=False)
    files = _failures(study.audit(), "files")
    assert str(path) in files and expect in files, files


def test_missing_gathered_table_fails_the_audit(study: Study):
    (study.tables / "steps.parquet").unlink()
    files = _failures(study.audit(), "files")
    assert f"{study.tables / 'steps.parquet'}: file not found" in files


def test_exclusion_without_rule_in_runs_table_fails(study: Study):
    runs = read_table(study.runs, "runs")
    runs.loc[runs.run_id == RUN, ["excluded", "exclusion_reason"]] = [True, "outlier"]
    write_table(runs, "runs", study.runs)
    result = study.audit()
    assert f"run {RUN}: excluded is True, but its files give False" in _failures(result, "files")
    assert "no registered exclusion rule matches it" in _failures(result, "exclusions")


def test_unregistered_run_directory_is_listed_and_fails_the_audit(study: Study):
    extra = study.traces / "bs8_sqrt" / "seed7"
    shutil.copytree(study.run_dir(RUN), extra)
    stray = study.traces / "scratch"
    stray.mkdir()
    (stray / "meta.json").write_text("{}")
    own = study.run_dir(RUN) / "replay"  # a run's own records (replay states) are its own
    own.mkdir()
    (own / "step000016.pt").write_bytes(b"")
    runs, unregistered = _collect_with_unregistered(study)
    assert len(runs) == len(study.specs()) and unregistered == [extra, stray]
    files = _failures(study.audit(), "files")
    assert f"{extra}: run records (layers.parquet, meta.json, scores.parquet, " in files
    assert "of bs8_sqrt_s7, which design.scales.smoke" in files and f"{stray}: run records" in files
    assert str(own) not in files


def test_declared_extra_run_passes(study: Study):
    from run_factory import D1

    shutil.copytree(study.run_dir(RUN), study.traces / "bs8_sqrt" / "seed7")
    d2 = D1 | {"id": "D2", "what": "a pilot seed", "covers": {"extra_runs": ["bs8_sqrt_s7"]}}
    study.write_deviations(D1, d2)
    check = next(c for c in study.audit().checks if c.name == "files")
    assert check.passed and any("[declared: D2]" in d for d in check.declared)


def test_every_problem_is_listed_in_one_error(study: Study):
    remove(SCORES)(study.run_dir(RUN))
    edit_meta(seed=1)(study.run_dir("bs4_sqrt_s0"))
    with pytest.raises(RunFilesError) as info:
        study.collect()
    assert len(info.value.problems) == 2
    assert "registered run bs8_sqrt_s1" in str(info.value) and "seed is 1" in str(info.value)


def _collect_with_unregistered(study: Study):
    from analysis.runs.collection import collect

    tables = study.tables
    return collect(
        study.traces,
        study.plan,
        "smoke",
        tables / "runs.parquet",
        tables / "steps.parquet",
        tables / "scores.parquet",
    )


# --- `make analysis`: Snakemake with analysis_only=True and --forceall ------------------


def _analysis_only(study: Study, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """What `make analysis` runs, on ``study`` (its plan, lock, results and traces)."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config |= {"plan": str(study.plan), "lock": str(study.lock), "results": str(study.results)}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["--configfile", str(path), "--config", "analysis_only=True", "--forceall", *extra]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    return subprocess.run(
        [snakemake, "--cores", "2", *args], cwd=REPO, capture_output=True, text=True, env=env
    )


def test_analysis_with_a_removed_run_fails_naming_it(study: Study, tmp_path: Path):
    """The runs table of the earlier collection is on disk; it must not be used."""
    directory = study.run_dir(RUN)
    shutil.rmtree(directory)
    proc = _analysis_only(study, tmp_path, "--dry-run")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"registered run {RUN}: file(s) not found: {directory / 'meta.json'}, " in out
    assert str(directory / "scores.parquet") in out


def test_analysis_with_a_damaged_run_fails_and_keeps_no_stale_table(study: Study, tmp_path):
    trace = study.run_dir(RUN) / TRACE
    truncate(TRACE)(study.run_dir(RUN))
    proc = _analysis_only(study, tmp_path)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    log = (study.results / "logs" / "collect_runs.log").read_text()
    assert str(trace) in log and "cannot be read as table 'steps'" in log
    assert not study.runs.exists(), "the runs table of the earlier collection was left in place"
    assert "Error in rule collect_runs" in proc.stdout + proc.stderr
