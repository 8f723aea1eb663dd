"""A step whose micro-batch gradients nobody reads runs its batch in as few passes as
``train.micro_batch_max`` allows, with the same mean gradient as the K micro-batch
passes (issue 20, item 1).

Logging steps and the arms that read every step's micro-batch gradients (anisotropic,
NAP) keep the K passes; the one-pass and K-pass gradients agree to float rounding, and
so do the traces of a short run.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from gradnoise import NoiseLogger
from preregistration.design import expand_design
from preregistration.plan import load_plan
from tests.tiny_data import TINY_DATA, smoke_config_with
from training.batches import accumulate_gradient
from training.data.corpus import build_corpus
from training.model import GPT, GPTConfig, lm_loss
from training.noise_arms import NoiseArm
from training.train import train_run

REPO = Path(__file__).resolve().parents[2]
STEPS = 12  # logging steps 1, 2, 4, 5 (validation), 8, 10; the others run one pass

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("global_batch", [8, 64])
def test_one_pass_gradient_equals_the_k_micro_batch_gradient(global_batch):
    """On the CPU study's model (config/config.yaml, K = 8), .grad after one pass over the
    m K sequences, after passes capped at 3, and after K micro-batch passes agree."""
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    block, n_micro = cfg["model"]["block_size"], cfg["train"]["n_micro"]
    corpus = build_corpus(cfg["data"] | {"n_train_sequences": 64, "n_val_sequences": 8}, block)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=int(corpus["vocab_size"]), **cfg["model"]))
    local = torch.arange(global_batch)
    micro = global_batch // n_micro

    def grad_of(group: int, chunk: int) -> tuple[torch.Tensor, float]:
        model.zero_grad(set_to_none=True)
        loss, _ = accumulate_gradient(
            model, model, lambda net, seq: lm_loss(net(seq[:, :-1]), seq[:, 1:]),
            lambda idx: corpus["train"][idx].long(), local, group=group, chunk=chunk,
            autocast=torch.autocast("cpu", enabled=False), sync=True,
        )  # fmt: skip
        return flat_grad(model), float(loss)

    by_micro, loss_by_micro = grad_of(micro, micro)
    for chunk in (global_batch, 3):
        one_pass, loss = grad_of(global_batch, chunk)
        assert torch.linalg.vector_norm(one_pass - by_micro) <= 1e-5 * torch.linalg.vector_norm(
            by_micro
        ), f"chunk {chunk}"
        assert loss == pytest.approx(loss_by_micro, rel=1e-6)


@pytest.fixture(scope="module")
def smoke_run():
    """The smoke config and corpus, a short spec, and its trace with one-pass steps."""
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    block = cfg["model"]["block_size"]
    corpus = build_corpus(cfg["data"], block)
    spec = expand_design(load_plan(REPO / cfg["plan"]), "smoke")[0]
    spec = replace(spec, token_cap=STEPS * spec.global_batch * block, target_val_loss=0.0)
    return cfg, corpus, spec, train_run(spec, cfg, corpus, show_progress=False)[1].trace


def test_trace_of_one_pass_steps_equals_the_k_pass_trace(smoke_run, monkeypatch):
    """Logging steps are the same K-pass steps either way; the parameters they start from
    differ by the rounding of the one-pass steps between them, so every trace column
    agrees to a tolerance far below the estimates' sampling error."""
    cfg, corpus, spec, trace = smoke_run
    monkeypatch.setattr(NoiseArm, "needs_micro_gradients", property(lambda self: True))
    k_pass = train_run(spec, cfg, corpus, show_progress=False)[1].trace
    assert list(trace["step"]) == list(k_pass["step"]) == [1, 2, 4, 5, 8, 10, 12]
    for column in trace.select_dtypes("number").columns:
        expected = pytest.approx(list(k_pass[column]), rel=1e-4, abs=1e-9, nan_ok=True)
        assert list(trace[column]) == expected, column


class StepCounter:
    """Forward passes of the model and micro hooks of the arm, per step, counted up to the
    logger's after_update (after it come the curvature closure and the validation)."""

    def __init__(self, monkeypatch):
        self.passes, self.hooks, self.logged = Counter(), Counter(), set()
        self.step, self.training = 0, False
        begin, after = NoiseLogger.begin_step, NoiseLogger.after_update
        hook = NoiseArm.after_micro_backward

        def begin_step(logger, step, log=None):
            self.step, self.training = step, True
            begin(logger, step, log)
            if logger.logging:
                self.logged.add(step)

        def after_update(logger, *args, **kwargs):
            self.training = False
            return after(logger, *args, **kwargs)

        def after_micro_backward(arm):
            self.hooks[self.step] += 1
            hook(arm)

        monkeypatch.setattr(NoiseLogger, "begin_step", begin_step)
        monkeypatch.setattr(NoiseLogger, "after_update", after_update)
        monkeypatch.setattr(NoiseArm, "after_micro_backward", after_micro_backward)
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self.count)

    def count(self, module, args):
        if isinstance(module, GPT) and self.training:
            self.passes[self.step] += 1

    def close(self) -> None:
        self.handle.remove()


@pytest.mark.parametrize("cap", [None, 3])
def test_a_non_logging_step_runs_ceil_mk_over_cap_passes(smoke_run, monkeypatch, cap):
    """m = 4, K = 2: a non-logging step runs ceil(8 / cap) passes (1, or 3 for cap 3), a
    logging step K ceil(m / cap) (2, or 4); no micro hook is called on a one-pass step."""
    cfg, corpus, spec, _ = smoke_run
    cfg = cfg | {"train": cfg["train"] | {"micro_batch_max": cap}}
    spec = replace(spec, global_batch=8, token_cap=STEPS * 8 * cfg["model"]["block_size"])
    n_micro, micro = cfg["train"]["n_micro"], 8 // cfg["train"]["n_micro"]
    chunk = 8 if cap is None else cap
    counter = StepCounter(monkeypatch)
    try:
        train_run(spec, cfg, corpus, show_progress=False)
    finally:
        counter.close()
    assert counter.logged == {1, 2, 4, 5, 8, 10, 12}
    for step in range(1, STEPS + 1):
        if step in counter.logged:
            assert counter.passes[step] == n_micro * math.ceil(micro / min(chunk, micro)), step
            assert counter.hooks[step] == n_micro, step
        else:
            assert counter.passes[step] == math.ceil(8 / chunk), step
            assert counter.hooks[step] == 0, step


@pytest.mark.parametrize(
    ("condition", "every_step"),
    [("inj_anisotropic_bs8", True), ("nap_bs8", True), ("inj_gaussian_bs8", False)],
)
def test_micro_gradient_arms_keep_k_passes_on_every_step(monkeypatch, condition, every_step):
    """The anisotropic and NAP arms see K micro-batch backward passes on every step; an arm
    that does not read them (Gaussian) only on logging steps."""
    cfg = smoke_config_with(
        model={"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0},
        data=TINY_DATA | {"n_train_sequences": 256, "n_val_sequences": 16},
        train={
            "n_micro": 2, "log_interval": 4, "warmup_steps": 3, "min_lr_ratio": 0.1,
            "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8,
            "grad_clip": 1.0, "curvature": "fisher",
        },
    )  # fmt: skip
    corpus = build_corpus(cfg["data"], 16)
    specs = {
        s.condition: replace(s, target_val_loss=0.0, token_cap=STEPS * s.global_batch * 16)
        for s in expand_design(load_plan(REPO / "preregistration/plan.yaml"), "smoke")
        if s.seed == 0
    }
    spec = specs[condition]
    reference = train_run(specs[spec.reference], cfg, corpus, show_progress=False)[1].trace
    counter = StepCounter(monkeypatch)
    try:
        train_run(spec, cfg, corpus, show_progress=False, reference_trace=reference)
    finally:
        counter.close()
    n_micro = cfg["train"]["n_micro"]
    for step in range(1, STEPS + 1):
        k_passes = every_step or step in counter.logged
        assert counter.hooks[step] == (n_micro if k_passes else 0), step
        assert counter.passes[step] == (n_micro if k_passes else 1), step
    assert len(counter.logged) < STEPS  # some steps are not logging steps
