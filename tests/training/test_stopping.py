"""The registered validation schedule: the same in tokens for every batch size, denser near
the target, and a trace that shows where and why a run stopped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from preregistration.tables import TableError, divergence_rows, read_table, write_table
from training.run import trace_table
from training.stopping import ValidationSchedule
from training.train import train_run

REPO = Path(__file__).resolve().parents[2]


def _validated_tokens(schedule: ValidationSchedule, tokens_per_step: int, losses) -> list[int]:
    """Tokens at which a run of the given per-step validation losses would validate."""
    out, last = [], float("nan")
    n_steps = len(losses)
    for step in range(1, n_steps + 1):
        if schedule.due(step, tokens_per_step, n_steps, last):
            out.append(step * tokens_per_step)
            last = losses[step - 1]
    return out


def test_schedule_is_the_same_in_tokens_for_every_batch_size():
    schedule = ValidationSchedule(2.5, 16384, 2048, 0.25)
    tokens_total = 2**19
    far = [5.0] * tokens_total  # loss never near the target: coarse schedule only
    per_batch = {}
    for tokens_per_step in (512, 1024, 2048, 4096, 8192):
        steps = tokens_total // tokens_per_step
        per_batch[tokens_per_step] = _validated_tokens(schedule, tokens_per_step, far[:steps])
    reference = per_batch[512]
    for tokens_per_step, seen in per_batch.items():
        # after step 1: every multiple of 16384 tokens, whatever the batch
        assert seen[1:] == reference[1:], tokens_per_step
    assert reference[1:] == list(range(16384, tokens_total + 1, 16384))


def test_schedule_is_dense_within_the_band_above_the_target():
    schedule = ValidationSchedule(2.5, 16384, 2048, 0.25)
    tokens_per_step = 1024
    losses = np.linspace(4.0, 2.0, 400)  # crosses target + band, then the target
    seen = _validated_tokens(schedule, tokens_per_step, losses)
    gaps = np.diff(seen)
    near_from = next(t for t in seen if losses[t // tokens_per_step - 1] <= 2.75)
    assert set(gaps[np.array(seen[1:]) <= near_from]) <= {16384, 16384 - 1024}
    assert set(gaps[np.array(seen[:-1]) >= near_from]) == {2048}
    # a batch larger than the dense interval validates at every step
    assert set(np.diff(_validated_tokens(schedule, 4096, [2.6] * 50))) == {4096}


def test_schedule_rejects_an_inverted_interval():
    with pytest.raises(ValueError, match="near_target_every_tokens"):
        ValidationSchedule(2.5, 1024, 2048, 0.25)


def test_run_stops_at_its_first_validation_at_or_below_target(smoke):
    cfg, corpus, spec = smoke
    # a target the smoke model reaches after a few hundred steps
    spec = replace(spec, target_val_loss=3.3, validation=(1024, 128, 0.3))
    _, result = train_run(spec, cfg, corpus, show_progress=False)
    assert result.status == "reached_target"
    trace = result.trace
    validated = trace[trace.validated]
    assert trace.iloc[-1]["step"] == result.steps and bool(trace.iloc[-1]["validated"])
    assert validated["val_loss"].iloc[-1] == result.final_val_loss <= spec.target_val_loss
    assert (validated["val_loss"].iloc[:-1] > spec.target_val_loss).all()
    assert trace.loc[~trace.validated, "val_loss"].isna().all()
    # the overshoot is bounded by the loss decrease over one dense interval
    tokens = validated["tokens"].to_numpy()
    assert tokens[-1] - tokens[-2] <= max(128, spec.global_batch * cfg["model"]["block_size"])


def test_run_at_the_token_cap_validates_its_last_step(smoke):
    cfg, corpus, spec = smoke
    tokens_per_step = spec.global_batch * cfg["model"]["block_size"]
    spec = replace(spec, target_val_loss=0.1, token_cap=13 * tokens_per_step)
    _, result = train_run(spec, cfg, corpus, show_progress=False)
    assert result.status == "token_cap" and result.steps == 13
    last = result.trace.iloc[-1]
    assert last["step"] == 13 and bool(last["validated"])
    assert last["val_loss"] == result.final_val_loss


def test_diverged_run_ends_with_the_row_that_shows_it(smoke, tmp_path):
    cfg, corpus, spec = smoke
    spec = replace(spec, lr_peak=1e6, target_val_loss=0.0)
    cfg = {**cfg, "train": {**cfg["train"], "grad_clip": 1e12}}
    _, result = train_run(spec, cfg, corpus, show_progress=False)
    assert result.status == "diverged"
    assert np.isnan(result.final_val_loss)
    marked = divergence_rows(result.trace)
    assert bool(marked.iloc[-1]) and not marked.iloc[:-1].any()
    assert result.trace.iloc[-1]["step"] == result.steps
    # the trace file keeps the row, and reading it back validates
    path = write_table(trace_table(result.trace), "steps", tmp_path / "trace.parquet")
    again = read_table(path, "steps")
    assert len(again) == len(result.trace) and bool(divergence_rows(again).iloc[-1])
    # the same NaN in a row that did not diverge is refused, naming the file
    broken = again.copy()
    broken.loc[0, "trace_pcp"] = np.nan
    with pytest.raises(TableError, match=r"(?s)trace.parquet.*trace_pcp.*row\(s\) 0"):
        write_table(broken, "steps", tmp_path / "trace.parquet")
