"""What a base run records for replay, and the segment regenerated and retrained from it
(issue 21 items 1 and 4).

A tiny Gaussian-injection run of the smoke plan records its state every 4 steps. From the
state at a switch step the training loop regenerates the next steps bit for bit (the
regenerated model at the end equals the state the run recorded there); the open-loop
retrain with the recorded noise and the functional replay of the segment reach the same
parameters up to rounding; the candidates keep the recorded draw and the total variance
they are defined to keep; recording changes nothing of the run.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from gradnoise.replay import rerun
from preregistration.design import expand_design
from preregistration.plan import load_plan
from tests.tiny_data import TINY_DATA, smoke_config_with
from training.checkpoints import load_plain
from training.config import study_config
from training.data.corpus import build_corpus
from training.recording import ReplayRecording, recorded_steps, switch_step
from training.replay.candidates import CANDIDATES, candidate_map
from training.replay.metrics import replay_metrics
from training.replay.retrain import Retrainer
from training.replay.segment import regenerate, trajectory
from training.train import train_run

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY, SWITCH, HORIZON = 24, 4, 12, 4
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny config, corpus, reference trace, base spec, and the base run with and
    without recording."""
    cfg = study_config(
        smoke_config_with(
            model={"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0},
            data=TINY_DATA | {"n_train_sequences": 512, "n_val_sequences": 32},
            train={
                "n_micro": 2,
                "log_interval": 2,
                "warmup_steps": 3,
                "min_lr_ratio": 0.1,
                "weight_decay": 0.1,
                "beta1": 0.9,
                "beta2": 0.95,
                "adam_eps": 1e-8,
                "grad_clip": 1.0,
                "curvature": "fisher",
            },
        )  # fmt: skip
    )
    corpus = build_corpus(cfg.data, cfg.model.block_size)
    specs = {
        (s.condition, s.seed): replace(
            s,
            target_val_loss=0.0,
            token_cap=STEPS * s.global_batch * 16,
            validation=(512, 256, 0.5),
        )  # fmt: skip
        for s in expand_design(load_plan(REPO / "preregistration/plan.yaml"), "smoke")
    }
    spec = specs[("inj_gaussian_bs8", 0)]
    reference = train_run(specs[(spec.reference, 0)], cfg, corpus, show_progress=False)[1].trace
    directory = tmp_path_factory.mktemp("base") / "replay"
    recording = ReplayRecording(directory, EVERY)
    model, recorded = train_run(
        spec, cfg, corpus, False, reference_trace=reference, replay=recording
    )
    _, plain = train_run(spec, cfg, corpus, False, reference_trace=reference)
    return cfg, corpus, reference, spec, recording, model, recorded, plain


def params_at(recording: ReplayRecording, step: int) -> dict[str, torch.Tensor]:
    return load_plain(recording.path(step), "replay state")["model"]


def test_recording_changes_nothing_and_saves_every_interval(base):
    *_, recording, model, recorded, plain = base
    pd.testing.assert_frame_equal(recorded.trace, plain.trace, check_exact=True)
    assert recorded_steps(recording.directory) == list(range(EVERY, STEPS + 1, EVERY))
    last = params_at(recording, STEPS)
    assert all(torch.equal(last[k], v) for k, v in model.state_dict().items())


def test_switch_step_is_the_last_state_at_or_before_the_fraction():
    assert switch_step([4, 8, 12, 16], 20, 0.5, 4) == 8
    assert switch_step([4, 8, 12, 16], 20, 0.8, 4) == 16
    with pytest.raises(ValueError, match="passes the run's last step"):
        switch_step([4, 8, 12, 16], 18, 0.9, 4)
    with pytest.raises(ValueError, match="no replay state recorded"):
        switch_step([4, 8], 20, 0.1, 4)
    with pytest.raises(FileNotFoundError, match="recorded no replay states"):
        recorded_steps(Path("/nonexistent/replay"))


@pytest.fixture(scope="module")
def segment(base):
    cfg, corpus, reference, spec, recording, *_ = base
    return regenerate(spec, cfg, corpus, reference, recording.path(SWITCH), HORIZON)


def test_regenerated_segment_is_the_recorded_run(base, segment):
    *_, recording, _, recorded, _ = base
    assert [s.step for s in segment.steps] == list(range(SWITCH + 1, SWITCH + HORIZON + 1))
    start = params_at(recording, SWITCH)
    assert all(torch.equal(segment.params[k], start[k]) for k in segment.params)
    end = params_at(recording, SWITCH + HORIZON)
    assert all(torch.equal(p, end[n]) for n, p in segment.model.named_parameters())
    scales = recorded.trace.set_index("step")["noise_scale"]
    for s in segment.steps:  # the draws are the injector's, with the controller's scale
        if s.step in scales.index:
            assert s.scale == pytest.approx(scales[s.step], rel=1e-12)
        assert s.standard.shape == s.root.shape and s.scale > 0


def test_retrain_and_functional_replay_with_the_recorded_noise_reach_the_recorded_state(
    base, segment
):
    cfg, corpus, reference, spec, recording, *_ = base
    retrainer = Retrainer.at_switch(spec, cfg, corpus, reference, segment, recording.path(SWITCH))
    metrics = replay_metrics(segment.model, corpus, [0, 1, 2, 4], 8)
    values, _ = retrainer.retrain(candidate_map(segment, "recorded"), (HORIZON,), metrics)
    end = params_at(recording, SWITCH + HORIZON)
    retrained = dict(retrainer.run.model.named_parameters())
    for name, p in retrained.items():
        torch.testing.assert_close(p.detach(), end[name], rtol=1e-4, atol=1e-6)
    theta, _ = rerun(trajectory(segment, corpus["train"]))
    for name, p in theta.items():
        torch.testing.assert_close(p, end[name], rtol=1e-4, atol=1e-6)
    # the metrics read at the horizon are those of the state the run recorded there
    at_end = {k: v for k, v in end.items() if k in theta}
    for metric, value in values[HORIZON].items():
        assert value == pytest.approx(float(metrics[metric](at_end)), rel=1e-4, abs=1e-6)
    # another candidate moves the run
    values_2, _ = retrainer.retrain(candidate_map(segment, "double"), (HORIZON,), metrics)
    assert values_2[HORIZON]["val_loss"] != values[HORIZON]["val_loss"]


def test_candidates_keep_the_draw_and_the_variance_they_promise(segment):
    for s in segment.steps:
        xi, total = s.noise, float((s.root**2).sum()) * s.scale
        maps = {name: candidate_map(segment, name)(s) for name in CANDIDATES}
        for name in ("isotropic", "tensor_matched", "precond_aligned"):
            coefficient = maps[name] / (s.standard * math.sqrt(s.scale))
            assert float((coefficient**2).sum()) * s.scale == pytest.approx(total, rel=1e-4)
        torch.testing.assert_close(
            maps["attention_only"] + maps["mlp_only"] + rest(segment, xi), xi
        )
        torch.testing.assert_close(maps["half"] ** 2 * 2, xi**2, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(maps["antithetic"], -xi)
        assert not maps["no_injection"].any()
    fresh = [candidate_map(segment, f"fresh_draw_{j}") for j in (1, 2)]
    first = segment.steps[0]
    assert not torch.equal(fresh[0](first), fresh[1](first))
    torch.testing.assert_close(fresh[0](first), candidate_map(segment, "fresh_draw_1")(first))
    with pytest.raises(ValueError, match="unknown replay candidate"):
        candidate_map(segment, "louder")


def rest(segment, xi: torch.Tensor) -> torch.Tensor:
    """xi on the parameters in neither an attention nor an MLP module."""
    keep = [
        torch.full((math.prod(shape),), float(".attn." not in n and ".mlp." not in n))
        for n, shape in zip(segment.names, segment.shapes, strict=True)
    ]
    return torch.cat(keep) * xi
