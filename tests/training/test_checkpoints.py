"""Checkpoint, resume-state and corpus files are read without running code (issue 20).

A file carrying a pickled callable is refused with a message naming the file, and the
callable never runs (a marker file it would write stays absent); the writer refuses a
value that the reader would refuse, naming where it sits; plain files round-trip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoints import UnsafeCheckpointError, load_plain, save_plain
from training.data.shards import load_corpus
from training.evaluation.lm_eval_adapter import load_checkpoint


class _Payload:
    """Unpickling this object calls os.system: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_file(tmp_path: Path, name: str, template: dict) -> tuple[Path, Path]:
    marker = tmp_path / f"{name}.ran"
    path = tmp_path / name
    torch.save(template | {"extra": _Payload(marker)}, path)
    return path, marker


def test_pickled_callable_is_refused_and_not_run(tmp_path):
    path, marker = hostile_file(tmp_path, "checkpoint.pt", {"model": {"w": torch.ones(2)}})
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        load_plain(path)
    assert not marker.exists(), "the pickled callable ran"
    torch.load(path, weights_only=False)  # the unsafe reader runs it: the test can fail
    assert marker.exists()


def test_lm_eval_checkpoint_loader_refuses_a_hostile_checkpoint(tmp_path):
    """The README's lm-eval path (load_checkpoint) reads through the same refusal."""
    corpus = tmp_path / "corpus.pt"
    save_plain({"data_cfg": {"seed": 0}}, corpus, "corpus")
    path, marker = hostile_file(tmp_path, "ckpt.pt", {"gpt_config": {}, "model": {}})
    with pytest.raises(UnsafeCheckpointError, match="ckpt.pt"):
        load_checkpoint(path, corpus)
    hostile_corpus, corpus_marker = hostile_file(tmp_path, "bad_corpus.pt", {"data_cfg": {}})
    with pytest.raises(UnsafeCheckpointError, match="bad_corpus.pt"):
        load_corpus(hostile_corpus)
    assert not marker.exists() and not corpus_marker.exists()


def test_writer_refuses_what_the_reader_would_refuse(tmp_path):
    path = tmp_path / "state.pt"
    with pytest.raises(UnsafeCheckpointError, match=r"\['rows'\]\[1\]\['loss'\].*numpy"):
        save_plain({"rows": [{"loss": 1.0}, {"loss": np.float64(2.0)}]}, path, "resume state")
    assert not path.exists()


def test_plain_state_round_trips(tmp_path):
    state = {
        "model": {"w": torch.randn(3, 2), "b": torch.zeros(2, dtype=torch.float64)},
        "rows": [{"step": 1, "loss": 0.5, "kind": "train", "missing": None, "ok": True}],
        "generator": torch.Generator().manual_seed(3).get_state(),
        "window": [(1.0, 2.0)],
    }
    save_plain(state, tmp_path / "s.pt")
    back = load_plain(tmp_path / "s.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["model"]["b"].dtype == torch.float64
    assert back["rows"] == state["rows"] and back["window"] == [(1.0, 2.0)]
    assert torch.equal(back["generator"], state["generator"])


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "s.pt"
    save_plain({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="s.pt: cannot read"):
        load_plain(path)
