"""The logger's streaming mode (issue 12, item 3): the default mode's estimates, memory free of K.

``NoiseLogger(streaming=True)`` reduces the K micro-batch gradients as they
arrive (``gradnoise.estimation.micro_stream``). Checked here:

- on the study's GPT (tiny), step by step, every logged quantity equals the
  default mode's up to float rounding (rel 1e-4): traces, per-layer sums,
  B_simple, the integrals, the curvature proxies, the injected covariance and
  the tail index; the spectrum columns differ by design (sketched under the
  preconditioner the step began with, P_{t-1});
- that spectrum is the exact spectrum of P_{t-1} C_hat P_{t-1} / B;
- the peak extra memory of a logging step, counted by a dispatch mode
  (``gradnoise.estimation.memory.LiveBytes``, itself checked on known allocations), is
  three gradient-sized buffers for K = 2, 8 and 32, against K + 1 or more in the
  default mode.

The exact per-example formula (W = 1 and W = 2 gloo), the injected noise's exact
covariance and DDP equality are checked in both modes by the parametrized
tests/gradnoise/test_pne_exact.py, tests/gradnoise/test_noise_logger.py and
tests/gradnoise/test_pne_ddp.py.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from gradnoise.estimation.formulas import preconditioner
from gradnoise.estimation.logger import NoiseLogger
from gradnoise.estimation.memory import LiveBytes
from gradnoise.estimation.spectrum import gram_spectrum
from training.model import GPT, GPTConfig, lm_loss

VOCAB, BLOCK, MICRO, N_MICRO, STEPS, LOG_INTERVAL = 32, 16, 2, 4, 7, 3
SPECTRUM = ("spectrum_top", "spectrum_top_share", "eff_rank")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def train_gpt(streaming: bool) -> tuple[list[dict], list[float]]:
    """STEPS steps of a tiny GPT as the trainer does, injected noise declared on even steps.

    Returns the records and the injected P-NE* sum after every step.
    """
    data = torch.randint(0, VOCAB, (256, BLOCK + 1), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-4)
    logger = NoiseLogger(
        model, optimizer, n_micro=N_MICRO, micro_batch_size=MICRO, log_interval=LOG_INTERVAL,
        sketch_width=512, hill_max_samples=20_000, proxies=("ggn", "hessian"),
        streaming=streaming,
    )  # fmt: skip
    n_coords = sum(logger.sizes)
    injected = torch.rand(n_coords, generator=torch.Generator().manual_seed(3)) * 1e-4
    gen = torch.Generator().manual_seed(1)
    records, injected_sums = [], []
    for step in range(1, STEPS + 1):
        logger.begin_step(step)
        batch = data[torch.randperm(len(data), generator=gen)[: MICRO * N_MICRO]]
        for j in range(N_MICRO):
            seq = batch[j * MICRO : (j + 1) * MICRO]
            (lm_loss(model(seq[:, :-1]), seq[:, 1:]) / N_MICRO).backward()
            logger.after_micro_backward()
        if step % 2 == 0:
            logger.add_injected(injected)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        optimizer.step()

        def closure(seq=seq):
            return model(seq[:, :-1]), seq[:, 1:]

        record = logger.after_update(1e-2, grad_norm, min(1.0, 1.0 / (grad_norm + 1e-6)), closure)
        optimizer.zero_grad(set_to_none=True)
        injected_sums.append(logger.injected_sum)
        if record is not None:
            records.append(record)
    return records, injected_sums


@functools.cache
def both_modes():
    return train_gpt(False), train_gpt(True)


def test_streaming_equals_the_default_mode_step_by_step():
    (snap, snap_injected), (stream, stream_injected) = both_modes()
    assert len(snap) == len(stream) == 4, "logging steps 1, 2, 3 and 6"
    for one, two in zip(snap, stream, strict=True):
        for key, value in one.items():
            if key == "layers" or key in SPECTRUM:
                continue
            if key.startswith("b_simple") and abs(one["grad_sq"]) < 1e-2 * one["trace_cov"]:
                continue  # |G|^2 near its rounding: the ratio amplifies it
            other = two[key]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(other), key
                continue
            scale = one["trace_cov"] if key == "grad_sq" else 0.0
            assert other == pytest.approx(value, rel=1e-4, abs=1e-6 * scale), (
                f"{key}: streaming {other!r} vs default {value!r}"
            )
        for row_one, row_two in zip(one["layers"], two["layers"], strict=True):
            assert row_one["layer"] == row_two["layer"]
            for key in ("trace_pcp", "pne", "pne_star"):
                assert row_two[key] == pytest.approx(row_one[key], rel=1e-4), (row_one, key)
    assert stream_injected == pytest.approx(snap_injected, rel=1e-5)
    assert stream_injected[-1] > 0, "injected noise was declared"


def test_streaming_spectrum_is_that_of_the_preconditioner_the_step_began_with():
    """Identity sketch (D <= width): the spectrum equals the exact one of P_{t-1} C_hat P_{t-1} / B.

    The model is the linear probe (each example's gradient is its input), with Adam,
    so the micro-batch means and the exact spectrum come from the data.
    """
    dim, n_micro, micro = 300, 8, 4
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(dim, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logger = NoiseLogger(model, optimizer, n_micro=n_micro, micro_batch_size=micro, streaming=True)
    for step in (1, 2, 3):
        begin = preconditioner(optimizer, logger.params)[0].reshape(-1).double()
        examples = torch.randn(n_micro * micro, dim, generator=gen) * torch.linspace(0.1, 2, dim)
        logger.begin_step(step, log=True)
        for j in range(n_micro):
            (model(examples[j * micro : (j + 1) * micro]).mean() / n_micro).backward()
            logger.after_micro_backward()
        optimizer.step()
        record = logger.after_update(1e-3, 1.0, 1.0)
        optimizer.zero_grad(set_to_none=True)
    means = examples.view(n_micro, micro, dim).mean(1).double()
    rows = (means - means.mean(0)) * begin * math.sqrt(micro / ((n_micro - 1) * n_micro * micro))
    exact = gram_spectrum(rows)
    torch.testing.assert_close(logger.last_spectrum, exact, rtol=1e-4, atol=1e-5 * float(exact[0]))
    assert record["spectrum_top"] == pytest.approx(float(exact[0]), rel=1e-4)
    end = logger.last_precond.double()
    assert not torch.allclose(begin, end, rtol=1e-3), "P_t should differ from P_{t-1} here"
    # the trace uses P_t: sum of the P_t-weighted spectrum, not of the logged one
    rows_end = rows / begin * end
    assert float(gram_spectrum(rows_end).sum()) == pytest.approx(record["trace_pcp"], rel=1e-4)


def test_streaming_needs_gradients_cleared_before_a_logging_step():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logger = NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=1, streaming=True)
    model(torch.ones(1, 4)).sum().backward()
    with pytest.raises(ValueError, match=r"parameter 0 \(shape \(1, 4\)\) has a non-zero \.grad"):
        logger.begin_step(1)
    optimizer.zero_grad(set_to_none=False)  # zeros are fine
    logger.begin_step(1)


# -- memory -------------------------------------------------------------------

DIM = 200_000  # D, large next to the sketch (K x 512) and the tail sample (2^12 values)


def test_live_bytes_counts_allocations_views_and_frees():
    with LiveBytes(large=4000) as memory:
        a = torch.zeros(1000)  # 4000 bytes
        view = a[10:20]  # no new memory
        b = a * 2  # 4000 bytes
        c = torch.zeros(10)  # 40 bytes, below ``large``
        del a  # the view keeps the storage alive
        assert memory.live == 8040 and memory.live_large == 8000
        del view
        assert memory.live == 4040 and memory.live_large == 4000
        del b, c
    assert memory.live == 0 and memory.peak == 8040 and memory.peak_large == 8000


class TwoLayer(torch.nn.Module):
    """loss = mean_i <w1, x_i> + <w2, x_i[:DIM // 4]>: two parameters, gradients the inputs."""

    def __init__(self):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.zeros(DIM))
        self.w2 = torch.nn.Parameter(torch.zeros(DIM // 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w1).mean() + (x[:, : DIM // 4] @ self.w2).mean()


@functools.cache
def logging_step_extra(n_micro: int, streaming: bool) -> tuple[float, float]:
    """(gradient-sized buffers, all extra bytes) the logger's calls add at the peak of a
    logging step (the second, with Adam state, held diagonals and P in place), in fp32
    gradient copies 4 D; the sketch rows and tail sample, whose size does not depend on D,
    are left out of the second."""
    torch.manual_seed(0)
    model = TwoLayer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    max_samples, width = 2**12, 512
    logger = NoiseLogger(
        model, optimizer, n_micro=n_micro, micro_batch_size=2, log_interval=1,
        sketch_width=width, hill_max_samples=max_samples, streaming=streaming,
    )  # fmt: skip
    n_coords = DIM + DIM // 4
    memory = LiveBytes(large=2 * n_coords)  # half a gradient or more
    generator = torch.Generator().manual_seed(1)
    for step in (1, 2):  # both log (N = 1); step 2 is measured
        if step == 2:
            before, before_large = memory.live, memory.live_large
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
    stride = math.ceil(n_micro * n_coords / max_samples)
    # sketch rows (and their float64 copy for the Gram matrix) and tail sample
    fixed = 4 * n_micro * (3 * width + -(-n_coords // stride))
    large = (memory.peak_large - before_large) / (4 * n_coords)
    return large, (memory.peak - before - fixed) / (4 * n_coords)


@pytest.mark.parametrize("n_micro", [2, 8, 32])
def test_streaming_logging_step_holds_three_gradient_buffers_for_any_k(n_micro):
    large, total = logging_step_extra(n_micro, True)
    # mu, M2 and the weight / P buffer; chunk temporaries of at most D / 16 besides
    assert large <= 3.0 + 1e-9, f"K={n_micro}: {large:.2f} gradient-sized buffers"
    assert total < 3.25, f"K={n_micro}: {total:.2f} gradient copies in all"
    assert large == logging_step_extra(2, True)[0], "memory grows with K"


def test_default_mode_holds_k_plus_one_copies():
    """The counter sees the default mode's K + 1 gradient copies (the reason for streaming)."""
    large, _ = logging_step_extra(8, False)
    assert large >= 9.0, f"{large:.2f} gradient-sized buffers"
