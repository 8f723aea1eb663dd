"""B_simple as a ratio of means, against the exact noise scale (issue 8, item 4).

The model and data of ``tests/gradnoise/test_pne_exact.py`` (every per-example gradient
exact, parameters frozen), at a small batch B = 32 where one step's ratio
Tr(C_hat) / |G|^2_hat is biased upwards: E[1/X] > 1/E[X] for the noisy
denominator. The run's ``b_simple_run`` (step sums of numerator and
denominator, McCandlish et al. 2018, App. A) and the window ratios
``b_simple_window`` must match Tr(S) / |G|^2 within 5 %.

Why 5 % is safe: the ratio of T-step means has relative SE about
sqrt(var_num / num^2 + var_den / den^2) / sqrt(T) (delta method; computed below
from the exact moments, per step |G|^2_hat has variance
4 G^T S G / B + 2 Tr(S^2) / B^2 (1 + 1 / (n - 1))), and a finite-population
bias Tr(S) / (N |G|^2); the test asserts 3 SE + bias < 5 % before comparing
(one step's ratio has a relative SE near 40 % here, so T = 800 steps).
"""

from __future__ import annotations

import math

import pytest
import torch
from test_pne_exact import N_EXAMPLES, exact_moments, make_data, make_model

from gradnoise.estimation.logger import NoiseLogger

MICRO, N_MICRO, STEPS, WINDOW = 4, 8, 800, 16
TOLERANCE = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run() -> list[dict]:
    """STEPS logged steps of a frozen model, B = MICRO * N_MICRO distinct examples each."""
    inputs, labels = make_data()
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    logger = NoiseLogger(
        model, optimizer, n_micro=N_MICRO, micro_batch_size=MICRO, log_interval=1,
        b_simple_window=WINDOW, sketch_width=64,
    )  # fmt: skip
    batches = torch.Generator().manual_seed(7)
    records = []
    for step in range(1, STEPS + 1):
        logger.begin_step(step)
        idx = torch.randperm(N_EXAMPLES, generator=batches)[: MICRO * N_MICRO]
        for j in range(N_MICRO):
            part = idx[j * MICRO : (j + 1) * MICRO]
            loss = torch.nn.functional.cross_entropy(model(inputs[part]), labels[part])
            (loss / N_MICRO).backward()
            logger.after_micro_backward()
        optimizer.step()
        records.append(logger.after_update(1e-3, 1.0, 1.0))
        optimizer.zero_grad()
    return records


def test_ratio_of_means_matches_the_exact_noise_scale_where_one_step_is_biased(run):
    exact = exact_moments()
    global_batch, n = MICRO * N_MICRO, N_MICRO
    trace_s, g2 = float(exact["cov"].sum()), float((exact["mean"] ** 2).sum())
    truth = trace_s / g2
    g_s_g = float(exact["mean"] @ exact["cov_matrix"] @ exact["mean"])
    tr_s2 = float((exact["cov_matrix"] ** 2).sum())
    var_den = 4 * g_s_g / global_batch + 2 * tr_s2 / global_batch**2 * (1 + 1 / (n - 1))
    var_num = 2 * tr_s2 / (n - 1)
    se = math.sqrt(var_num / trace_s**2 + var_den / g2**2) / math.sqrt(STEPS)
    bias = trace_s / (N_EXAMPLES * g2)
    assert 3 * se + bias < TOLERANCE, f"test too weak: SE {se:.4f}, bias {bias:.4f}"

    per_step = torch.tensor([r["b_simple"] for r in run], dtype=torch.float64)
    mean_of_ratios = float(per_step.mean())
    assert mean_of_ratios > 1.05 * truth, (
        f"one step's ratio should be visibly biased at this batch (mean {mean_of_ratios:.3g} vs "
        f"exact {truth:.3g}); the test would show nothing"
    )
    final = run[-1]
    assert final["b_simple_run"] == pytest.approx(truth, rel=TOLERANCE)
    assert final["b_simple_run"] == pytest.approx(
        final["int_trace_cov"] / final["int_grad_sq"], rel=1e-12
    )
    # the window: the latest WINDOW logged estimates, numerator and denominator summed
    last = run[-WINDOW:]
    pooled = sum(r["trace_cov"] for r in last) / sum(r["grad_sq"] for r in last)
    assert final["b_simple_window"] == pytest.approx(pooled, rel=1e-12)
    disjoint = torch.tensor([r["b_simple_window"] for r in run[WINDOW - 1 :: WINDOW]])
    window_bias = var_den / g2**2 / WINDOW  # E[1/X] - 1/E[X] to second order
    assert window_bias + 3 * float(disjoint.std()) / truth / math.sqrt(len(disjoint)) < TOLERANCE
    assert float(disjoint.mean()) == pytest.approx(truth, rel=TOLERANCE)
