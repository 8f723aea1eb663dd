"""The pathwise prediction in reverse (adjoint) form: one reverse pass serves every candidate.

With the state S_t = (theta_t, m_t, v_t) and the update map S_{t+1} = U_t(S_t, xi_t) of
``gradnoise.replay.update``, the forward recursion of ``gradnoise.replay.predict``,
dS_{t+1} = (dU_t/dS) dS_t + (dU_t/dxi) d xi_t with dS_0 = 0, gives at first order

    Delta f(theta_h) ~ sum_{t<h} lambda_{t+1}' (dU_t/dxi) d xi_t,
    lambda_h = (grad f(theta_h), 0, 0),    lambda_t = (dU_t/dS)' lambda_{t+1},

its adjoint (transpose the composed Jacobians and sum backwards; the discrete adjoint of
the tangent recursion, as in reverse-mode differentiation). Per step, the cotangent of the
noise mu_t = (dU_t/dxi)' lambda_{t+1} does not depend on the candidate, and a candidate
xi~_t = phi(t, xi_t) contributes

    c_t = <mu_t, d xi_t>,   d xi_t = phi(t, xi_t) - xi_t,     Delta f ~ sum_{t<h} c_t,

a dot product. The reverse pass costs one vector-Jacobian product of U_t per step for the
whole batch of (horizon, metric) cotangents (``torch.func.vmap`` over the vjp function),
whatever the number of candidates; the forward ``predict_pathwise`` pushes one tangent per
candidate. Prefer it with many candidates and few metrics.

The Jacobians, as in ``gradnoise.replay.tangent``:

- ``"adamw"``: lambda_t and mu_t from one ``torch.func.vjp`` of U_t at the recorded
  (theta_t, m_t, v_t, xi_t) (reverse over reverse: the gradient inside U_t is itself
  differentiated), moments, bias corrections, weight decay and clipping included;
- ``"sgd"``: the SGD form, Adam's state ignored, theta_{t+1} = theta_t - eta_t (grad L + xi),
  the reverse form of Hara et al. 2019's SGD-influence: lambda_t = lambda_{t+1} - eta_t H_t
  lambda_{t+1} (H_t = Hess L(theta_t; B_t), symmetric: one vjp of the gradient), mu_t =
  -eta_t lambda_{t+1};
- ``"identity"``: J = I, lambda_t = grad f(theta_h) for every t, mu_t = -eta_t grad f(theta_h).

They equal the forward predictions' ``delta_f`` to rounding.

``interval`` resamples the recorded steps: a percentile bootstrap of h times the mean of
h per-step contributions c_t drawn with replacement from c_0..c_{h-1}. It measures how much
the prediction rests on a few steps' draws, not the uncertainty of a retrain (nor of the
linearisation). The candidate maps phi must be functions of (t, xi_t): they are evaluated
once per step and candidate, in reverse step order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradnoise.replay.adamw import AdamState, Tensors, adamw_step
from gradnoise.replay.predict import MetricFn
from gradnoise.replay.tangent import JACOBIANS
from gradnoise.replay.trajectory import NoiseMap, Trajectory, zeros_like
from gradnoise.replay.update import noisy_gradient, update


@dataclass(frozen=True)
class AdjointPrediction:
    """One candidate, Jacobian, metric and horizon: the predicted change of f(theta_h)."""

    candidate: str
    jacobian: str
    metric: str
    horizon: int  # h, steps after the segment's start
    delta_f: float  # sum_{t<h} c_t, the first-order (pathwise) change
    interval: tuple[float, float]  # the steps' bootstrap of delta_f at ``level`` (module doc)
    level: float
    seconds: float  # the shared forward replay and this Jacobian's reverse pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _validate(
    trajectory: Trajectory,
    candidates: Mapping[str, NoiseMap],
    metrics: Mapping[str, MetricFn],
    horizons: Sequence[int] | None,
    jacobians: Sequence[str],
    level: float,
    n_boot: int,
) -> list[int]:
    """The distinct horizons, in the order given; ValueError naming what is wrong."""
    if not candidates:
        raise ValueError("pathwise_adjoint: no candidates")
    if not metrics:
        raise ValueError("pathwise_adjoint: no metrics")
    if not jacobians:
        raise ValueError("pathwise_adjoint: no jacobians")
    unknown = [j for j in jacobians if j not in JACOBIANS]
    if unknown:
        raise ValueError(f"pathwise_adjoint: unknown jacobians {unknown}; known: {JACOBIANS}")
    if not 0 < level < 1:
        raise ValueError(f"pathwise_adjoint: level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"pathwise_adjoint: n_boot must be at least 1, got {n_boot}")
    horizons = [trajectory.horizon] if horizons is None else list(horizons)
    if not horizons:
        raise ValueError("pathwise_adjoint: no horizons")
    for h in horizons:
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)):
            raise ValueError(f"pathwise_adjoint: horizon {h!r} is not an integer")
        if not 1 <= h <= trajectory.horizon:
            raise ValueError(
                f"pathwise_adjoint: horizon {h} outside 1..{trajectory.horizon} "
                "(the segment's number of steps)"
            )
    return list(dict.fromkeys(int(h) for h in horizons))


def _dot(mu: Tensors, d: Tensors) -> torch.Tensor:
    """<mu_i, d> for each row i of the batch ``mu``."""
    return sum(mu[k].flatten(1) @ d[k].flatten() for k in mu)


def _cat(a: Tensors, b: Tensors) -> Tensors:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def pathwise_adjoint(
    trajectory: Trajectory,
    candidates: Mapping[str, NoiseMap],
    metrics: Mapping[str, MetricFn],
    horizons: Sequence[int] | None = None,
    jacobians: Sequence[str] = JACOBIANS,
    level: float = 0.9,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[AdjointPrediction]:
    """First-order pathwise predictions by the adjoint, one row per metric, Jacobian, horizon
    and candidate (in that nesting).

        Delta f(theta_h) ~ sum_{t<h} <mu_t, phi(t, xi_t) - xi_t>,  mu_t = (dU_t/dxi)' lambda_{t+1}

    (module docstring). ``metrics`` map the parameters to a scalar tensor, read at each of
    ``horizons`` (steps after the segment's start, 1..``trajectory.horizon``; default the
    segment's end). One replay of the segment (the recorded run, as ``rerun``) stores the
    states; then, per Jacobian, one reverse pass carries the cotangents of every (horizon,
    metric) pair together (a ``vmap`` over the vjp of U_t built once per step), the pairs
    joining at their horizon. Its cost does not grow with the number of candidates, each of
    which costs a dot product per step. ``interval``: a percentile bootstrap at ``level`` of
    the per-step contributions (``n_boot`` resamples, ``numpy.random.default_rng(seed)``).
    The reverse passes run with the math kernel of ``F.scaled_dot_product_attention`` (the
    CPU flash kernel has no double backward).
    """
    wanted = _validate(trajectory, candidates, metrics, horizons, jacobians, level, n_boot)
    jacobians = list(dict.fromkeys(jacobians))
    tr, hyper, loss_fn = trajectory, trajectory.hyper, trajectory.loss_fn
    like = next(iter(tr.params.values()))
    device = like.device
    names, metric_names = list(candidates), list(metrics)
    last = max(wanted)
    # the (horizon, metric) pairs, latest horizon first: those active at step t are a prefix
    pairs = [(h, m) for h in sorted(wanted, reverse=True) for m in metric_names]

    _sync(device)
    start = time.perf_counter()
    thetas, states, noises = [tr.params], [], []
    params, state = tr.params, tr.state
    with torch.no_grad():
        for t, record in enumerate(tr.steps[:last]):  # the recorded run, as predict.propagate
            xi = record.draw()
            xi = xi if xi is not None else zeros_like(params)
            step = tr.steps_done + t + 1
            g, _ = noisy_gradient(loss_fn, params, record.batch, xi, tr.max_norm)
            states.append(state)
            noises.append(xi)
            params, state = adamw_step(
                params, g, state, record.lr, hyper.betas, hyper.eps, hyper.weight_decay, step,
                freeze_second_moment=hyper.freeze_second_moment,
            )  # fmt: skip
            thetas.append(params)
    _sync(device)
    shared = time.perf_counter() - start
    own = dict.fromkeys(jacobians, 0.0)

    # c[j][pair, candidate, t]
    contrib = {j: like.new_zeros(len(pairs), len(names), last) for j in jacobians}
    lam: dict[str, tuple[Tensors, ...] | None] = dict.fromkeys(jacobians)
    active = 0
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        for t in reversed(range(last)):
            record, xi, state = tr.steps[t], noises[t], states[t]
            theta, lr, step = thetas[t], record.lr, tr.steps_done + t + 1
            _sync(device)
            t0 = time.perf_counter()
            joining = [p for p in pairs[active:] if p[0] == t + 1]
            if joining:  # lambda_h = (grad f(theta_h), 0, 0) for the pairs read at h = t + 1
                grads = [grad(metrics[m])(thetas[t + 1]) for _, m in joining]
                g_f = {k: torch.stack([gr[k] for gr in grads]) for k in grads[0]}
                zero = {k: torch.zeros_like(v) for k, v in g_f.items()}
                active += len(joining)
            _sync(device)
            shared += time.perf_counter() - t0
            mus = {}
            for j in jacobians:
                t0 = time.perf_counter()
                if joining:
                    new = (g_f, zero, zero) if j == "adamw" else (g_f,)
                    old = lam[j]
                    lam[j] = new if old is None else tuple(map(_cat, old, new))
                mus[j], lam[j] = _reverse_step(j, lam[j], tr, theta, state, xi, t, lr, step)
                _sync(device)
                own[j] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for i, n in enumerate(names):  # d xi_t once per step and candidate
                d = {k: v - xi[k] for k, v in candidates[n](t, xi).items()}
                for j, mu in mus.items():
                    contrib[j][:active, i, t] = _dot(mu, d)
            _sync(device)
            shared += time.perf_counter() - t0

    rows = []
    order = {p: i for i, p in enumerate(pairs)}
    for m in metric_names:
        for j in jacobians:
            c = contrib[j].to("cpu", torch.float64).numpy()
            for h in wanted:
                values = c[order[(h, m)], :, :h]  # (candidates, h)
                boot = values @ _resample_counts(h, n_boot, seed).T  # (candidates, n_boot)
                lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
                for i, n in enumerate(names):
                    rows.append(
                        AdjointPrediction(
                            n,
                            j,
                            m,
                            h,
                            float(values[i].sum()),
                            (float(lo[i]), float(hi[i])),
                            level,
                            shared + own[j],
                        )  # fmt: skip
                    )
    return rows


def _resample_counts(h: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, h): how often each step is drawn in each resample of h steps with replacement.

    The resampled sum, h times the resampled mean, is then ``counts @ c``.
    """
    idx = np.random.default_rng(seed).integers(0, h, size=(n_boot, h))
    counts = np.zeros((n_boot, h))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    return counts


def _reverse_step(
    jacobian: str,
    lam: tuple[Tensors, ...],
    trajectory: Trajectory,
    theta: Tensors,
    state: AdamState,
    xi: Tensors,
    t: int,
    lr: float,
    step: int,
) -> tuple[Tensors, tuple[Tensors, ...]]:
    """(mu_t, lambda_t) for the batch of cotangents lambda_{t+1} (leading dimension)."""
    tr, record = trajectory, trajectory.steps[t]
    if jacobian == "identity":
        return {k: -lr * v for k, v in lam[0].items()}, lam
    if jacobian == "sgd":
        (lam_p,) = lam
        _, hvp_fn = vjp(lambda p: grad(tr.loss_fn)(p, record.batch), theta)
        (h_lam,) = vmap(hvp_fn)(lam_p)  # H' lambda = H lambda
        new = {k: lam_p[k] - lr * h_lam[k] for k in lam_p}
        return {k: -lr * v for k, v in lam_p.items()}, (new,)

    def step_map(p: Tensors, m: Tensors, v: Tensors, noise: Tensors):
        new_p, new_s = update(
            tr.loss_fn, tr.hyper, p, AdamState(m, v), noise, record.batch, lr, step, tr.max_norm
        )
        return new_p, new_s.exp_avg, new_s.exp_avg_sq

    _, vjp_fn = vjp(step_map, theta, state.exp_avg, state.exp_avg_sq, xi)
    d_p, d_m, d_v, mu = vmap(vjp_fn)(lam)
    return mu, (d_p, d_m, d_v)
