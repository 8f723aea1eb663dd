"""The update map's Jacobian-vector product equals central finite differences (issue 21 item 7).

A tangent (d theta, d m, d v) and noise differences d xi pushed through one and through
several recorded AdamW steps (a tanh network, cross-entropy, clipping active, weight
decay) by ``gradnoise.replay.push`` equal (S(x + h d) - S(x - h d)) / 2h of the replayed
steps in float64, to a relative error under 1e-6. The SGD-form and identity baselines
match their own formulas, and the second-moment shift enters v as (1 - beta2) s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradnoise.replay import (
    AdamState,
    AdamWHyper,
    Tangent,
    functional_loss,
    hvp,
    push,
    update,
)

H = 1e-6
HYPER = AdamWHyper(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)


def setup(seed: int = 0, n_steps: int = 1):
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
    ).double()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    like = lambda f: {k: f(p.shape) for k, p in params.items()}  # noqa: E731
    state = AdamState(like(lambda s: 0.1 * randn(*s)), like(lambda s: 0.05 + 0.1 * randn(*s).abs()))
    batches = [(randn(12, 4), torch.randint(0, 3, (12,), generator=gen)) for _ in range(n_steps)]
    noises = [like(lambda s: 0.3 * randn(*s)) for _ in range(n_steps)]
    tangent = Tangent(
        like(lambda s: randn(*s)), like(lambda s: randn(*s)), like(lambda s: 0.01 * randn(*s))
    )
    dxis = [like(lambda s: randn(*s)) for _ in range(n_steps)]
    return functional_loss(model, F.cross_entropy), params, state, batches, noises, tangent, dxis


def run(loss_fn, params, state, batches, noises, max_norm, first_step=3):
    for i, (b, xi) in enumerate(zip(batches, noises, strict=True)):
        params, state = update(loss_fn, HYPER, params, state, xi, b, 2e-2, first_step + i, max_norm)
    return params, state


def flat(params, state) -> torch.Tensor:
    parts = [*params.values(), *state.exp_avg.values(), *state.exp_avg_sq.values()]
    return torch.cat([p.flatten() for p in parts])


def shifted(x: dict, d: dict, h: float) -> dict:
    return {k: x[k] + h * d[k] for k in x}


def finite_difference(loss_fn, params, state, batches, noises, tangent, dxis, max_norm):
    def at(h):
        p = shifted(params, tangent.params, h)
        s = AdamState(
            shifted(state.exp_avg, tangent.exp_avg, h),
            shifted(state.exp_avg_sq, tangent.exp_avg_sq, h),
        )
        xs = [shifted(xi, d, h) for xi, d in zip(noises, dxis, strict=True)]
        return flat(*run(loss_fn, p, s, batches, xs, max_norm))

    return (at(H) - at(-H)) / (2 * H)


def pushed(
    loss_fn, params, state, batches, noises, tangent, dxis, max_norm, jacobian="adamw", first_step=3
):
    for i, (b, xi, d) in enumerate(zip(batches, noises, dxis, strict=True)):
        tangent = push(
            jacobian,
            loss_fn,
            HYPER,
            params,
            state,
            xi,
            b,
            2e-2,
            first_step + i,
            tangent,
            d,
            None,
            max_norm,
        )
        params, state = update(loss_fn, HYPER, params, state, xi, b, 2e-2, first_step + i, max_norm)
    return tangent


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_jvp_of_one_step_equals_finite_differences():
    loss_fn, params, state, batches, noises, tangent, dxis = setup(0, 1)
    for max_norm in (None, 0.5):  # 0.5: clipping active at this point
        fd = finite_difference(loss_fn, params, state, batches, noises, tangent, dxis, max_norm)
        jv = pushed(loss_fn, params, state, batches, noises, tangent, dxis, max_norm)
        assert rel_err(flat(jv.params, AdamState(jv.exp_avg, jv.exp_avg_sq)), fd) < 1e-6


def test_jvp_of_composed_steps_equals_finite_differences():
    loss_fn, params, state, batches, noises, tangent, dxis = setup(1, 6)
    fd = finite_difference(loss_fn, params, state, batches, noises, tangent, dxis, 1.0)
    jv = pushed(loss_fn, params, state, batches, noises, tangent, dxis, 1.0)
    err = rel_err(flat(jv.params, AdamState(jv.exp_avg, jv.exp_avg_sq)), fd)
    assert err < 1e-6
    # the check can fail: the SGD-form tangent is not the derivative of the AdamW run
    sgd = pushed(loss_fn, params, state, batches, noises, tangent, dxis, 1.0, "sgd")
    n = sum(p.numel() for p in params.values())
    assert rel_err(torch.cat([p.flatten() for p in sgd.params.values()]), fd[:n]) > 0.1


def test_baselines_follow_their_formulas():
    loss_fn, params, state, batches, noises, tangent, dxis = setup(2, 1)
    lr, b, d = 2e-2, batches[0], dxis[0]
    h = hvp(loss_fn, params, b, tangent.params)
    sgd = push("sgd", loss_fn, HYPER, params, state, noises[0], b, lr, 3, tangent, d)
    ident = push("identity", loss_fn, HYPER, params, state, noises[0], b, lr, 3, tangent, d)
    for k in params:
        torch.testing.assert_close(
            sgd.params[k], tangent.params[k] - lr * (h[k] + d[k]), rtol=0, atol=1e-14
        )
        torch.testing.assert_close(
            ident.params[k], tangent.params[k] - lr * d[k], rtol=0, atol=1e-14
        )
    # the Hessian-vector product against finite differences of the gradient
    g = lambda p: torch.func.grad(loss_fn)(p, b)  # noqa: E731
    gp, gm = g(shifted(params, tangent.params, H)), g(shifted(params, tangent.params, -H))
    fd = torch.cat([((gp[k] - gm[k]) / (2 * H)).flatten() for k in params])
    assert rel_err(torch.cat([h[k].flatten() for k in params]), fd) < 1e-6


def test_second_moment_shift_enters_v_as_one_minus_beta2():
    """dsq = s: v_{t+1} moves by (1 - beta2) s, theta_{t+1} as if g^2 had grown by s."""
    loss_fn, params, state, batches, noises, _, _ = setup(3, 1)
    zero = Tangent.zeros(params)
    s = {k: torch.rand_like(p) for k, p in params.items()}
    out = push(
        "adamw", loss_fn, HYPER, params, state, noises[0], batches[0], 2e-2, 3, zero, zero.params, s
    )
    for k in params:
        torch.testing.assert_close(
            out.exp_avg_sq[k], (1 - HYPER.betas[1]) * s[k], rtol=1e-12, atol=0
        )
