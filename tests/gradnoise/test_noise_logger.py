"""The P-NE logger sees injected noise: logged P-NE = exact expectation (sampling + injected).

As in tests/gradnoise/test_pne_exact.py: a model small enough for exact per-example
gradients (``torch.func.vmap(grad)``), frozen (the optimizer's learning rate is
0, the logger gets a non-zero schedule), so the exact per-example covariance S
(unbiased, 1 / (N - 1)) is fixed while Adam's second moment, hence P_t, moves
with the gradients, which here include the injected noise. Per logging step
the exact expectation is

    E[trace_pcp] = Tr(P S P) / B + Tr(P Sigma P),   Sigma = s diag(d)

with P the step's logged preconditioner. Tolerance: the sampling part's
per-step relative standard error is about sqrt(2 / ((n - 1) r_eff)) (8 % with
n = 16 micro-batches, r_eff ~ 19, tests/gradnoise/test_pne_exact.py) and the injected part
is exact, so the mean over 200 logging steps is within 0.6 % and 3 % is five
standard errors. The integral int P-NE is checked the same way.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch.func import functional_call, grad, vmap

from gradnoise.estimation.logger import NoiseLogger
from gradnoise.injection.gradient_noise import GradientNoise

N_EXAMPLES, D_IN, HIDDEN, CLASSES = 4096, 6, 12, 5
MICRO, N_MICRO, STEPS, WARMUP = 16, 16, 260, 60
TOLERANCE = 0.03


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_problem():
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(N_EXAMPLES, D_IN, generator=gen)
    teacher = torch.randn(D_IN, CLASSES, generator=gen)
    labels = torch.multinomial(torch.softmax(2 * inputs @ teacher, 1), 1, generator=gen)[:, 0]
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        OrderedDict(
            hidden=torch.nn.Linear(D_IN, HIDDEN),
            act=torch.nn.Tanh(),
            out=torch.nn.Linear(HIDDEN, CLASSES),
        )
    )
    return model, inputs, labels


def exact_covariance_diag(model, inputs, labels) -> torch.Tensor:
    """diag(S), S the unbiased per-example gradient covariance at the (frozen) parameters."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, y):
        out = functional_call(model, p, (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, inputs, labels)
    flat = torch.cat([per_example[k].reshape(N_EXAMPLES, -1) for k in params], 1)
    return flat.var(0, unbiased=True)


@pytest.mark.parametrize("streaming", [False, True], ids=["snapshots", "streaming"])
def test_logged_pne_includes_the_injected_covariance_exactly(streaming):
    model, inputs, labels = make_problem()
    cov_s = exact_covariance_diag(model, inputs, labels)
    batch = MICRO * N_MICRO
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.95))
    logger = NoiseLogger(
        model, optimizer, n_micro=N_MICRO, micro_batch_size=MICRO, log_interval=1,
        streaming=streaming,
    )  # fmt: skip
    noise = GradientNoise(model.parameters(), "gaussian", seed=3)
    gen = torch.Generator().manual_seed(2)
    shape = torch.rand(cov_s.numel(), generator=gen) + 0.5
    # injected variance of the order of the sampling noise, s = 3 of a shape with its scale
    diag = shape * cov_s.mean() / batch
    logged, exact, sampling, integral = [], [], [], 0.0
    for step in range(1, STEPS + 1):
        lr = 1e-3 * (1 + math.cos(math.pi * step / STEPS))
        logger.begin_step(step, log=True)
        order = torch.randperm(N_EXAMPLES, generator=gen)[:batch]
        for j in range(N_MICRO):
            idx = order[j * MICRO : (j + 1) * MICRO]
            loss = torch.nn.functional.cross_entropy(model(inputs[idx]), labels[idx]) / N_MICRO
            loss.backward()
            logger.after_micro_backward()
        logger.add_injected(noise.inject(3.0, diag=diag))
        optimizer.step()
        before = logger.sums["int_pne"]
        record = logger.after_update(lr, grad_norm=1.0, clip_coef=1.0)
        optimizer.zero_grad(set_to_none=True)
        if step <= WARMUP:
            integral_at_warmup = logger.sums["int_pne"]
            continue
        precond_sq = logger.last_precond**2
        expected = float(precond_sq @ cov_s) / batch + float(precond_sq @ (3.0 * diag))
        sampling.append(float(precond_sq @ cov_s) / batch)
        logged.append(record["trace_pcp"])
        exact.append(expected)
        integral += lr * expected
        assert logger.sums["int_pne"] - before == pytest.approx(lr * record["trace_pcp"])
    injected_share = (
        3.0 * float(diag.sum()) / (3.0 * float(diag.sum()) + float(cov_s.sum()) / batch)
    )
    assert 0.2 < injected_share < 0.9  # both parts matter
    ratio = sum(logged) / sum(exact)
    print(f"logged / exact trace_pcp over {len(logged)} steps: {ratio:.4f}")
    assert ratio == pytest.approx(1.0, abs=TOLERANCE)
    assert (logger.sums["int_pne"] - integral_at_warmup) / integral == pytest.approx(
        1.0, abs=TOLERANCE
    )
    # the sampling part alone is far from what is logged: the injected part is in it
    assert sum(logged) / sum(sampling) > 1 + 10 * TOLERANCE
    assert record["int_pne_star_injected"] > 0
