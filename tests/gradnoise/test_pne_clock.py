"""P-NE* is the step-size clock times the noise fraction (issue 22, item 4).

P-NE*_t = (eta_t / B) f_t with f_t = Tr(P C P) / max(floor, Tr(P F P)). The logger sums
the clock ``int_clock`` = sum_t eta_t / B over every optimizer step, logging or not,
and ``int_pne_star`` = sum_t (eta_t / B) f_held(t), the held noise diagonals under each
step's own P and eta: both are checked here against sums recomputed from every step,
under a learning rate that changes every step and a logging stride that skips most
steps. The economy tier's records carry the same clock.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_pne_properties import batches, mlp, train_step

from gradnoise.estimation.formulas import curvature_floor
from gradnoise.estimation.integrals import ExposureIntegral
from gradnoise.estimation.logger import NoiseLogger
from gradnoise.tap import attach

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

N_MICRO, MICRO, STEPS, EPS_REL = 2, 16, 23, 1e-6
BATCH = N_MICRO * MICRO
LRS = [1e-3 * (1 + 0.6 * math.sin(0.7 * s)) for s in range(1, STEPS + 1)]


@pytest.fixture(scope="module")
def logged_run() -> dict:
    """Adam on the small MLP, logging at steps 1, 2, 4 and every 7th: its records and, per
    step, eta_t and the noise fraction of the held estimate under that step's P."""
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LRS[0])
    logger = NoiseLogger(model, optimizer, n_micro=N_MICRO, micro_batch_size=MICRO,
                         log_interval=7, eps_rel=EPS_REL)  # fmt: skip
    records, fractions = {}, []
    for step, (batch, lr) in enumerate(zip(batches(STEPS, BATCH), LRS, strict=True), start=1):
        for group in optimizer.param_groups:
            group["lr"] = lr
        record, _ = train_step(model, optimizer, logger, step, batch, N_MICRO, lr)
        traces = logger.step_traces  # the held diagonals under P_t (Tr(P C P) / B, Tr(P F P))
        floor = curvature_floor(EPS_REL, traces["fisher"])
        fractions.append(BATCH * traces["trace_pcp"] / max(floor, traces["fisher"]))
        if record is not None:
            records[step] = record
    return {"records": records, "fractions": fractions, "sums": dict(logger.sums)}


def test_int_clock_sums_eta_over_b_over_every_step(logged_run):
    records = logged_run["records"]
    assert sorted(records) == [1, 2, 4, 7, 14, 21], "most steps do not log"
    for step, record in records.items():
        clock = 0.0
        for lr in LRS[:step]:  # the order the logger adds them in: the same float, exactly
            clock += lr / BATCH
        assert record["int_clock"] == clock, f"step {step}"
        logged_only = sum(LRS[s - 1] / BATCH for s in records if s <= step)
        if step > 2:  # steps 1 and 2 are the only steps so far: the two sums agree there
            assert record["int_clock"] != pytest.approx(logged_only, rel=1e-3)
    assert logged_run["sums"]["int_clock"] == pytest.approx(sum(LRS) / BATCH, rel=1e-14)


def test_int_pne_star_is_the_clock_weighted_held_noise_fraction(logged_run):
    fractions, records = logged_run["fractions"], logged_run["records"]
    assert max(fractions) / min(fractions) > 1.05, "the test needs the fraction to vary"
    expected = sum(lr / BATCH * f for lr, f in zip(LRS, fractions, strict=True))
    sums = logged_run["sums"]
    assert sums["int_pne_star"] == pytest.approx(expected, rel=1e-12)
    assert sums["int_pne_star_fisher"] == pytest.approx(expected, rel=1e-12)
    mean_fraction = sums["int_pne_star"] / sums["int_clock"]
    assert min(fractions) <= mean_fraction <= max(fractions)
    # a logging step's own P-NE*_t is (eta_t / B) f_t, f_t from its fresh estimate (the
    # record's traces are summed in another order than the held rows' dot products: 1e-7)
    for step, record in records.items():
        rate = LRS[step - 1] / BATCH
        assert record["pne_star"] / rate == pytest.approx(fractions[step - 1], rel=1e-6)
    # through each row: int P-NE* up to the row = the sum of (eta / B) f over every step
    for step, record in records.items():
        partial = sum(lr / BATCH * f for lr, f in zip(LRS[:step], fractions[:step], strict=True))
        assert record["int_pne_star"] == pytest.approx(partial, rel=1e-12)


def test_old_resume_state_without_the_clock_is_refused():
    integral = ExposureIntegral("fisher", (), 8, EPS_REL)
    state = integral.state_dict()
    del state["sums"]["int_clock"]
    with pytest.raises(ValueError, match="int_clock"):
        ExposureIntegral("fisher", (), 8, EPS_REL).load_state_dict(state, torch.device("cpu"))


def test_economy_tier_records_carry_the_clock():
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LRS[0])
    tap = attach(model, optimizer, n_micro=N_MICRO, micro_batch_size=MICRO, tier="economy")
    for step, (batch, lr) in enumerate(zip(batches(8, BATCH), LRS[:8], strict=True), start=1):
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_step(model, optimizer, None, step, batch, N_MICRO, lr)
    tap.detach()
    assert len(tap.records) == 8
    clock = 0.0
    for record, lr in zip(tap.records, LRS, strict=False):
        clock += lr / BATCH
        assert record["int_clock"] == clock
        # f_t <= B / (B - 1) without injected noise: the unbiased |P G|^2 >= -Tr(P C P) / B
        assert record["pne_star"] <= lr / (BATCH - 1) * (1 + 1e-9)
        assert 0 < record["int_pne_star"] <= record["int_clock"] * BATCH / (BATCH - 1) * (1 + 1e-9)
