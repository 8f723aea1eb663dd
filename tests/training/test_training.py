"""Training: determinism, stopping, divergence, held-out evaluation data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from training.batches import batch_indices
from training.data.corpus import CorpusGenerator, build_corpus, mapping_hash
from training.train import train_run

REPO = Path(__file__).resolve().parents[2]


def test_same_config_and_seed_give_identical_trace(smoke):
    cfg, corpus, spec = smoke
    spec = replace(spec, target_val_loss=0.0, token_cap=40 * spec.global_batch * 32)
    _, first = train_run(spec, cfg, corpus, show_progress=False)
    _, second = train_run(spec, cfg, corpus, show_progress=False)
    assert len(first.trace) >= 4
    pd.testing.assert_frame_equal(first.trace, second.trace, check_exact=True)


def test_different_seed_gives_different_trace(smoke):
    cfg, corpus, spec = smoke
    spec = replace(spec, target_val_loss=0.0, token_cap=20 * spec.global_batch * 32)
    _, a = train_run(spec, cfg, corpus, show_progress=False)
    _, b = train_run(replace(spec, seed=spec.seed + 1), cfg, corpus, show_progress=False)
    assert not np.allclose(a.trace.train_loss, b.trace.train_loss)


def test_stops_at_target_loss(smoke):
    cfg, corpus, spec = smoke
    _, result = train_run(replace(spec, target_val_loss=10.0), cfg, corpus, show_progress=False)
    assert result.status == "reached_target"
    assert result.steps == 1  # the first validation (after step 1) already passes


def test_non_finite_loss_is_recorded_as_diverged(smoke):
    cfg, corpus, spec = smoke
    spec = replace(spec, lr_peak=1e6, target_val_loss=0.0)
    cfg = {**cfg, "train": {**cfg["train"], "grad_clip": 1e12}}
    _, result = train_run(spec, cfg, corpus, show_progress=False)
    assert result.status == "diverged"


def test_data_order_is_shared_across_conditions():
    # the first 8 sequences of batch size 8 equal the first two batches of size 4
    small = torch.cat([batch_indices(3, 0, 4, 100), batch_indices(3, 4, 4, 100)])
    assert torch.equal(small, batch_indices(3, 0, 8, 100))
    # and an epoch boundary gives a fresh permutation, each index once per epoch
    two_epochs = batch_indices(3, 0, 200, 100)
    assert sorted(two_epochs[:100].tolist()) == list(range(100))
    assert not torch.equal(two_epochs[:100], two_epochs[100:])


def test_evaluation_mappings_are_never_trained_on(smoke):
    cfg, _, _ = smoke
    gen = CorpusGenerator(cfg["data"], cfg["model"]["block_size"] + 1)
    rng = np.random.default_rng(0)
    modulus = cfg["data"]["heldout_mapping_modulus"]
    for _ in range(200):
        items, labels = gen.icl_mapping(rng, heldout=False)
        assert mapping_hash(items, labels, gen.vocab.size) % modulus != 0
        items, labels = gen.icl_mapping(rng, heldout=True)
        assert mapping_hash(items, labels, gen.vocab.size) % modulus == 0


def test_corpus_is_deterministic(smoke):
    cfg, corpus, _ = smoke
    again = build_corpus(cfg["data"], cfg["model"]["block_size"])
    assert torch.equal(corpus["train"], again["train"])
    other = build_corpus(
        {**cfg["data"], "seed": cfg["data"]["seed"] + 1}, cfg["model"]["block_size"]
    )
    assert not torch.equal(corpus["train"], other["train"])


def test_killed_and_resumed_run_equals_uninterrupted(smoke, tmp_path, monkeypatch):
    import training.train as train_module

    cfg, corpus, spec = smoke
    cfg = {**cfg, "train": {**cfg["train"], "checkpoint_interval": 2}}
    spec = replace(spec, target_val_loss=0.0, token_cap=40 * spec.global_batch * 32)
    model_a, uninterrupted = train_run(spec, cfg, corpus, show_progress=False)

    resume = tmp_path / "resume.pt"
    real_lr_at = train_module.lr_at

    def killed_at_step_23(step, *args):
        if step == 23:
            raise KeyboardInterrupt("simulated kill")
        return real_lr_at(step, *args)

    monkeypatch.setattr(train_module, "lr_at", killed_at_step_23)
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, cfg, corpus, show_progress=False, resume_path=resume)
    assert resume.exists()
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    model_b, resumed = train_run(spec, cfg, corpus, show_progress=False, resume_path=resume)

    pd.testing.assert_frame_equal(uninterrupted.trace, resumed.trace, check_exact=True)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_run_killed_after_saving_its_last_step_resumes_to_the_same_record(smoke, tmp_path):
    # The resume state is written at the token cap's step; a kill before meta.json
    # leaves it, and the restarted run has no step left to take: it must report the
    # saved run (steps, tokens, trace), not an empty one.
    cfg, corpus, spec = smoke
    cfg = {**cfg, "train": {**cfg["train"], "checkpoint_interval": 1, "log_interval": 1}}
    spec = replace(spec, target_val_loss=0.0, token_cap=6 * spec.global_batch * 32)
    resume = tmp_path / "resume.pt"
    model_a, uninterrupted = train_run(spec, cfg, corpus, show_progress=False, resume_path=resume)
    assert uninterrupted.status == "token_cap" and uninterrupted.steps == 6
    assert resume.exists()  # saved at step 6, the last one: the "kill" comes now

    model_b, resumed = train_run(spec, cfg, corpus, show_progress=False, resume_path=resume)
    assert (resumed.status, resumed.steps, resumed.tokens) == (
        uninterrupted.status, uninterrupted.steps, uninterrupted.tokens,
    )  # fmt: skip
    assert resumed.final_val_loss == uninterrupted.final_val_loss
    pd.testing.assert_frame_equal(uninterrupted.trace, resumed.trace, check_exact=True)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_state_of_another_config_is_refused(smoke, tmp_path):
    cfg, corpus, spec = smoke
    cfg = {**cfg, "train": {**cfg["train"], "checkpoint_interval": 1}}
    spec = replace(spec, target_val_loss=0.0, token_cap=10 * spec.global_batch * 32)
    resume = tmp_path / "resume.pt"
    train_run(spec, cfg, corpus, show_progress=False, resume_path=resume)
    assert resume.exists()
    other = {**cfg, "train": {**cfg["train"], "weight_decay": 0.0}}
    with pytest.raises(RuntimeError, match="resume.pt"):
        train_run(spec, other, corpus, show_progress=False, resume_path=resume)
