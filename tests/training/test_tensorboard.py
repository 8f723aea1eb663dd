"""``train.tensorboard``: the event files hold the trace's values at its logged steps; with the
switch off nothing is written; without the package the run stops with a message that
names the key and the install (issue 20, item 8)."""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import numpy as np
import pytest

from training.config import study_config
from training.tensorboard_log import SCALARS, tensorboard_log
from training.train import train_run

STEPS = 8

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def short(smoke):
    """The smoke config and corpus, its first spec shortened to 8 steps."""
    cfg, corpus, spec = smoke
    spec = replace(
        spec, target_val_loss=0.0, token_cap=STEPS * spec.global_batch * cfg["model"]["block_size"]
    )
    return cfg, corpus, spec


def switched(cfg: dict, on: bool) -> dict:
    return cfg | {"train": cfg["train"] | {"tensorboard": on}}


def test_event_files_hold_the_trace_values(short, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, corpus, spec = short
    folder = tmp_path / "tensorboard"
    _, result = train_run(
        spec, switched(cfg, True), corpus, show_progress=False, tensorboard_dir=folder
    )
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(SCALARS)
    trace = result.trace.set_index("step")
    for tag, column in SCALARS.items():
        rows = trace[trace["validated"]] if column == "val_loss" else trace
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == list(rows.index), tag
        stored = np.array([s.value for s in scalars], dtype=np.float32)
        expected = rows[column].to_numpy(dtype=np.float32)  # event files hold float32
        np.testing.assert_array_equal(stored, expected, err_msg=tag)
    assert trace["validated"].any() and not trace["validated"].all()
    assert all(math.isfinite(v) for v in trace["pne_star"])


def test_switched_off_writes_nothing(short, tmp_path):
    cfg, corpus, spec = short
    folder = tmp_path / "tensorboard"
    train_run(spec, switched(cfg, False), corpus, show_progress=False, tensorboard_dir=folder)
    assert not folder.exists()


def test_missing_package_names_the_key_and_the_install(short, tmp_path, monkeypatch):
    cfg, corpus, spec = short
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(RuntimeError, match=r"train\.tensorboard.*pip install tensorboard"):
        train_run(spec, switched(cfg, True), corpus, show_progress=False, tensorboard_dir=tmp_path)


def test_only_rank_zero_writes(short, tmp_path, monkeypatch):
    """A worker other than rank 0 gets no log and writes nothing; the trainer passes its rank."""
    cfg, corpus, spec = short
    on = study_config(switched(cfg, True)).train
    assert tensorboard_log(on, tmp_path / "rank1", rank=1, first_step=1) is None
    assert not (tmp_path / "rank1").exists()
    seen = []

    def spy(train_cfg, log_dir, rank, first_step):
        seen.append(rank)
        return tensorboard_log(train_cfg, log_dir, rank, first_step)

    monkeypatch.setattr("training.train.tensorboard_log", spy)
    train_run(spec, switched(cfg, True), corpus, show_progress=False, tensorboard_dir=tmp_path)
    assert seen == [0]
