"""Nothing is dropped silently: a corpus of damaged and tampered per-run files.

One clean smoke-scale study is built (``run_factory``: every registered run's
meta.json, trace.parquet, scores.parquet and layers.parquet; one run diverged, one
stopped at its token cap) and collected once; that runs table plays the table of an
earlier collection. Each case copies the study, damages one file of one run, and:

- damage that leaves no valid run must stop ``analysis.collect`` with an error
  naming the file and what is wrong, and must fail the audit the same way (the
  earlier runs table is not taken on trust);
- a run that is what it says (diverged, at its token cap) stays in the runs table,
  excluded under its registered rule with its reason;
- a runs table that says otherwise than the files fails the audit naming the run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from run_factory import REPO, Study

from analysis.run_checks import RunFilesError
from preregistration.tables import read_table, write_table

# every test damages a copy of a study and runs the collection and the audit on it
pytestmark = pytest.mark.slow

DIVERGED, CAPPED, RUN = "bs4_fixed_s0", "bs8_fixed_s1", "bs8_sqrt_s1"
STATUSES = {DIVERGED: "diverged", CAPPED: "token_cap"}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Study:
    study = Study.create(tmp_path_factory.mktemp("clean"), STATUSES)
    study.collect()
    study.write_t1()
    return study


@pytest.fixture
def study(clean: Study, tmp_path: Path) -> Study:
    """A copy of the clean study, its runs table that of an earlier collection."""
    shutil.copytree(clean.root, tmp_path / "study")
    return Study(tmp_path / "study")


def _failures(result, name: str) -> str:
    return "\n".join(next(c for c in result.checks if c.name == name).failures)


# --- ways to damage a file ------------------------------------------------------------


def edit_meta(**changes) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        path = directory / "meta.json"
        meta = json.loads(path.read_text())
        for key, value in changes.items():
            if value is _DELETE:
                del meta[key]
            else:
                meta[key] = value
        path.write_text(json.dumps(meta))

    return change


_DELETE = object()


def edit_table(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]):
    """Rewrite ``name`` through ``change`` without validation (damage may break the schema)."""

    def edit(directory: Path) -> None:
        path = directory / name
        change(pd.read_parquet(path)).to_parquet(path, index=False)

    return edit


def set_cell(column: str, row: int, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({column: object}) if isinstance(value, str) else df
        df.loc[df.index[row], column] = value
        return df

    return change


def remove(name: str):
    return lambda directory: (directory / name).unlink()


def overwrite(name: str, data: bytes):
    return lambda directory: (directory / name).write_bytes(data)


def truncate(name: str):
    def change(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: len(data) // 2])

    return change


def meta_block_size(value):
    def change(directory: Path) -> None:
        path = directory / "meta.json"
        meta = json.loads(path.read_text())
        meta["config"]["model"]["block_size"] = value
        path.write_text(json.dumps(meta))

    return change


def both(*changes):
    def change(directory: Path) -> None:
        for c in changes:
            c(directory)

    return change


@dataclass(frozen=True)
class Damage:
    file: str  # the file the error must name
    change: Callable[[Path], None]
    expect: str  # what the error must say
    run: str = RUN


def _scale(column: str, factor: float):
    return lambda df: df.assign(**{column: df[column] * factor})


def _val_above_target(df):  # the last validation no longer reaches the target (3.8)
    return df.assign(val_loss=df["val_loss"].where(df.index < len(df) - 1, 3.9))


TRACE, META, SCORES = "trace.parquet", "meta.json", "scores.parquet"
CASES = {
    # meta.json
    "meta missing": Damage(META, remove(META), "file(s) not found"),
    "meta zero bytes": Damage(META, overwrite(META, b""), "corrupt run metadata"),
    "meta truncated": Damage(META, truncate(META), "corrupt run metadata"),
    "meta not an object": Damage(META, overwrite(META, b"[1, 2]"), "expected a JSON object"),
    "meta not utf-8": Damage(META, overwrite(META, b"\xff\xfe{}"), "corrupt run metadata"),
    "meta lacks status": Damage(META, edit_meta(status=_DELETE), "lacks key(s) ['status']"),
    "meta steps as text": Damage(META, edit_meta(steps="10"), "key 'steps' is '10', expected int"),
    "meta seed as bool": Damage(META, edit_meta(seed=True), "key 'seed' is True"),
    "meta lacks block size": Damage(META, meta_block_size(None), "config.model.block_size"),
    "meta of another run id": Damage(
        META, edit_meta(run_id="bs8_sqrt_s0"), "run_id is 'bs8_sqrt_s0', but the file lies"
    ),
    "meta of another condition": Damage(
        META, edit_meta(condition="bs8_fixed"), "condition is 'bs8_fixed'"
    ),
    "meta of another seed": Damage(META, edit_meta(seed=0), "seed is 0, but the file lies"),
    "meta says token_cap, trace reached target": Damage(
        META, edit_meta(status="token_cap"), "status 'token_cap', but the trace gives 'reached"
    ),
    "meta says diverged, losses finite": Damage(
        META, edit_meta(status="diverged"), "status 'diverged', but the trace gives 'reached"
    ),
    "meta says reached_target, final loss above target": Damage(
        META,
        edit_meta(status="reached_target"),
        "status 'reached_target', but the trace gives 'token_cap'",
        run=CAPPED,
    ),
    "meta says reached_target, run diverged": Damage(
        META,
        edit_meta(status="reached_target"),
        "status 'reached_target', but the trace gives 'diverged'",
        run=DIVERGED,
    ),
    "meta status not registered": Damage(
        META, edit_meta(status="finished"), "status 'finished', but the trace gives"
    ),
    "meta final loss differs": Damage(
        META, edit_meta(final_val_loss=3.5), "final_val_loss 3.5, but the last finite val_loss"
    ),
    "meta final loss not finite": Damage(
        META, edit_meta(final_val_loss=math.inf), "final_val_loss inf, but the last finite"
    ),
    "meta final loss null": Damage(
        META, edit_meta(final_val_loss=None), "final_val_loss nan, but the last finite val_loss"
    ),
    "meta global batch differs from the trace": Damage(
        META, edit_meta(global_batch=4), "global_batch 4, but the trace logged global_batch [8]"
    ),
    "meta steps differ": Damage(META, edit_meta(steps=9), "steps 9, but the trace gives 10"),
    "meta tokens differ": Damage(META, edit_meta(tokens=1), "tokens 1, but the trace gives"),
    "meta records exclusion without rule": Damage(
        META,
        edit_meta(excluded=True, exclusion_reason="outlier"),
        "excluded is True, but the registered exclusion rules give False",
    ),
    # trace.parquet
    "trace missing": Damage(TRACE, remove(TRACE), "file(s) not found"),
    "trace zero bytes": Damage(TRACE, overwrite(TRACE, b""), "cannot be read as table 'steps'"),
    "trace truncated": Damage(TRACE, truncate(TRACE), "cannot be read as table 'steps'"),
    "trace is text": Damage(TRACE, overwrite(TRACE, b"step,tokens\n1,2\n"), "cannot be read"),
    "trace lacks a column": Damage(
        TRACE, edit_table(TRACE, lambda df: df.drop(columns="int_pne_star")), "['int_pne_star']"
    ),
    "trace step as text": Damage(
        TRACE, edit_table(TRACE, lambda df: df.astype({"step": str})), "column 'step'"
    ),
    "trace of another run": Damage(
        TRACE,
        edit_table(TRACE, lambda df: df.assign(run_id="bs8_sqrt_s0")),
        "column 'run_id' is ['bs8_sqrt_s0'] at rows [0, 1, 2, 3]",
    ),
    "trace row of another run": Damage(
        TRACE, edit_table(TRACE, set_cell("run_id", 1, "bs4_sqrt_s1")), "at rows [1]"
    ),
    "trace empty": Damage(TRACE, edit_table(TRACE, lambda df: df.iloc[:0]), "no logged step"),
    "trace duplicated step": Damage(
        TRACE,
        edit_table(TRACE, lambda df: pd.concat([df.iloc[:2], df.iloc[[1]], df.iloc[2:]])),
        "repeats a step at rows [1, 2]",
    ),
    "trace steps not increasing": Damage(
        TRACE, edit_table(TRACE, lambda df: df.iloc[[1, 0, 2, 3]]), "'step' decreases at rows [1]"
    ),
    "trace negative exposure": Damage(
        TRACE, edit_table(TRACE, _scale("int_pne_star", -1.0)), "'int_pne_star': expected finite"
    ),
    "trace exposure zero (log undefined)": Damage(
        TRACE,
        edit_table(TRACE, _scale("int_pne_star", 0.0)),
        "its 'int_pne_star' is 0.0; a registered test needs it finite and > 0",
    ),
    "trace exposure decreasing": Damage(
        TRACE, edit_table(TRACE, set_cell("int_pne", 1, 0.0)), "'int_pne' decreases at rows [1]"
    ),
    "trace exposure NaN": Damage(
        TRACE, edit_table(TRACE, set_cell("int_pne_star", 1, math.nan)), "'int_pne_star'"
    ),
    "trace exposure inf mid-run": Damage(
        TRACE,
        edit_table(TRACE, set_cell("int_pne_star", 1, math.inf)),
        "'int_pne_star': expected finite and >= 0; row(s) 1;",
    ),
    "trace exposure inf at the end": Damage(
        TRACE, edit_table(TRACE, set_cell("int_pne_star", -1, math.inf)), "'int_pne_star': expected"
    ),
    "trace tokens wrong": Damage(
        TRACE, edit_table(TRACE, set_cell("tokens", 2, 5)), "'tokens' is not step * global"
    ),
    "trace global batch wrong": Damage(
        TRACE, edit_table(TRACE, set_cell("global_batch", 0, 4)), "'global_batch' differs"
    ),
    "trace loses its last rows": Damage(
        TRACE, edit_table(TRACE, lambda df: df.iloc[:3]), "neither reached the target"
    ),
    "trace goes on after the target": Damage(
        TRACE,
        edit_table(TRACE, lambda df: pd.concat([df, df.iloc[[-1]].assign(step=15, tokens=3840)])),
        "the run stops at its first validation loss at or below the target",
    ),
    "diverged run went on after reaching the target": Damage(
        TRACE,
        edit_table(TRACE, set_cell("val_loss", 2, 3.7)),
        "the run stops at its first validation loss at or below the target",
        run=DIVERGED,
    ),
    "trace final loss above target, meta says reached": Damage(
        TRACE, edit_table(TRACE, _val_above_target), "neither reached the target"
    ),
    "trace non-finite loss mid-run": Damage(
        TRACE, edit_table(TRACE, set_cell("train_loss", 1, math.inf)), "is not the last row"
    ),
    "trace val loss inf mid-run": Damage(
        TRACE, edit_table(TRACE, set_cell("val_loss", 2, math.inf)), "is not the last row"
    ),
    "trace train loss NaN": Damage(
        TRACE,
        edit_table(TRACE, set_cell("train_loss", 1, math.nan)),
        "a diverged step (non-finite loss or gradient norm) at rows [1] is not the last row",
    ),
    "trace last val loss NaN (diverged), meta says reached": Damage(
        META, edit_table(TRACE, set_cell("val_loss", -1, math.nan)), "the trace gives 'diverged'"
    ),
    "trace beyond the token cap": Damage(
        TRACE,
        edit_table(TRACE, lambda df: df.assign(step=df.step * 100, tokens=df.tokens * 100)),
        "beyond max_steps = 234",
    ),
    # scores.parquet
    "scores missing": Damage(SCORES, remove(SCORES), "file(s) not found"),
    "scores zero bytes": Damage(SCORES, overwrite(SCORES, b""), "as table 'scores'"),
    "scores truncated": Damage(SCORES, truncate(SCORES), "as table 'scores'"),
    "scores of another run": Damage(
        SCORES, edit_table(SCORES, lambda df: df.assign(run_id="bs8_sqrt_s0")), "'run_id' is"
    ),
    "scores file of another run copied in": Damage(
        SCORES,
        lambda d: shutil.copyfile(d.parent / "seed0" / SCORES, d / SCORES),
        "column 'run_id' is ['bs8_sqrt_s0']",
    ),
    "trace file of another run copied in": Damage(
        TRACE,
        lambda d: shutil.copyfile(d.parent / "seed0" / TRACE, d / TRACE),
        "column 'run_id' is ['bs8_sqrt_s0']",
    ),
    "scores lack a column": Damage(
        SCORES, edit_table(SCORES, lambda df: df.drop(columns="value")), "missing column(s)"
    ),
    "scores shots as float": Damage(
        SCORES, edit_table(SCORES, lambda df: df.astype({"shots": float})), "column 'shots'"
    ),
    "scores lack ICL rows (icl_auc missing)": Damage(
        SCORES,
        edit_table(SCORES, lambda df: df[df.measure != "icl_accuracy"]),
        "its 'icl_auc' is nan; a registered test needs it finite",
    ),
    "scores lack fact recall (memorization missing)": Damage(
        SCORES,
        edit_table(SCORES, lambda df: df[df.measure != "fact_recall"]),
        "its 'memorization' is nan",
    ),
    "scores accuracy NaN": Damage(
        SCORES, edit_table(SCORES, set_cell("value", 2, math.nan)), "column 'value'"
    ),
    "scores accuracy inf": Damage(
        SCORES, edit_table(SCORES, set_cell("value", 2, math.inf)), "'value': expected finite"
    ),
    "scores accuracy above 1": Damage(
        SCORES, edit_table(SCORES, set_cell("value", 0, 1.5)), "not an accuracy in [0, 1]"
    ),
    "scores duplicated measure": Damage(
        SCORES,
        edit_table(SCORES, lambda df: pd.concat([df, df.iloc[[0]]])),
        "(measure, shots) repeated at rows [0, 9]",
    ),
    # layers.parquet (checked when present)
    "layers truncated": Damage("layers.parquet", truncate("layers.parquet"), "as table 'layers'"),
    "layers of another run": Damage(
        "layers.parquet",
        edit_table("layers.parquet", lambda df: df.assign(run_id="bs4_fixed_s1")),
        "this file belongs to run 'bs8_sqrt_s1'",
    ),
    "layers at a step the trace lacks": Damage(
        "layers.parquet",
        edit_table("layers.parquet", lambda df: df.assign(step=7)),
        "names steps the trace did not log",
    ),
    "whole run directory missing": Damage("", lambda d: shutil.rmtree(d), "seed1/meta.json, "),
    "diverged run, meta hides the divergence": Damage(
        META,
        edit_meta(status="reached_target", final_val_loss=3.75),
        "but the trace gives 'diverged'",
        run=DIVERGED,
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_damaged_file_fails_collection_and_audit_naming_it(study: Study, case: str):
    damage = CASES[case]
    directory = study.run_dir(damage.run)
    damage.change(directory)
    path = str(directory / damage.file) if damage.file else f"registered run {damage.run}"
    with pytest.raises(RunFilesError) as info:
        study.collect()
    message = str(info.value)
    assert path in message and damage.expect in message, message
    # The audit reads the runs table of the earlier (clean) collection and the files.
    files = _failures(study.audit(), "files")
    assert path in files and damage.expect in files, files


def test_clean_study_passes_collection_and_audit(study: Study):
    before = read_table(study.runs, "runs")
    runs = study.collect()
    pd.testing.assert_frame_equal(runs.reset_index(drop=True), before, check_dtype=False)
    result = study.audit()
    assert result.passed, result.failures


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
    runs, unregistered = _collect_with_unregistered(study)
    assert len(runs) == len(study.specs()) and unregistered == [extra, stray]
    files = _failures(study.audit(), "files")
    assert f"{extra}: run records (layers.parquet, meta.json, scores.parquet, " in files
    assert "of bs8_sqrt_s7, which design.scales.smoke" in files and f"{stray}: run records" in files


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
    from analysis.collect import collect

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
