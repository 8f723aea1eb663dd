"""The P-NE estimator against the exact formula, for W = 1 and W = 2 data-parallel workers.

The model is small enough (149 parameters, N = 4096 examples) that every
per-example gradient is computed exactly (``torch.func.vmap(grad)``). Its
parameters are frozen (the optimizer's learning rate is 0; the logger is handed
a separate, non-zero schedule), so the exact per-example covariance S (unbiased,
1 / (N - 1)), mean gradient G and empirical Fisher F = mean_i g_i^2 are fixed,
while Adam's second moment, and hence P_t, still evolves with the gradients.

Each step draws B = m * n distinct examples (n = K * W micro-batches of m), the
sampling the trainer uses. Under that sampling the estimators are exactly
unbiased (see ``gradnoise.estimation.formulas``):
E[Tr(P C_hat P)/B] = Tr(P S P)/B, E[fisher] = F, E[grad_sq] = |G|^2 - Tr(S)/N.

Why 3 % is a safe tolerance. For Gaussian micro-batch means the unbiased
variance of n means has Var[Tr(P C_hat P)] = 2 Tr(A^2) / (n - 1), A = P S P, so one
step's relative standard error is sqrt(2 / ((n - 1) r_eff)), r_eff =
Tr(A)^2 / Tr(A^2). Here n = 16 and r_eff is about 19: 8 % per step, 0.5 % as the
mean of T = 300 logging steps, so 3 % is six standard errors. The same holds
per layer and for the Fisher trace (computed below, not assumed: each test
first asserts that bias + 4 predicted standard errors < 3 %, and that the
observed step-to-step spread agrees). B_simple's denominator |G|^2 has relative
standard error sqrt(4 G^T S G / B + 2 Tr(S^2) / B^2) / |G|^2 per step and a
finite-population bias Tr(S) / (N |G|^2) (B_simple / N, 0.6 % here), both
included in the guard. P_t depends weakly on the step's own gradient through
v_t (weight (1 - beta2) / (1 - beta2^t), 0.2 % after the 500 warm-up steps), a
bias well inside the budget.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.func import functional_call, grad, vmap

from gradnoise.estimation.logger import NoiseLogger

N_EXAMPLES, D_IN, HIDDEN, CLASSES = 8192, 6, 12, 5
MICRO, N_MICRO_TOTAL, STEPS, WARMUP = 16, 16, 600, 500
MAX_NORM, TOLERANCE = 0.5, 0.03


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(N_EXAMPLES, D_IN, generator=gen)
    teacher = torch.randn(D_IN, CLASSES, generator=gen)
    labels = torch.multinomial(torch.softmax(2 * inputs @ teacher, 1), 1, generator=gen)[:, 0]
    return inputs, labels


def make_model() -> torch.nn.Module:
    torch.manual_seed(1)
    layers = OrderedDict(
        hidden=torch.nn.Linear(D_IN, HIDDEN),
        act=torch.nn.Tanh(),
        out=torch.nn.Linear(HIDDEN, CLASSES),
    )
    return torch.nn.Sequential(layers)


def lr_at(step: int) -> float:
    return 1e-4 + 1e-3 * (1 + math.cos(math.pi * step / STEPS)) / 2


def simulate(rank: int, world: int, out_path: str | None = None, streaming: bool = False) -> dict:
    """Train with the logger as the trainer does; this rank takes its share of micro-batches.

    ``streaming`` selects the logger's streaming mode (``NoiseLogger(streaming=True)``).
    """
    inputs, labels = make_data()
    model = make_model()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.999))
    batches = torch.Generator().manual_seed(5)
    global_batch = MICRO * N_MICRO_TOTAL
    n_micro = N_MICRO_TOTAL // world

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(inputs[idx]), labels[idx])

    for _ in range(WARMUP):  # Adam's v settles, so P_t hardly depends on the current batch
        idx = torch.randperm(N_EXAMPLES, generator=batches)[:global_batch]
        loss_of(idx.view(world, -1)[rank]).backward()
        optimizer.step()
        optimizer.zero_grad()
    logger = NoiseLogger(
        net, optimizer, n_micro=n_micro, micro_batch_size=MICRO, world_size=world, log_interval=1,
        streaming=streaming,
    )  # fmt: skip
    records, preconds, lrs, clips = [], [], [], []
    for step in range(1, STEPS + 1):
        logger.begin_step(step)
        idx = torch.randperm(N_EXAMPLES, generator=batches)[:global_batch]
        local = idx.view(world, -1)[rank]
        with net.no_sync() if world > 1 else contextlib.nullcontext():
            for j in range(n_micro):
                (loss_of(local[j * MICRO : (j + 1) * MICRO]) / n_micro).backward()
                logger.after_micro_backward()
        if world > 1:  # the trainer's average of the gradients, as one message
            flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            dist.all_reduce(flat)
            for p, piece in zip(model.parameters(), flat.split(logger.sizes), strict=True):
                p.grad.copy_(piece.view_as(p) / world)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM))
        clip_coef = min(1.0, MAX_NORM / (grad_norm + 1e-6))
        optimizer.step()
        records.append(logger.after_update(lr_at(step), grad_norm, clip_coef))
        optimizer.zero_grad()
        preconds.append(logger.last_precond.clone())
        lrs.append(lr_at(step))
        clips.append(clip_coef)
    result = {"records": records, "precond": torch.stack(preconds), "lr": lrs, "clip": clips}
    if out_path is not None and rank == 0:
        torch.save(result, out_path)
    return result


def _worker(rank: int, world: int, port: int, out_path: str, streaming: bool) -> None:
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        simulate(rank, world, out_path, streaming)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def exact() -> dict:
    return exact_moments()


def exact_moments() -> dict:
    """Exact per-example gradients of the frozen model: diag S (unbiased), G, diag F, per layer."""
    inputs, labels = make_data()
    model = make_model()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p, x, t):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (x[None],)), t[None])

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, inputs, labels)
    grads = torch.cat([per_example[k].reshape(N_EXAMPLES, -1) for k in params], 1).double()
    layer_of = torch.tensor(
        [i for i, (k, v) in enumerate(params.items()) for _ in range(v.numel())]
    )
    layer_names = [k.rsplit(".", 1)[0] for k in params]
    centred = grads - grads.mean(0)
    return {
        "grads": grads,
        "cov_matrix": centred.T @ centred / (N_EXAMPLES - 1),  # S, (D, D)
        "cov": grads.var(0),
        "mean": grads.mean(0),
        "fisher": (grads**2).mean(0),
        "param_layer": [layer_names[i] for i in layer_of.tolist()],
    }


@pytest.fixture(scope="module", params=[False, True], ids=["snapshots", "streaming"])
def single(request) -> dict:
    """One worker, in the logger's default mode (K + 1 snapshots) and in its streaming mode."""
    return simulate(0, 1, streaming=request.param) | {"streaming": request.param}


def rel_se_trace(cov: torch.Tensor, weight: torch.Tensor, n: int) -> float:
    """Predicted relative SE of one step's Tr(P C_hat P), W = P^2: sqrt(2 Tr(A^2)/(n-1)) / Tr(A).

    A = P S P with S the (D, D) exact per-example covariance; Gaussian micro-batch means.
    """
    root = weight.sqrt()
    a = root[:, None] * cov * root[None, :]
    return math.sqrt(2 * float((a**2).sum()) / (n - 1)) / float(torch.trace(a))


def check_against_exact(run: dict, exact: dict) -> dict[str, float]:
    """Assert every logged quantity matches its exact value; return the relative errors."""
    errors: dict[str, float] = {}
    records, precond = run["records"], run["precond"].double()
    global_batch = MICRO * N_MICRO_TOTAL
    lr, clip = torch.tensor(run["lr"]).double(), torch.tensor(run["clip"]).double()
    p2 = precond**2  # (T, D)
    exact_trace = (p2 * exact["cov"]).sum(1) / global_batch  # Tr(P S P)/B per step
    logged = {
        k: torch.tensor([r[k] for r in records]).double() for k in records[0] if k != "layers"
    }

    # The design guard: 4 predicted standard errors (+ bias) fit in the tolerance.
    se = rel_se_trace(exact["cov_matrix"], p2[0], N_MICRO_TOTAL) / math.sqrt(STEPS)
    assert 4 * se + 0.002 < TOLERANCE, f"test too weak: predicted SE {se:.4f}"
    spread = float((logged["trace_pcp"] / exact_trace).std()) / math.sqrt(STEPS)
    assert spread < 2 * se, f"observed SE {spread:.4f} vs predicted {se:.4f}"

    def close(estimate: float, truth: float, what: str) -> None:
        error = abs(estimate / truth - 1)
        errors[what] = float(estimate / truth - 1)
        assert error < TOLERANCE, (
            f"{what}: logged {estimate:.6g} vs exact {truth:.6g} ({error:.1%})"
        )

    close(logged["trace_pcp"].mean(), exact_trace.mean(), "Tr(P C P)/B")
    close(logged["trace_pfp"].mean(), (p2 * exact["fisher"]).sum(1).mean(), "Tr(P F P)")
    close(records[-1]["int_pne"], (lr * exact_trace).sum(), "integrated potential P-NE")
    close(
        records[-1]["int_pne_eff"], (lr * clip**2 * exact_trace).sum(), "integrated effective P-NE"
    )
    close(records[-1]["int_pne_eta2"], (lr**2 * exact_trace).sum(), "integrated eta^2 variant")
    assert 0.2 < float((clip < 1).double().mean()) < 0.8, "clipping should be active on some steps"

    tr_s, g2 = float(exact["cov"].sum()), float((exact["mean"] ** 2).sum())
    g_s_g = float(exact["mean"] @ exact["cov_matrix"] @ exact["mean"])
    tr_s2 = float((exact["cov_matrix"] ** 2).sum())
    n = N_MICRO_TOTAL
    var_g2 = 4 * g_s_g / global_batch + 2 * tr_s2 / global_batch**2 * (1 + 1 / (n - 1))
    se_ratio = math.hypot(math.sqrt(var_g2) / g2, math.sqrt(2 * tr_s2 / (n - 1)) / tr_s)
    bias = tr_s / (N_EXAMPLES * g2)  # E[grad_sq] = |G|^2 - Tr(S)/N without replacement
    assert 4 * se_ratio / math.sqrt(STEPS) + bias < TOLERANCE, f"B_simple SE {se_ratio:.3f}"
    close(logged["trace_cov"].mean() / logged["grad_sq"].mean(), tr_s / g2, "B_simple")

    layer_names = list(dict.fromkeys(exact["param_layer"]))
    for name in layer_names:
        mask = torch.tensor([layer == name for layer in exact["param_layer"]])
        exact_layer = (p2[:, mask] * exact["cov"][mask]).sum(1) / global_batch
        se_layer = rel_se_trace(
            exact["cov_matrix"][mask][:, mask], p2[0, mask], N_MICRO_TOTAL
        ) / math.sqrt(STEPS)
        assert 4 * se_layer + 0.002 < TOLERANCE, f"layer {name}: predicted SE {se_layer:.4f}"
        logged_layer = torch.tensor(
            [row["trace_pcp"] for r in records for row in r["layers"] if row["layer"] == name]
        )
        close(logged_layer.mean(), exact_layer.mean(), f"layer {name} Tr(P C P)/B")
    for r in records:
        for key in ("trace_pcp", "pne", "pne_star", "pne_eff"):
            total = sum(row[key] for row in r["layers"])
            assert total == pytest.approx(r[key], rel=1e-9), (
                f"layers' {key} do not sum to the total"
            )
    return errors


def test_single_worker_matches_exact_formula(single, exact):
    check_against_exact(single, exact)


@pytest.mark.slow
def test_two_workers_match_single_worker_and_exact_formula(single, exact, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_path = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, port, out_path, single["streaming"]), nprocs=2, join=True)
    double = torch.load(out_path)
    assert torch.allclose(double["precond"], single["precond"], rtol=1e-4), (
        "P differs between W=1 and W=2"
    )
    for r1, r2 in zip(single["records"], double["records"], strict=True):
        for key in (
            "trace_pcp",
            "trace_pfp",
            "trace_cov",
            "int_pne",
            "int_pne_eff",
            "int_pne_star",
            "spectrum_top",
            "eff_rank",
            "hill_tail_index",
        ):
            assert r2[key] == pytest.approx(r1[key], rel=1e-3), f"W=2 {key} differs from W=1"
        assert r2["grad_sq"] == pytest.approx(r1["grad_sq"], abs=1e-3 * r1["trace_cov"])
    check_against_exact(double, exact)
