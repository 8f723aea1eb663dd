"""Gradient-sized buffers per tier of ``gradnoise.attach`` (issue 18, item 4): economy none,
standard at most two, full at most three extra on a logging step, for K = 2, 8, 32;
and the counter does see buffers allocated inside hooks; the economy norm is P_{t-1}'s,
whole or in chunks.
"""

from __future__ import annotations

import functools

import pytest
import torch

from gradnoise.estimation.formulas import preconditioner
from gradnoise.estimation.memory import LiveBytes
from gradnoise.tap import attach
from gradnoise.tap.economy import EconomyTap
from gradnoise.tap.tap import NoiseTap
from gradnoise.tap.welford_tap import WelfordTap

STEPS, WARMUP, SDS = 300, 200, 4.0

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


QUARTER = 50_000  # four parameters of D / 4: a parameter-sized temporary is not gradient-sized


class FourBlocks(torch.nn.Module):
    """loss = mean_i sum_k <w_k, x_i,k>: four parameters, each gradient a quarter of the inputs."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(QUARTER)) for _ in range(4)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum((x[:, k * QUARTER : (k + 1) * QUARTER] @ w).mean() for k, w in
                   enumerate(self.blocks))  # fmt: skip


HOOKS = ("_on_grad", "_end_backward", "_after_step")


@functools.cache
def tap_memory(tier: str, n_micro: int, streaming: bool | None = None) -> tuple[float, float]:
    """(most gradient-sized memory held at once, in 4 D bytes, over two logging steps;
    the extra of the second logging step over what was held before it)."""
    n_coords = 4 * QUARTER
    memory = LiveBytes(large=2 * n_coords)  # half a gradient or more
    patch = pytest.MonkeyPatch()
    for cls in (NoiseTap, EconomyTap, WelfordTap):
        for name in HOOKS:
            if name in vars(cls):
                patch.setattr(cls, name, _counted(vars(cls)[name], memory))
    try:
        torch.manual_seed(0)
        model = FourBlocks()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        options = {"economy": {}, "standard": {"log_interval": 1}}.get(
            tier, {"log_interval": 1, "sketch_width": 512, "hill_max_samples": 2**12}
        )
        if streaming is not None:
            options["streaming"] = streaming
        with memory:
            tap = attach(model, optimizer, n_micro=n_micro, micro_batch_size=2, tier=tier,
                         **options)  # fmt: skip
        generator = torch.Generator().manual_seed(1)
        for step in (1, 2):
            if step == 2:
                before = memory.live_large
                memory.reset_peak()
                peak_before = memory.peak_large
            for _ in range(n_micro):
                (model(torch.randn(2, n_coords, generator=generator)) / n_micro).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step == 1:
                peak_first = memory.peak_large
        assert len(tap.records) == 2, "both steps log"
    finally:
        patch.undo()
    held = max(peak_first, memory.peak_large, peak_before) / (4 * n_coords)
    return held, (memory.peak_large - before) / (4 * n_coords)


def _counted(method, memory: LiveBytes):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with memory:
            return method(self, *args, **kwargs)

    return wrapper


def test_economy_norm_is_that_of_the_previous_preconditioner_whole_or_in_chunks():
    """The hook's |P_{t-1} x|^2 (times its weight c) equals |P x|^2 with Adam's P read before
    the update (``adam_precond``), for a parameter taken whole and one taken in chunks."""
    torch.manual_seed(0)
    model = FourBlocks()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4 * QUARTER)).backward()
    optimizer.step()
    tap = attach(model, optimizer, n_micro=2, micro_batch_size=2, tier="economy")
    tap._read_preconditioner()
    x = torch.randn(QUARTER)
    precond = preconditioner(optimizer, list(model.parameters()))[0]
    exact = float(((precond * x) ** 2).double().sum())
    weight = float(tap._weights[0, 0])
    assert tap._chunk < QUARTER, "the parameter is taken in chunks"
    chunked, plain = tap._norms_sq(0, x)
    tap._chunk = QUARTER
    whole, _ = tap._norms_sq(0, x)
    assert weight * float(chunked) == pytest.approx(exact, rel=1e-5)
    assert weight * float(whole) == pytest.approx(exact, rel=1e-5)
    assert float(plain) == pytest.approx(float(x @ x), rel=1e-6)


@pytest.mark.parametrize("n_micro", [2, 8, 32])
def test_gradient_sized_buffers_per_tier(n_micro):
    economy, _ = tap_memory("economy", n_micro)
    assert economy == 0.0, f"economy holds {economy:.2f} gradient-sized buffers"
    standard, _ = tap_memory("standard", n_micro)
    assert standard <= 2.0 + 1e-9, f"standard holds {standard:.2f} gradient-sized buffers"
    _, full = tap_memory("full", n_micro)
    assert full <= 3.0 + 1e-9, f"full adds {full:.2f} gradient-sized buffers on a logging step"


def test_the_count_sees_buffers_allocated_in_hooks():
    """Today's row mode holds K rows of D on a logging step: the counter must see them."""
    _, rows = tap_memory("standard", 8, streaming=False)
    assert rows >= 8.0, f"{rows:.2f} gradient-sized buffers counted for K = 8 rows"
