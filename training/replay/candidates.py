"""The registered candidate noises of the replay, as maps of the recorded draws (plan ``replay``).

The base runs inject xi_t = sqrt(s_t) d_t^(1/2) * z_t (``training.replay.segment``); every
candidate but the fresh draws keeps the recorded standard draw z_t (common random numbers),
so a retrain with it is the pathwise counterfactual CNR predicts:

    isotropic        sqrt(s_t) dbar_t^(1/2) z_t,      dbar_t the mean of d_t over coordinates
    tensor_matched   sqrt(s_t) dbar_{t,k}^(1/2) z_t,  dbar_{t,k} the mean of d_t over tensor k
    precond_aligned  sqrt(s_t) c_t P_t d_t^(1/2) * z_t, P_t = 1 / (sqrt(v_t / (1 - beta2^(t-1)))
                     + eps) Adam's preconditioner before the step, c_t = |d^(1/2)| / |P d^(1/2)|:
                     the diagonal of NAP's P C P shape (seed 002), the same total variance
    half, double     xi_t / sqrt(2), sqrt(2) xi_t          (the covariance x 1/2, x 2)
    attention_only   xi_t on the attention layers' parameters, 0 elsewhere
    mlp_only         xi_t on the MLP layers' parameters, 0 elsewhere
    no_injection     0
    antithetic       -xi_t                                 (same covariance, mirrored draw)
    fresh_draw_j     sqrt(s_t) d_t^(1/2) * z'_t, z' a fresh standard draw (the noise floor)
    recorded         xi_t
    scaled_<a>       a xi_t, any number a (the pathwise rescalings; e.g. scaled_1.5)

The isotropic, tensor-matched and preconditioner-aligned forms keep each step's total
variance s_t sum d_t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from training.replay.segment import RecordedSegment, RecordedStep

CANDIDATES = (
    "isotropic", "tensor_matched", "precond_aligned", "half", "double", "attention_only",
    "mlp_only", "no_injection", "antithetic",
)  # fmt: skip
FlatMap = Callable[[RecordedStep], torch.Tensor]  # a recorded step -> the candidate's flat xi


def _layer_mask(segment: RecordedSegment, part: str) -> torch.Tensor:
    """1 on the coordinates of parameters whose name has the module ``part`` (attn, mlp)."""
    pieces = [
        torch.full((math.prod(shape),), float(f".{part}." in name))
        for name, shape in zip(segment.names, segment.shapes, strict=True)
    ]
    mask = torch.cat(pieces).to(segment.steps[0].root.device)
    if not mask.any():
        raise ValueError(f"the model has no parameter in a '{part}' module")
    return mask


def _tensor_means(segment: RecordedSegment, d: torch.Tensor) -> torch.Tensor:
    sizes = [math.prod(s) for s in segment.shapes]
    return torch.cat([p.mean().expand(len(p)) for p in d.split(sizes)])


def _precond(segment: RecordedSegment, step: RecordedStep) -> torch.Tensor:
    beta2, eps = segment.hyper.betas[1], segment.hyper.eps
    done = step.step - 1
    correction = 1 - beta2**done if done > 0 else 1.0
    return 1 / ((step.exp_avg_sq / correction).sqrt() + eps)


def candidate_map(segment: RecordedSegment, name: str, seed: int = 0) -> FlatMap:
    """The flat xi~_t of candidate ``name`` from a recorded step (module docstring)."""
    if name == "recorded":
        return lambda s: s.noise
    if name.startswith("fresh_draw_"):
        index = int(name.removeprefix("fresh_draw_"))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + segment.switch_step * 101 + index)
        draws = {s.step: torch.randn(s.standard.shape, generator=gen) for s in segment.steps}
        return lambda s: s.root * draws[s.step].to(s.root.device) * math.sqrt(s.scale)
    if name == "isotropic":
        return lambda s: (s.root**2).mean().sqrt() * s.standard * math.sqrt(s.scale)
    if name == "tensor_matched":
        return lambda s: _tensor_means(segment, s.root**2).sqrt() * s.standard * math.sqrt(s.scale)
    if name == "precond_aligned":

        def aligned(s: RecordedStep) -> torch.Tensor:
            shaped = _precond(segment, s) * s.root
            c = s.root.norm() / shaped.norm().clamp(min=1e-30)
            return c * shaped * s.standard * math.sqrt(s.scale)

        return aligned
    factors = {"half": 1 / math.sqrt(2), "double": math.sqrt(2), "no_injection": 0.0,
               "antithetic": -1.0}  # fmt: skip
    if name in factors:
        return lambda s, a=factors[name]: a * s.noise
    if name.startswith("scaled_"):
        try:
            factor = float(name.removeprefix("scaled_"))
        except ValueError:
            raise ValueError(f"candidate {name!r}: scaled_<a> needs a number a") from None
        return lambda s: factor * s.noise
    if name in ("attention_only", "mlp_only"):
        mask = _layer_mask(segment, "attn" if name == "attention_only" else "mlp")
        return lambda s: mask * s.noise
    raise ValueError(
        f"unknown replay candidate {name!r}; known: {CANDIDATES}, fresh_draw_<j>, "
        "scaled_<a>, recorded"
    )


class CandidateCovariance:
    """Sigma~_t of candidate ``name``, for ``gradnoise.replay.predict_expected``.

    Every candidate is xi~_t = a_t * z_t for a coefficient vector a_t and a standard draw z_t
    (the recorded one, or a fresh one: the same law), so Sigma~_t = diag(a_t^2) and
    Sigma~_t^(1/2) z = a_t * z; a_t is the candidate's map of a step whose draw is all ones.
    """

    def __init__(self, segment: RecordedSegment, name: str):
        base = "recorded" if name.startswith("fresh_draw_") else name
        flat = candidate_map(segment, base)
        self.segment = segment
        self.coefficients = [flat(replace(s, standard=torch.ones_like(s.standard)))
                             for s in segment.steps]  # fmt: skip

    def diag(self, t: int) -> dict[str, torch.Tensor]:
        return self.segment.split(self.coefficients[t] ** 2)

    def sample(self, t: int, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        a = self.segment.split(self.coefficients[t])
        return {k: a[k] * z[k] for k in a}


def noise_map(segment: RecordedSegment, name: str, seed: int = 0):
    """Candidate ``name`` as a ``gradnoise.replay.NoiseMap`` (segment step t, xi_t) -> xi~_t."""
    flat = candidate_map(segment, name, seed)
    return lambda t, xi: segment.split(flat(segment.steps[t]))
