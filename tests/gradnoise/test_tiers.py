"""``attach(..., tier=...)``: economy against the exact formula, standard against today's records.

Economy (``gradnoise.estimation.norm_form``) estimates Tr(P C P) / B and B_simple at
every step from squared norms under P_{t-1}. On tests/gradnoise/test_pne_exact.py's problem
(149 parameters, N = 8192 examples, exact per-example gradients, the model frozen
by restoring its parameters after each step while Adam's P moves) the mean over
T = 300 steps is compared with the exact value under the same P_{t-1}. P_{t-1}
does not depend on the step's batch, so the estimator is exactly unbiased (no
P-bias term as in test_pne_exact.py). Tolerances are four predicted standard
errors of the T-step mean, computed from the exact covariance S, not assumed:
Tr(P C_hat P) has per-step relative SE sqrt(2 Tr(A^2) / (n - 1)) / Tr(A), A = P S P
(about 9 % for n = 16 here, 0.54 % over T = 300: a tolerance of 2.2 %); B_simple as a ratio
of means adds the SE of |G|^2 and its finite-population bias Tr(S) / (N |G|^2)
(test_pne_exact.py's guard). A formula without the n / (n - 1) factor is off by
1 / n = 6.25 %, which each test checks it would detect (the wrong value lies
outside the tolerance). The standard tier runs on the same trajectory (both taps
on one model): it uses P_t, the same micro-batch gradients, so the unpreconditioned
traces agree to float rounding and the preconditioned ones within one standard error.
Two gloo workers with half the micro-batches each, and a GradScaler, give the single
worker's unscaled records to float rounding.

Standard (``gradnoise.estimation.welford``) must give today's hook records (the K + 1
row mode, ``streaming=False``) to 1e-5, columns other than spectrum and tail index,
which are NaN. Memory: gradient-sized buffers counted with ``LiveBytes`` around every
hook call, as tests/gradnoise/test_pne_stream.py counts the logger's calls.
"""

from __future__ import annotations

import functools
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_attach import INPUTS, LABELS, train
from test_pne_exact import MICRO, N_EXAMPLES, N_MICRO_TOTAL, exact_moments, make_model, rel_se_trace

from gradnoise.estimation.formulas import preconditioner
from gradnoise.tap import attach
from gradnoise.tap.tap import NoiseTap
from gradnoise.tap.welford_tap import WelfordTap

STEPS, WARMUP, SDS = 300, 200, 4.0
SPECTRUM_TAIL = ("spectrum_top", "spectrum_top_share", "eff_rank", "hill_tail_index")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def lr_at(step: int) -> float:
    return 1e-4 + 1e-3 * (1 + math.cos(math.pi * step / STEPS)) / 2


@functools.cache
def frozen_run() -> dict:
    """Economy and standard taps on one frozen model: records, P_{t-1} and P_t of every step."""
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    saved = [p.detach().clone() for p in model.parameters()]
    gen, batch = torch.Generator().manual_seed(5), MICRO * N_MICRO_TOTAL

    def step(idx: torch.Tensor) -> None:
        for j in range(N_MICRO_TOTAL):
            part = idx[j * MICRO : (j + 1) * MICRO]
            loss = torch.nn.functional.cross_entropy(model(INPUTS[part]), LABELS[part])
            (loss / N_MICRO_TOTAL).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for p, value in zip(model.parameters(), saved, strict=True):
                p.copy_(value)

    for _ in range(WARMUP):
        step(torch.randperm(N_EXAMPLES, generator=gen)[:batch])
    economy = attach(model, optimizer, n_micro=N_MICRO_TOTAL, tier="economy")
    standard = attach(model, optimizer, n_micro=N_MICRO_TOTAL, log_interval=1)
    before, after = [], []
    for t in range(1, STEPS + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(t)
        before.append(_flat_precond(optimizer, model))
        step(torch.randperm(N_EXAMPLES, generator=gen)[:batch])
        after.append(_flat_precond(optimizer, model))
    return {"economy": economy.records, "standard": standard.records,
            "before": torch.stack(before), "after": torch.stack(after)}  # fmt: skip


def _flat_precond(optimizer, model) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in preconditioner(optimizer, list(model.parameters()))])


@pytest.fixture(scope="module")
def exact() -> dict:
    return exact_moments()


def column(records: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([r[key] for r in records], dtype=torch.float64)


def test_economy_trace_is_unbiased_under_the_previous_preconditioner(exact):
    run = frozen_run()
    records, p2 = run["economy"], run["before"].double() ** 2
    assert [r["step"] for r in records] == list(range(1, STEPS + 1)), "every step logs"
    truth = (p2 * exact["cov"]).sum(1) / (MICRO * N_MICRO_TOTAL)  # Tr(P_{t-1} S P_{t-1}) / B
    se = rel_se_trace(exact["cov_matrix"], p2[0], N_MICRO_TOTAL) / math.sqrt(STEPS)
    tolerance = SDS * se
    logged = column(records, "trace_pcp")
    spread = float((logged / truth).std()) / math.sqrt(STEPS)
    assert spread < 1.5 * se, f"observed SE {spread:.4f} vs predicted {se:.4f}"
    ratio = float(logged.mean() / truth.mean())
    assert abs(ratio - 1) < tolerance, f"Tr(P C P)/B off by {ratio - 1:.2%} (tol {tolerance:.2%})"
    n = N_MICRO_TOTAL
    wrong = ratio * (n - 1) / n  # the same sums without the n / (n - 1) factor
    assert abs(wrong - 1) > tolerance, "the test cannot tell a formula without n / (n - 1)"
    # every step's own eta_t and c_t^2 (c_t from the logged clip coefficient)
    lr, clip = column(records, "lr"), column(records, "clip_coef")
    assert 0 < float((clip < 1).double().mean()) < 1, "clipping active on some steps only"
    assert records[-1]["int_pne"] == pytest.approx(float((lr * logged).sum()), rel=1e-9)
    assert records[-1]["int_pne_eff"] == pytest.approx(float((lr * clip**2 * logged).sum()))
    assert records[-1]["int_pne_eff"] < records[-1]["int_pne"]


def test_economy_b_simple_is_unbiased(exact):
    records, n, batch = frozen_run()["economy"], N_MICRO_TOTAL, MICRO * N_MICRO_TOTAL
    tr_s, g2 = float(exact["cov"].sum()), float((exact["mean"] ** 2).sum())
    g_s_g = float(exact["mean"] @ exact["cov_matrix"] @ exact["mean"])
    tr_s2 = float((exact["cov_matrix"] ** 2).sum())
    se_cov = math.sqrt(2 * tr_s2 / (n - 1)) / tr_s / math.sqrt(STEPS)
    var_g2 = 4 * g_s_g / batch + 2 * tr_s2 / batch**2 * (1 + 1 / (n - 1))
    se_g2 = math.sqrt(var_g2) / g2 / math.sqrt(STEPS)
    bias = tr_s / (N_EXAMPLES * g2)  # E[grad_sq] = |G|^2 - Tr(S) / N without replacement
    trace_cov, grad_sq = column(records, "trace_cov"), column(records, "grad_sq")
    assert abs(float(trace_cov.mean()) / tr_s - 1) < SDS * se_cov
    assert float(grad_sq.mean()) == pytest.approx(g2 - tr_s / N_EXAMPLES, rel=SDS * se_g2)
    tolerance = SDS * math.hypot(se_cov, se_g2) + bias
    ratio = float(trace_cov.mean() / grad_sq.mean()) / (tr_s / g2)
    assert abs(ratio - 1) < tolerance, f"B_simple off by {ratio - 1:.2%} (tol {tolerance:.2%})"
    assert records[-1]["b_simple_run"] == pytest.approx(ratio * tr_s / g2, rel=1e-9)
    assert abs(ratio * (n - 1) / n - 1) > tolerance, "cannot tell a formula without n / (n - 1)"


def test_economy_agrees_with_the_standard_tier_on_the_same_run(exact):
    run = frozen_run()
    economy, standard = run["economy"], run["standard"]
    assert len(standard) == len(economy) == STEPS
    # no preconditioner: the same micro-batch gradients and formula, float rounding apart
    for key in ("trace_cov", "grad_sq"):
        scale = column(standard, "trace_cov") / (MICRO * N_MICRO_TOTAL)
        diff = (column(economy, key) - column(standard, key)).abs()
        assert bool((diff <= 1e-4 * column(standard, key).abs() + 1e-4 * scale).all()), key
    # P_{t-1} against P_t: within the standard error of the T-step mean
    se = rel_se_trace(exact["cov_matrix"], run["after"][0].double() ** 2, N_MICRO_TOTAL)
    se /= math.sqrt(STEPS)
    for key in ("trace_pcp", "trace_pfp_fisher", "pne", "pne_star", "pne_eff"):
        ratio = float(column(economy, key).mean() / column(standard, key).mean())
        assert abs(ratio - 1) < se, f"{key}: economy / standard = {ratio:.5f}, SE {se:.4f}"
    for key in ("int_pne", "int_pne_star", "int_pne_eff"):
        ratio = economy[-1][key] / standard[-1][key]
        assert abs(ratio - 1) < se, f"{key}: economy / standard = {ratio:.5f}"


DDP_STEPS = 8


def tier_run(rank: int, world: int, tier: str = "economy", scaler=None) -> list[dict]:
    """DDP_STEPS steps of the same 16 micro-batches, this rank taking its share; the records."""
    model = make_model()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    options = {} if tier == "economy" else {"log_interval": 2}
    tap = attach(net, optimizer, n_micro=N_MICRO_TOTAL // world, tier=tier, scaler=scaler,
                 **options)  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    for _ in range(DDP_STEPS):
        local = torch.randperm(N_EXAMPLES, generator=gen)[: MICRO * N_MICRO_TOTAL]
        local = local.view(world, -1)[rank]
        for j in range(N_MICRO_TOTAL // world):
            part = local[j * MICRO : (j + 1) * MICRO]
            loss = torch.nn.functional.cross_entropy(net(INPUTS[part]), LABELS[part])
            loss = loss / (N_MICRO_TOTAL // world)
            (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad()
    return tap.records


def _tiers_worker(rank: int, world: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        records = {tier: tier_run(rank, world, tier) for tier in ("economy", "standard")}
        if rank == 0:
            torch.save(records, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_economy_and_standard_two_ddp_workers_equal_one(tmp_path):
    """W = 2 sees the same 16 micro-batch means as W = 1 (halves of the same batch): the
    all-reduced scalars (economy), the pooled moments (standard) and the buckets' norms
    give the same records, float rounding apart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_path = str(tmp_path / "rank0.pt")
    mp.spawn(_tiers_worker, args=(2, port, out_path), nprocs=2, join=True)
    double = torch.load(out_path)
    single = {tier: tier_run(0, 1, tier) for tier in ("economy", "standard")}
    assert len(double["economy"]) == len(single["economy"]) == DDP_STEPS
    assert len(double["standard"]) == len(single["standard"]) > 2
    assert any(r["clip_coef"] < 1 for r in single["economy"]), "clipping: c_t from the buckets"
    for tier, keys in (("economy", ("clip_coef", "pne_star", "int_pne_star_eff")),
                       ("standard", ("clip_rate", "pne_star", "int_pne_star_eff"))):  # fmt: skip
        for one, two in zip(single[tier], double[tier], strict=True):
            for key in ("trace_pcp", "trace_pfp", "trace_cov", "pne_eff", "int_pne", *keys):
                assert two[key] == pytest.approx(one[key], rel=1e-4), f"{tier} {key}"
            assert two["grad_sq"] == pytest.approx(one["grad_sq"], abs=1e-4 * one["trace_cov"])


def test_economy_with_a_grad_scaler_equals_unscaled():
    """The hooks see gradients scaled by S = 2^16 and divide by it: the same records."""
    scaled = tier_run(0, 1, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
    for one, two in zip(tier_run(0, 1), scaled, strict=True):
        for key in ("trace_pcp", "trace_pfp", "trace_cov", "pne_eff", "clip_coef", "int_pne"):
            assert two[key] == pytest.approx(one[key], rel=1e-5), key


# -- standard: today's records with two gradient-sized buffers -------------------


def assert_same_but_spectrum(lean: list[dict], today: list[dict]) -> None:
    assert len(lean) == len(today) > 0
    for one, two in zip(lean, today, strict=True):
        assert one.keys() == two.keys()
        for key in SPECTRUM_TAIL:
            assert math.isnan(one[key]), key
        near_zero = abs(two["grad_sq"]) < 1e-2 * two["trace_cov"]
        for key, value in two.items():
            if key == "layers" or key in SPECTRUM_TAIL:
                continue
            if key.startswith("b_simple") and near_zero:
                continue  # |G|^2 near its rounding: the ratio amplifies it
            scale = two["trace_cov"] if key in ("grad_sq", "int_grad_sq") else 0.0
            assert one[key] == pytest.approx(value, rel=1e-5, abs=1e-6 * scale + 1e-12,
                                             nan_ok=True), key  # fmt: skip
        for row_one, row_two in zip(one["layers"], two["layers"], strict=True):
            assert row_one["layer"] == row_two["layer"]
            for key, value in row_two.items():
                if isinstance(value, float):
                    scale = row_two["trace_cov"] if key == "grad_sq" else 0.0
                    assert row_one[key] == pytest.approx(value, rel=1e-5, abs=1e-6 * scale), key


@pytest.mark.parametrize("n_micro", [2, 8])
def test_standard_tier_equals_todays_records(n_micro):
    lean = train(n_micro, 10)
    assert isinstance(lean, WelfordTap)
    assert_same_but_spectrum(lean.records, train(n_micro, 10, streaming=False).records)


def test_standard_tier_with_injected_noise_and_grad_scaler_equals_todays_records():
    lean = train(4, 6, inject=3.0, max_norm=None, log_interval=1)
    today = train(4, 6, inject=3.0, max_norm=None, log_interval=1, streaming=False)
    assert_same_but_spectrum(lean.records, today.records)
    assert lean.records[-1]["int_pne_star_injected"] > 0
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    lean = train(4, 9, scaler=scaler, inf_at=4, log_interval=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    today = train(4, 9, scaler=scaler, inf_at=4, log_interval=2, streaming=False)
    assert lean.skipped_steps == 1
    assert_same_but_spectrum(lean.records, today.records)


def test_tiers_reject_what_they_cannot_estimate():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="tier"):
        attach(model, optimizer, n_micro=2, tier="business")
    with pytest.raises(TypeError, match="tier='economy'"):
        attach(model, optimizer, n_micro=2, tier="economy", log_interval=5)
    with pytest.raises(ValueError, match="the full tier is the streaming one"):
        attach(model, optimizer, n_micro=2, tier="full", streaming=False)
    # an option of the spectrum or the proxies keeps the logger's own mode (today's attach)
    own_mode = attach(model, optimizer, n_micro=2, micro_batch_size=4, proxies=("ggn",))
    assert type(own_mode) is NoiseTap
    assert type(attach(model, optimizer, n_micro=2, micro_batch_size=4)) is WelfordTap
    tap = attach(model, optimizer, n_micro=2, micro_batch_size=4, tier="economy")
    with pytest.raises(RuntimeError, match="injected"):
        tap.add_injected(torch.zeros(149))


# -- memory ---------------------------------------------------------------------
