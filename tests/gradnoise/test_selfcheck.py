"""``gradnoise.selfcheck``: it passes where the logger is right and fails where it is not.

The property: on a model whose per-example gradients torch.func can take, the
logger's mean estimate of Tr(P C P)/B and Tr(P F P) over random splits of one batch
equals the exact value within n_se standard errors (the selfcheck's own verdict,
see its module docstring); an estimator that forgets the factor m of
diag(C) = m Var_j(g_bar_j), or a loss that is a sum instead of a mean, is caught.
The user's model and optimizer are left exactly as they were.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import gradnoise.estimation.default_estimate as estimate_module
from gradnoise.selfcheck import selfcheck

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

VOCAB, DIM, LENGTH = 17, 16, 8


def mlp_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 6, generator=gen)
    labels = torch.randint(0, 5, (n,), generator=gen)
    return inputs, labels


def make_mlp() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))


def mlp_loss(model: torch.nn.Module, examples) -> torch.Tensor:
    inputs, labels = examples
    return F.cross_entropy(model(inputs), labels)


def trained_adamw(model: torch.nn.Module, steps: int = 30) -> torch.optim.Optimizer:
    """An AdamW with the state of a short training run (so P is that of training)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    inputs, labels = mlp_data(512)
    for step in range(steps):
        chunk = slice(16 * step % 512, 16 * step % 512 + 16)
        mlp_loss(model, (inputs[chunk], labels[chunk])).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return optimizer


class TinyLM(torch.nn.Module):
    """One pre-LayerNorm attention block; the unembedding is the embedding (tied weights)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.embed = torch.nn.Embedding(VOCAB, DIM)
        self.pos = torch.nn.Parameter(0.1 * torch.randn(LENGTH, DIM))
        self.ln_attn, self.ln_mlp, self.ln_out = (torch.nn.LayerNorm(DIM) for _ in range(3))
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.proj = torch.nn.Linear(DIM, DIM)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(DIM, 4 * DIM), torch.nn.GELU(), torch.nn.Linear(4 * DIM, DIM)
        )
        self.head = torch.nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.embed.weight  # tied: BackPACK cannot take these apart
        causal = torch.ones(LENGTH, LENGTH, dtype=torch.bool).triu(1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:length]  # (b, T, DIM)
        q, k, v = self.qkv(self.ln_attn(x)).chunk(3, -1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(DIM)  # (b, T, T)
        scores = scores.masked_fill(self.causal[:length, :length], float("-inf"))
        x = x + self.proj(scores.softmax(-1) @ v)
        x = x + self.mlp(self.ln_mlp(x))
        return self.head(self.ln_out(x))  # (b, T, VOCAB)


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; every sequence has LENGTH tokens, so a mean per example."""
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


def lm_batch(n: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    start = torch.randint(0, VOCAB, (n, 1), generator=gen)
    steps = torch.randint(1, 3, (n, LENGTH), generator=gen).cumsum(1)
    return (start + steps) % VOCAB  # (n, LENGTH) noisy counting sequences


def state_snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list:
    tensors = [p.detach().clone() for p in model.parameters()]
    for state in optimizer.state.values():
        tensors += [v.clone() for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors + [float(g["lr"]) for g in optimizer.param_groups]


@pytest.mark.parametrize("variant", ["adamw_trained", "sgd", "adamw_streaming"])
def test_mlp_passes_and_leaves_the_model_and_optimizer_untouched(variant):
    model = make_mlp()
    if variant == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        optimizer = trained_adamw(model)
    before = state_snapshot(model, optimizer)
    options = {"streaming": True} if variant == "adamw_streaming" else {}
    report = selfcheck(model, mlp_loss, mlp_data(), optimizer=optimizer, steps=40, **options)
    assert report.passed, str(report)
    assert [r.verdict for r in report.rows] == ["pass", "pass"], str(report)
    assert all(r.exact > 0 and r.std_error < 0.1 for r in report.rows), str(report)
    assert report.loss_ratio == pytest.approx(1.0, rel=1e-5)
    assert report.warmup_steps == 0  # SGD has no moments; the trained AdamW its own
    after = state_snapshot(model, optimizer)
    assert len(after) == len(before)
    assert all(
        torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
        for a, b in zip(before, after, strict=True)
    ), "selfcheck changed the user's model or optimizer"
    assert all(p.grad is None for p in model.parameters())
    assert str(report).startswith("gradnoise selfcheck: PASS")


def test_transformer_with_layernorm_and_tied_weights_passes():
    model = TinyLM()
    assert model.head.weight is model.embed.weight
    report = selfcheck(model, lm_loss, lm_batch(), n_micro=4, steps=40, seed=1)
    assert report.passed, str(report)
    assert report.optimizer == "Adam" and report.warmup_steps == 16
    assert report.batch_size == 32 and report.micro_batch_size == 8
    assert model.head.weight is model.embed.weight and model.training


def test_estimator_that_forgets_the_micro_batch_factor_fails(monkeypatch):
    """diag(C) = Var_j(g_bar_j) without the factor m: the estimate is 1/m of the truth."""
    monkeypatch.setattr(estimate_module, "covariance_diag", lambda var, m: var)
    report = selfcheck(make_mlp(), mlp_loss, mlp_data(), n_micro=4, steps=20)
    assert not report.passed, str(report)
    pcp = report.rows[0]
    assert pcp.verdict == "fail", str(report)
    m = report.micro_batch_size
    assert abs(pcp.rel_error - (1 / m - 1)) < 4 * pcp.std_error / m + 0.01, str(report)
    assert "x the exact value" in str(report)


def test_summed_loss_fails_and_says_so():
    def summed(model, examples):
        inputs, labels = examples
        return F.cross_entropy(model(inputs), labels, reduction="sum")

    report = selfcheck(make_mlp(), summed, mlp_data(), steps=10)
    assert not report.passed
    assert report.loss_ratio == pytest.approx(64, rel=1e-4)
    assert any("looks like a sum" in n for n in report.notes), report.notes
    pcp = report.rows[0]
    assert pcp.verdict == "fail", str(report)
    m = report.micro_batch_size  # micro-batch sums are m times their means: m^2 in C
    assert abs(pcp.rel_error - (m**2 - 1)) < 4 * pcp.std_error, str(report)


def test_too_few_splits_are_inconclusive_not_a_pass():
    report = selfcheck(make_mlp(), mlp_loss, mlp_data(), steps=3, max_std_error=0.05)
    assert not report.passed
    assert {r.verdict for r in report.rows} == {"inconclusive"}, str(report)
    assert any("raise steps or n_micro" in n for n in report.notes)


def test_inputs_are_checked_with_messages():
    model, data = make_mlp(), mlp_data(60)
    with pytest.raises(ValueError, match="60 examples does not split into n_micro=8"):
        selfcheck(model, mlp_loss, data, n_micro=8)
    with pytest.raises(ValueError, match="n_micro must be an integer >= 2"):
        selfcheck(model, mlp_loss, data, n_micro=1)
    with pytest.raises(ValueError, match="same first"):
        selfcheck(model, mlp_loss, (data[0], data[1][:30]))
    with pytest.raises(TypeError, match="Adam, AdamW and SGD"):
        selfcheck(model, mlp_loss, data, optimizer=torch.optim.RMSprop(model.parameters()))
    with pytest.raises(TypeError, match="micro_batch_size"):
        selfcheck(model, mlp_loss, data, micro_batch_size=3)
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not parameters of the model"):
        selfcheck(model, mlp_loss, data, optimizer=torch.optim.SGD(other.parameters(), lr=0.1))


def test_batch_norm_in_training_mode_is_refused_with_a_hint():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 5)
    )
    with pytest.raises(RuntimeError, match="eval_mode=True"):
        selfcheck(model, mlp_loss, mlp_data(), eval_mode=False, steps=2)
    report = selfcheck(model, mlp_loss, mlp_data(), steps=20)  # eval mode: running statistics
    assert report.passed, str(report)
