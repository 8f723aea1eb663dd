"""Nothing is dropped silently: a corpus of damaged and tampered per-run files.

One clean smoke-scale study is built (``run_factory``: every registered run's
meta.json, trace.parquet, scores.parquet and layers.parquet; one run diverged, one
stopped at its token cap) and collected once; that runs table plays the table of an
earlier collection. Each case copies the study, damages one file of one run, and:

- damage that leaves no valid run must stop ``analysis.runs.collection`` with an error
  naming the file and what is wrong, and must fail the audit the same way (the
  earlier runs table is not taken on trust);
- a run that is what it says (diverged, at its token cap) stays in the runs table,
  excluded under its registered rule with its reason;
- a runs table that says otherwise than the files fails the audit naming the run.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from damage import (
    CAPPED,
    DELETE,
    DIVERGED,
    META,
    SCORES,
    TRACE,
    Damage,
    clean_study,
    copy_study,
    edit_meta,
    edit_table,
    last_validation_above_target,
    meta_block_size,
    overwrite,
    remove,
    scaled,
    set_cell,
    truncate,
)
from damage import failures as _failures
from run_factory import Study

from analysis.runs.files import RunFilesError
from preregistration.tables import read_table

# every test damages a copy of a study and runs the collection and the audit on it
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Study:
    return clean_study(tmp_path_factory.mktemp("clean"))


@pytest.fixture
def study(clean: Study, tmp_path: Path) -> Study:
    return copy_study(clean, tmp_path)


CASES = {
    # meta.json
    "meta missing": Damage(META, remove(META), "file(s) not found"),
    "meta zero bytes": Damage(META, overwrite(META, b""), "corrupt run metadata"),
    "meta truncated": Damage(META, truncate(META), "corrupt run metadata"),
    "meta not an object": Damage(META, overwrite(META, b"[1, 2]"), "expected a JSON object"),
    "meta not utf-8": Damage(META, overwrite(META, b"\xff\xfe{}"), "corrupt run metadata"),
    "meta lacks status": Damage(META, edit_meta(status=DELETE), "lacks key(s) ['status']"),
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
        TRACE, edit_table(TRACE, scaled("int_pne_star", -1.0)), "'int_pne_star': expected finite"
    ),
    "trace exposure zero (log undefined)": Damage(
        TRACE,
        edit_table(TRACE, scaled("int_pne_star", 0.0)),
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
        TRACE, edit_table(TRACE, last_validation_above_target), "neither reached the target"
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
