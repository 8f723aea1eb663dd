"""Curvature proxies against their exact matrices (DESIGN §2; issue 8, item 3).

A tanh network small enough (D = 51 parameters) for the exact Hessian of the mean
cross-entropy (``torch.func.hessian``) and the exact generalized Gauss-Newton
G = (1/n) sum_i J_i^T (diag p_i - p_i p_i^T) J_i from per-example Jacobians
(``torch.func.jacrev``). At its random initialisation, far from a minimum, the
Hessian is indefinite while G is positive semi-definite. R independent one-probe
estimates of each proxy give a mean and its standard error (SE); each test first
checks that 4 SE are below 10 % of the exact value (the test can tell a wrong
estimator from a right one), then that the mean lies within 4 SE of it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, hessian, jacrev

from gradnoise.estimation.curvature import logit_curvature
from gradnoise.estimation.logger import NoiseLogger

N, D_IN, HIDDEN, CLASSES, REPEATS = 48, 4, 6, 3, 400


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model, inputs, targets (the last 8 ignored, -1) and a positive diagonal P (flat, (D,))."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(D_IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, CLASSES)
    )
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(N, D_IN, generator=gen)
    y = torch.randint(0, CLASSES, (N,), generator=gen)
    y[-8:] = -1
    n_params = sum(p.numel() for p in model.parameters())
    precond = 0.5 + torch.rand(n_params, generator=gen)
    return model, x, y, precond


def exact_matrices(model, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(Hessian, GGN) of the mean cross-entropy over the kept positions, float64, (D, D)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    model = model.double()

    sizes = [math.prod(s) for s in shapes]

    def unflatten(flat):
        pieces = [t.view(s) for t, s in zip(flat.split(sizes), shapes, strict=True)]
        return dict(zip(names, pieces, strict=True))

    keep = y != -1

    def loss(flat):
        logits = functional_call(model, unflatten(flat), (x.double(),))
        return torch.nn.functional.cross_entropy(logits, y, ignore_index=-1)

    hess = hessian(loss)(flat0)
    jac = jacrev(lambda f: functional_call(model, unflatten(f), (x[keep].double(),)))(flat0)
    probs = torch.softmax(functional_call(model, unflatten(flat0), (x[keep].double(),)), -1)
    out_hess = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]  # (n, C, C)
    ggn = torch.einsum("ncd,nce,nef->df", jac, out_hess, jac) / keep.sum()
    model.float()
    return hess, ggn


def repeated(model, x, y, precond, proxy: str, repeats: int = REPEATS) -> torch.Tensor:
    """``repeats`` independent one-probe estimates: Tr(P F P) from the diagonal, or Tr(P H P)."""
    params = list(model.parameters())
    parts = list(precond.split([p.numel() for p in params]))
    parts = [piece.view_as(p) for piece, p in zip(parts, params, strict=True)]
    values = []
    for r in range(repeats):
        gens = {proxy: torch.Generator().manual_seed(100 + r)}
        out = logit_curvature(lambda: (model(x), y), params, parts, (proxy,), 1, gens)
        value = out[proxy]
        if proxy != "hessian":
            assert (value >= 0).all(), f"{proxy}: a diagonal entry is negative"
            value = float((precond**2) @ value)
        values.append(value)
    return torch.tensor(values, dtype=torch.float64)


@pytest.fixture(scope="module")
def exact():
    model, x, y, precond = setup()
    hess, ggn = exact_matrices(model, x, y)
    p = precond.double()
    return {
        "hessian_matrix": hess,
        "ggn_matrix": ggn,
        "hessian": float((p**2 * torch.diagonal(hess)).sum()),
        "ggn": float((p**2 * torch.diagonal(ggn)).sum()),
    }


def test_hessian_is_indefinite_and_ggn_is_psd_here(exact):
    assert float(torch.linalg.eigvalsh(exact["hessian_matrix"])[0]) < -1e-3
    ggn_eigs = torch.linalg.eigvalsh(exact["ggn_matrix"])
    assert float(ggn_eigs[0]) > -1e-10 * float(ggn_eigs[-1])


@pytest.mark.parametrize("proxy", ["ggn", "true_fisher"])
def test_psd_proxies_match_the_exact_ggn(exact, proxy):
    """GGN probes through the logits and the sampled-label Fisher are unbiased for Tr(P G P)."""
    model, x, y, precond = setup()
    values = repeated(model, x, y, precond, proxy)
    assert (values >= 0).all()
    se = float(values.std()) / math.sqrt(REPEATS)
    assert 4 * se < 0.1 * exact["ggn"], f"test too weak: SE {se:.3g} vs {exact['ggn']:.3g}"
    assert float(values.mean()) == pytest.approx(exact["ggn"], abs=4 * se)


def test_hessian_hutchinson_matches_the_exact_trace(exact):
    """Tr(P H P) of the raw Hessian: predicted SE sqrt(2 sum_{i != j} (PHP)_ij^2 / R)."""
    # the values can be negative: H is indefinite here
    model, x, y, precond = setup()
    values = repeated(model, x, y, precond, "hessian", repeats=4 * REPEATS)
    p = precond.double()
    php = p[:, None] * exact["hessian_matrix"] * p[None, :]
    se = math.sqrt(2 * float((php**2).sum() - (torch.diagonal(php) ** 2).sum()) / len(values))
    assert 4 * se < 0.1 * abs(exact["hessian"]), "test too weak"
    assert float(values.mean()) == pytest.approx(exact["hessian"], abs=4 * se)


def test_logger_uses_the_selected_psd_proxy_and_reports_the_hessian():
    """curvature='ggn': trace_pfp is Tr(P G P), P-NE* = P-NE / Tr(P G P); the Hessian is a
    reported column only; the floor is relative to the empirical Fisher trace."""
    model, x, y, _ = setup()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logger = NoiseLogger(
        model, optimizer, n_micro=4, micro_batch_size=10, curvature="ggn",
        proxies=("true_fisher", "hessian"), curvature_probes=4,
    )  # fmt: skip
    logger.begin_step(1)
    for j in range(4):
        part = slice(10 * j, 10 * (j + 1))
        (torch.nn.functional.cross_entropy(model(x[part]), y[part]) / 4).backward()
        logger.after_micro_backward()
    optimizer.step()
    record = logger.after_update(1e-3, 1.0, 1.0, lambda: (model(x), y))
    assert record["trace_pfp"] == record["trace_pgp_ggn"] > 0
    assert record["trace_pfp_true_fisher"] > 0 and math.isfinite(record["trace_php_hessian"])
    assert record["pne_star"] == pytest.approx(record["pne"] / record["trace_pgp_ggn"])
    assert record["pne_star_fisher"] == pytest.approx(record["pne"] / record["trace_pfp_fisher"])
    assert "pne_star_hessian" not in record and "int_pne_star_hessian" not in record
    assert (
        record["int_pne_star"]
        == record["int_pne_star_ggn"]
        == pytest.approx(1e-3 * record["trace_pcp"] / record["trace_pgp_ggn"], rel=1e-5)
    )
