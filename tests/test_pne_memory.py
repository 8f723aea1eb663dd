"""The P-NE logger's memory on a logging step does not grow with K (issue 12, item 3).

The micro-batch gradients are reduced as they arrive (``training.pne_stream``):
three gradient-sized fp32 vectors plus chunk-sized temporaries, for any K,
besides the K x sketch_width sketch rows and the tail sample whose size does
not depend on D. Memory is counted by ``training.pne_memory.LiveBytes``, itself
checked on known allocations first.
"""

from __future__ import annotations

import functools

import pytest
import torch

from training.pne import NoiseLogger
from training.pne_memory import LiveBytes

DIM = 200_000  # D, large next to the sketch (K x 512) and the tail sample (2^12 values)


def test_live_bytes_counts_allocations_views_and_frees():
    with LiveBytes() as memory:
        a = torch.zeros(1000)  # 4000 bytes
        view = a[10:20]  # no new memory
        b = a * 2  # 4000 bytes
        del a  # the view keeps the storage alive
        assert memory.live == 8000
        del view
        assert memory.live == 4000
        del b
    assert memory.live == 0 and memory.peak == 8000


class TwoLayer(torch.nn.Module):
    """loss = mean_i <w1, x_i> + <w2, x_i[:DIM // 4]>: two parameters, gradients the inputs."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.zeros(DIM))
        self.w2 = torch.nn.Parameter(torch.zeros(DIM // 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w1).mean() + (x[:, : DIM // 4] @ self.w2).mean()


@functools.cache
def logging_step_extra(n_micro: int) -> float:
    """Peak bytes the logger's calls add during a logging step (the second, with Adam state
    and held diagonals in place), in fp32 gradient copies, less the sketch and tail."""
    torch.manual_seed(0)
    model = TwoLayer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    max_samples, width = 2**12, 512
    logger = NoiseLogger(
        model, optimizer, n_micro=n_micro, micro_batch_size=2, log_interval=1,
        sketch_width=width, hill_max_samples=max_samples,
    )  # fmt: skip
    memory = LiveBytes()
    generator = torch.Generator().manual_seed(1)
    for step in (1, 2):  # both log (N = 1); step 2 is measured
        if step == 2:
            before = memory.live
            memory.reset_peak()
        with memory:
            logger.begin_step(step)
        for _ in range(n_micro):
            (model(torch.randn(2, DIM, generator=generator)) / n_micro).backward()
            with memory:
                logger.after_micro_backward()
        optimizer.step()
        with memory:
            record = logger.after_update(1e-3, 1.0, 1.0)
        optimizer.zero_grad(set_to_none=True)
    assert record is not None, "step 2 should log"
    n_coords = DIM + DIM // 4
    fixed = 4 * n_micro * (width + max_samples // n_micro + 1)  # sketch rows and tail sample
    return (memory.peak - before - fixed) / (4 * n_coords)


@pytest.mark.parametrize("n_micro", [4, 32])
def test_logging_step_holds_three_gradient_copies_for_any_k(n_micro):
    extra = logging_step_extra(n_micro)
    # three vectors (previous .grad, Welford mean and M2) and chunk temporaries of D / 128
    assert 2.9 < extra < 3.2, f"K={n_micro}: {extra:.2f} gradient copies"


def test_memory_does_not_grow_with_k():
    assert logging_step_extra(32) == pytest.approx(logging_step_extra(4), abs=0.02)
    # the old logger held K + 1 copies: 33 at K = 32
