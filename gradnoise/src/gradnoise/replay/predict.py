"""Counterfactual Noise Replay's predictions (seed 002 §4, Proposition 1; issue 21).

Linearised around the recorded trajectory, a change of the noise d xi_t = xi~_t - xi_t
moves the end point by

    Delta theta_T ~ sum_t J_{T<-t+1} K_t d xi_t,     K_t = dU_t/dxi, J the composed dU/dS,

computed forward: a tangent dS, zero at the segment's start, is pushed through each
recorded step with d xi_t added (``gradnoise.replay.tangent``), one pass for all
candidates and probes together (a batch of tangents).

Pathwise (first order; common random numbers): xi~_t = phi(t, xi_t), and per metric f

    Delta f ~ grad f(theta_T) . Delta theta_T                      (``delta_f``)
            + 1/2 Delta theta_T' H_f Delta theta_T                 (``delta_f_second``).

Expected (second order): for zero-mean noises of covariances Sigma~_t (candidate) and
Sigma_t (recorded), E[Delta theta_T] = 0 at first order, and

    E[f~] - E[f] ~ 1/2 tr(H_f (C~_T - C_T))  +  grad f(theta_T) . w_T,
    C_T = Cov(sum_t J_{T<-t+1} K_t xi_t)     (C~_T likewise with Sigma~_t),

the metric's curvature along the propagated covariance, and the second-moment channel:
E[(g + xi)^2] = g^2 + diag Sigma_t, so a covariance change shifts Adam's v by
(1 - beta2) c_t^2 diag(Sigma~_t - Sigma_t) at each step (c_t the clip coefficient),
and w_T is that shift propagated to theta_T (AdamW Jacobian only; zero in the baselines).
The trace is estimated with probes (Hutchinson 1989): u~ = sum_t J K Sigma~_t^{1/2} z_t has
covariance C~_T for z of independent unit-variance entries, and u, from the same z with
Sigma_t (common random numbers), C_T; per probe a_i = 1/2 (u~_i' H_f u~_i - u_i' H_f u_i).
``interval`` is the interval of E[Delta f] from the probes' spread (normal: mean +- z
sd / sqrt(n); or a bootstrap of the probes), ``run_interval`` the quantiles of one
candidate run against one independent recorded-noise run (u~_i paired with the
independent u_{i+1}: grad f . (u~_i - u_{i+1}) + 1/2 (u~_i' H u~_i - u_{i+1}' H u_{i+1})
+ grad f . w_T). The channel neglects the other second-order terms of the dynamics (the
loss's third derivatives, Adam's m / sqrt(v) and v^(-1/2) curvature). ``second_order=
"full"`` keeps them all: the mean shift s obeys s_{t+1} = J_t s_t + 1/2 E[D^2 U_t[delta_t,
delta_t]], delta_t = (the probe's propagated state tangent, Sigma_t^{1/2} z_t), with the
expectation taken over the probes (a jvp of a jvp per probe and step), w_T = s~_T - s_T
(the same probes, common random numbers). Higher orders (Proposition 1's L^2 term) remain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch.func import grad, jvp, vmap

from gradnoise.replay.adamw import Tensors, adamw_step
from gradnoise.replay.candidates import Covariance
from gradnoise.replay.tangent import (
    JACOBIANS,
    Tangent,
    push_batch,
    second_derivative_batch,
    stack,
)
from gradnoise.replay.trajectory import NoiseMap, Trajectory, zeros_like
from gradnoise.replay.update import noisy_gradient

MetricFn = Callable[[Tensors], torch.Tensor]
# (t, recorded xi_t, clip coefficient c_t) -> the batch's (d xi_t, dsq_t), leading dim = batch
Injection = Callable[[int, Tensors, float], tuple[Tensors, Tensors]]


@dataclass(frozen=True)
class PathwisePrediction:
    """One candidate, Jacobian and metric: the predicted change of f(theta_T)."""

    candidate: str
    jacobian: str
    metric: str
    delta_f: float  # grad f . Delta theta_T
    delta_f_second: float  # + 1/2 Delta theta_T' H_f Delta theta_T
    delta_theta_norm: float
    horizon: int
    seconds: float  # the shared pass (all candidates and Jacobians), and this metric's part


@dataclass(frozen=True)
class ExpectedPrediction:
    """One candidate, Jacobian and metric: the predicted change of E[f(theta_T)]."""

    candidate: str
    jacobian: str
    metric: str
    delta_f: float  # curvature + mean_shift
    curvature: float  # 1/2 tr(H_f (C~_T - C_T)), the probes' mean
    mean_shift: float  # grad f . w_T (the second-moment channel, or every term: "full")
    interval: tuple[float, float]  # of E[Delta f], at ``level``
    run_interval: tuple[float, float]  # one candidate run against one recorded-noise run
    level: float
    n_probes: int
    horizon: int
    seconds: float


def propagate(
    trajectory: Trajectory,
    inject: Injection,
    n: int,
    jacobians: Sequence[str] = JACOBIANS,
    chunk_size: int | None = None,
    second: Callable[[int, Tangent], Tangent] | None = None,
) -> tuple[Tensors, dict[str, Tangent]]:
    """(theta_T, {jacobian: the n tangents at T}): the recorded run replayed, tangents pushed.

    ``inject(t, xi_t, c_t)`` gives step t's d xi and v shifts for the n tangents. With
    ``second``, the AdamW tangents also get ``second(t, D2)`` added after each step, D2 the
    batch of second derivatives D^2 U_t[delta_i, delta_i] of the tangents before the step.
    """
    unknown = set(jacobians) - set(JACOBIANS)
    if unknown:
        raise ValueError(f"unknown jacobians {sorted(unknown)}; known: {JACOBIANS}")
    tr, hyper = trajectory, trajectory.hyper
    params, state = tr.params, tr.state
    tangents = {j: Tangent.zeros(params, n) for j in jacobians}
    with torch.no_grad():
        for t, record in enumerate(tr.steps):
            xi = record.draw()
            xi = xi if xi is not None else zeros_like(params)
            step = tr.steps_done + t + 1
            g, c = noisy_gradient(tr.loss_fn, params, record.batch, xi, tr.max_norm)
            dxi, dsq = inject(t, xi, float(c))
            for j in jacobians:
                args = (tr.loss_fn, hyper, params, state, xi, record.batch, record.lr, step)
                d2 = None
                if second is not None and j == "adamw":
                    d2 = second_derivative_batch(*args, tangents[j], dxi, tr.max_norm, chunk_size)
                tangents[j] = push_batch(j, *args, tangents[j], dxi, dsq, tr.max_norm, chunk_size)
                if d2 is not None:
                    extra = second(t, d2)
                    tangents[j] = Tangent(
                        *(
                            {k: a[k] + b[k] for k in a}
                            for a, b in zip(tangents[j], extra, strict=True)
                        )
                    )
            params, state = adamw_step(
                params, g, state, record.lr, hyper.betas, hyper.eps, hyper.weight_decay, step,
                freeze_second_moment=hyper.freeze_second_moment,
            )  # fmt: skip
    return params, tangents


def _metric_terms(
    metric: MetricFn, theta: Tensors, d_theta: Tensors, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad f . d_i, d_i' H_f d_i) for each row d_i of the batch ``d_theta``."""
    g = grad(metric)(theta)
    h = vmap(lambda d: jvp(grad(metric), (theta,), (d,))[1], chunk_size=chunk_size)(d_theta)
    first = sum((d_theta[k] * g[k]).flatten(1).sum(1) for k in g)
    quad = sum((d_theta[k] * h[k]).flatten(1).sum(1) for k in g)
    return first, quad


def delta_theta(
    trajectory: Trajectory,
    candidates: Mapping[str, NoiseMap],
    jacobians: Sequence[str] = JACOBIANS,
    chunk_size: int | None = None,
) -> tuple[Tensors, dict[str, dict[str, Tensors]]]:
    """(theta_T, {jacobian: {candidate: Delta theta_T}}): the pathwise first-order changes."""
    names = list(candidates)

    def inject(t: int, xi: Tensors, c: float) -> tuple[Tensors, Tensors]:
        dxi = [{k: v - xi[k] for k, v in candidates[n](t, xi).items()} for n in names]
        return stack(dxi), stack([zeros_like(xi)] * len(names))

    theta, tangents = propagate(trajectory, inject, len(names), jacobians, chunk_size)
    out = {
        j: {n: {k: v[i] for k, v in tan.params.items()} for i, n in enumerate(names)}
        for j, tan in tangents.items()
    }
    return theta, out


def predict_pathwise(
    trajectory: Trajectory,
    candidates: Mapping[str, NoiseMap],
    metrics: Mapping[str, MetricFn],
    jacobians: Sequence[str] = JACOBIANS,
    chunk_size: int | None = None,
) -> list[PathwisePrediction]:
    """Pathwise predictions, one row per candidate, Jacobian and metric (module docstring)."""
    start = time.perf_counter()
    names = list(candidates)
    theta, changes = delta_theta(trajectory, candidates, jacobians, chunk_size)
    shared = time.perf_counter() - start
    rows = []
    for metric_name, metric in metrics.items():
        for j, by_candidate in changes.items():
            t0 = time.perf_counter()
            d = stack([by_candidate[n] for n in names])
            first, quad = _metric_terms(metric, theta, d, chunk_size)
            norms = torch.sqrt(sum((v**2).flatten(1).sum(1) for v in d.values()))
            seconds = shared + time.perf_counter() - t0
            for i, n in enumerate(names):
                rows.append(
                    PathwisePrediction(
                        n,
                        j,
                        metric_name,
                        float(first[i]),
                        float(first[i] + quad[i] / 2),
                        float(norms[i]),
                        trajectory.horizon,
                        seconds,
                    )  # fmt: skip
                )
    return rows


def _probes(params: Tensors, n: int, kind: str, generator: torch.Generator) -> list[Tensors]:
    """n probes of independent entries, mean 0, variance 1 (Gaussian or Rademacher)."""
    if kind not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")
    out = []
    for _ in range(n):
        z = {}
        for k, p in params.items():
            if kind == "gaussian":
                r = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            else:
                r = torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1
            z[k] = r.to(p.device)
        out.append(z)
    return out


def _interval(values: np.ndarray, level: float, method: str, seed: int) -> tuple[float, float]:
    """The interval of the mean of ``values`` at ``level``: normal or percentile bootstrap."""
    n, mean = len(values), float(values.mean())
    if method == "normal":
        half = NormalDist().inv_cdf((1 + level) / 2) * float(values.std(ddof=1)) / math.sqrt(n)
        return mean - half, mean + half
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = values[rng.integers(0, n, size=(2000, n))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)
    raise ValueError(f"interval must be 'normal' or 'bootstrap', got {method!r}")


def predict_expected(
    trajectory: Trajectory,
    candidates: Mapping[str, Covariance],
    recorded: Covariance,
    metrics: Mapping[str, MetricFn],
    jacobians: Sequence[str] = JACOBIANS,
    n_probes: int = 32,
    probe: str = "rademacher",
    seed: int = 0,
    level: float = 0.9,
    interval: str = "normal",
    second_order: str = "channel",
    chunk_size: int | None = None,
) -> list[ExpectedPrediction]:
    """Second-order predictions of the expected change, per candidate, Jacobian and metric.

    One pass pushes (candidates + 1) x n_probes probe tangents and one mean-shift tangent
    per candidate (module docstring). ``second_order="full"`` replaces the second-moment
    channel by every second-order term of the AdamW dynamics (below), at the cost of a
    second derivative of the update map per probe and step.
    """
    if n_probes < 2:
        raise ValueError("predict_expected needs at least two probes")
    if second_order not in ("channel", "full"):
        raise ValueError(f"second_order must be 'channel' or 'full', got {second_order!r}")
    start = time.perf_counter()
    names, n = list(candidates), n_probes
    generator = torch.Generator().manual_seed(seed)
    channel = second_order == "channel" and not trajectory.hyper.freeze_second_moment
    groups = len(names) + 1  # the recorded covariance's probes, then each candidate's

    def second(t: int, d2: Tangent) -> Tangent:
        """Shift row of candidate c: 1/2 (mean over c's probes - mean over the recorded's) of D2."""
        out = []
        for part in d2:
            extra = {}
            for k, x in part.items():
                means = x[: groups * n].unflatten(0, (groups, n)).mean(1)
                extra[k] = torch.cat(
                    [torch.zeros_like(x[: groups * n]), (means[1:] - means[:1]) / 2]
                )
            out.append(extra)
        return Tangent(*out)

    def inject(t: int, xi: Tensors, c: float) -> tuple[Tensors, Tensors]:
        z = _probes(xi, n, probe, generator)
        covs = [recorded, *(candidates[m] for m in names)]
        dxi = [cov.sample(t, zi) for cov in covs for zi in z] + [zeros_like(xi)] * len(names)
        zero, d0 = zeros_like(xi), recorded.diag(t)
        dsq = [zero] * (len(covs) * n)
        for m in names:
            d1 = candidates[m].diag(t)
            dsq.append({k: (d1[k] - d0[k]) * c**2 if channel else zero[k] for k in d0})
        return stack(dxi), stack(dsq)

    total = (len(names) + 1) * n + len(names)
    full = second if second_order == "full" else None
    theta, tangents = propagate(trajectory, inject, total, jacobians, chunk_size, full)
    shared = time.perf_counter() - start
    rows = []
    for metric_name, metric in metrics.items():
        for j, tan in tangents.items():
            t0 = time.perf_counter()
            first, quad = _metric_terms(metric, theta, tan.params, chunk_size)
            first, quad = first.cpu().numpy(), quad.cpu().numpy()
            q0, f0 = quad[:n], first[:n]
            seconds = shared + time.perf_counter() - t0
            for i, m in enumerate(names):
                qc, fc = quad[(i + 1) * n : (i + 2) * n], first[(i + 1) * n : (i + 2) * n]
                w = float(first[groups * n + i]) if j == "adamw" else 0.0
                a = (qc - q0) / 2
                lo, hi = _interval(a, level, interval, seed)
                run = fc - np.roll(f0, -1) + (qc - np.roll(q0, -1)) / 2 + w
                rlo, rhi = np.quantile(run, [(1 - level) / 2, (1 + level) / 2])
                rows.append(
                    ExpectedPrediction(
                        m,
                        j,
                        metric_name,
                        float(a.mean()) + w,
                        float(a.mean()),
                        w,
                        (lo + w, hi + w),
                        (float(rlo), float(rhi)),
                        level,
                        n,
                        trajectory.horizon,
                        seconds,
                    )  # fmt: skip
                )
    return rows
