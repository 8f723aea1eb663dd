"""Tangents pushed one step along the recorded trajectory: J_t (d theta, d m, d v) + K_t d xi.

For the update map S_{t+1} = U_t(S_t, xi_t) of ``gradnoise.replay.update`` with state
S = (theta, m, v), a tangent moves as

    dS_{t+1} = (dU_t/dS) dS_t + (dU_t/dxi) d xi_t,

computed exactly by one Jacobian-vector product of U_t (``torch.func.jvp``), whose
gradient grad L(theta; B_t) is itself differentiated forward: forward over reverse, a
Hessian-vector product on the recorded batch B_t, so no Hessian is formed. The same
interface offers two baselines (issue 21 item 3):

- ``"adamw"``: the exact Jacobian of the AdamW update (moments, bias corrections,
  decoupled weight decay, clipping);
- ``"sgd"``: the SGD form, Adam's state ignored (Hara et al. 2019's SGD-influence step):
  d theta_{t+1} = d theta_t - eta_t (H_t d theta_t + d xi_t), H_t = Hess L(theta_t; B_t);
- ``"identity"``: J = I, each step's noise difference moves theta directly (TracIn-like):
  d theta_{t+1} = d theta_t - eta_t d xi_t, so d theta_T = -sum_t eta_t d xi_t.

``dsq`` adds a shift s to the squared gradient entering v at this step, v_{t+1} =
beta2 v_t + (1 - beta2)(g^2 + s): the second-moment channel of a covariance change
(``gradnoise.replay.predict``). Written as v_t + s (1 - beta2)/beta2 going into the step,
it is a tangent of v_t and needs no change to the AdamW step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.func import grad, jvp, vmap

from gradnoise.replay.adamw import AdamState, AdamWHyper, Tensors
from gradnoise.replay.update import LossFn, update

JACOBIANS = ("adamw", "sgd", "identity")


class Tangent(NamedTuple):
    """A tangent of the state (d theta, d m, d v), one dict of tensors each."""

    params: Tensors
    exp_avg: Tensors
    exp_avg_sq: Tensors

    @staticmethod
    def zeros(params: Tensors, batch: int | None = None) -> Tangent:
        """The zero tangent; with ``batch``, a batch of them (leading dimension)."""
        shape = (lambda p: (batch, *p.shape)) if batch is not None else (lambda p: p.shape)
        z = lambda: {k: p.new_zeros(shape(p)) for k, p in params.items()}  # noqa: E731
        return Tangent(z(), z(), z())


def hvp(loss_fn: LossFn, params: Tensors, batch: Any, vector: Tensors) -> Tensors:
    """H v with H = Hess L(params; batch): jvp of grad (forward over reverse)."""
    return jvp(lambda p: grad(loss_fn)(p, batch), (params,), (vector,))[1]


def push(
    jacobian: str,
    loss_fn: LossFn,
    hyper: AdamWHyper,
    params: Tensors,
    state: AdamState,
    noise: Tensors,
    batch: Any,
    lr: float,
    step: int,
    tangent: Tangent,
    dxi: Tensors,
    dsq: Tensors | None = None,
    max_norm: float | None = None,
) -> Tangent:
    """dS_{t+1} from dS_t and d xi_t at the recorded S_t, xi_t (``step`` = t + 1)."""
    if jacobian == "identity":
        d_theta = {k: tangent.params[k] - lr * dxi[k] for k in params}
        return Tangent(d_theta, tangent.exp_avg, tangent.exp_avg_sq)
    if jacobian == "sgd":
        h = hvp(loss_fn, params, batch, tangent.params)
        d_theta = {k: tangent.params[k] - lr * (h[k] + dxi[k]) for k in params}
        return Tangent(d_theta, tangent.exp_avg, tangent.exp_avg_sq)
    if jacobian != "adamw":
        raise ValueError(f"jacobian must be one of {JACOBIANS}, got {jacobian!r}")
    d_v = tangent.exp_avg_sq
    if dsq is not None and not hyper.freeze_second_moment:
        beta2 = hyper.betas[1]
        if beta2 <= 0:
            raise ValueError("the second-moment channel needs beta2 > 0")
        d_v = {k: d_v[k] + dsq[k] * ((1 - beta2) / beta2) for k in d_v}

    def step_map(p: Tensors, m: Tensors, v: Tensors, xi: Tensors):
        return update(loss_fn, hyper, p, AdamState(m, v), xi, batch, lr, step, max_norm)

    primals = (params, state.exp_avg, state.exp_avg_sq, noise)
    tangents = (tangent.params, tangent.exp_avg, d_v, dxi)
    _, (d_theta, d_state) = jvp(step_map, primals, tangents)
    return Tangent(d_theta, d_state.exp_avg, d_state.exp_avg_sq)


def push_batch(
    jacobian: str,
    loss_fn: LossFn,
    hyper: AdamWHyper,
    params: Tensors,
    state: AdamState,
    noise: Tensors,
    batch: Any,
    lr: float,
    step: int,
    tangents: Tangent,
    dxi: Tensors,
    dsq: Tensors,
    max_norm: float | None = None,
    chunk_size: int | None = None,
) -> Tangent:
    """``push`` for a batch of tangents (leading dimension), vectorised by ``torch.func.vmap``.

    The recorded primal quantities are shared by the whole batch: one pass serves every
    candidate and probe.
    """
    one: Callable[[Tangent, Tensors, Tensors], Tangent] = lambda tan, d, s: push(  # noqa: E731
        jacobian, loss_fn, hyper, params, state, noise, batch, lr, step, tan, d, s, max_norm
    )
    return vmap(one, chunk_size=chunk_size)(tangents, dxi, dsq)


def second_derivative_batch(
    loss_fn: LossFn,
    hyper: AdamWHyper,
    params: Tensors,
    state: AdamState,
    noise: Tensors,
    batch: Any,
    lr: float,
    step: int,
    tangents: Tangent,
    dxi: Tensors,
    max_norm: float | None = None,
    chunk_size: int | None = None,
) -> Tangent:
    """D^2 U_t[delta, delta] for each delta = (dS, d xi) of the batch: a jvp of a jvp of U_t."""

    def step_map(p: Tensors, m: Tensors, v: Tensors, xi: Tensors):
        new_p, new_s = update(loss_fn, hyper, p, AdamState(m, v), xi, batch, lr, step, max_norm)
        return new_p, new_s.exp_avg, new_s.exp_avg_sq

    def one(tan: Tangent, d: Tensors) -> Tangent:
        directions = (tan.params, tan.exp_avg, tan.exp_avg_sq, d)
        first = lambda *x: jvp(step_map, x, directions)[1]  # noqa: E731
        primals = (params, state.exp_avg, state.exp_avg_sq, noise)
        return Tangent(*jvp(first, primals, directions)[1])

    return vmap(one, chunk_size=chunk_size)(tangents, dxi)


def stack(tensors: list[Tensors]) -> Tensors:
    """Dicts of tensors stacked along a new leading dimension."""
    return {k: torch.stack([t[k] for t in tensors]) for k in tensors[0]}
