"""Candidate noises for replay: maps of the recorded draw (pathwise) and covariances (expected).

Pathwise candidates are ``NoiseMap``s, xi~_t = phi(t, xi_t), which a retrain realises by
reusing the recorded draws (common random numbers): ``rescaled(a)`` gives a xi_t (the
recorded form scaled), ``restricted(keep)`` keeps xi_t on the named parameters only
(for example the attention or the MLP layers).

Expected candidates are covariances Sigma~_t of zero-mean noise. A ``Covariance`` gives
the diagonal of Sigma_t (for Adam's second moment, E[(g + xi)^2] = g^2 + diag Sigma_t)
and a square root applied to a probe, Sigma_t^{1/2} z, which has covariance Sigma_t for
any probe z of independent entries with mean 0 and variance 1 (Gaussian or Rademacher;
Hutchinson 1989). ``DiagonalCovariance`` is Sigma_t = s_t diag(d_t), the form of
``gradnoise.injection.GradientNoise``'s Gaussian noise (s_t the squared scale times the
unit covariance's diagonal d_t); any object with the same two methods can stand in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from gradnoise.replay.adamw import Tensors
from gradnoise.replay.trajectory import NoiseMap


def rescaled(factor: float) -> NoiseMap:
    """xi~_t = factor xi_t."""
    return lambda t, xi: {k: factor * v for k, v in xi.items()}


def _keeper(keep: Callable[[str], bool] | Iterable[str]) -> Callable[[str], bool]:
    if callable(keep):
        return keep
    names = set(keep)
    return lambda name: name in names


def restricted(keep: Callable[[str], bool] | Iterable[str]) -> NoiseMap:
    """xi~_t = xi_t on the parameters ``keep`` names (a set or a predicate), 0 elsewhere."""
    kept = _keeper(keep)
    return lambda t, xi: {k: v if kept(k) else torch.zeros_like(v) for k, v in xi.items()}


class Covariance(Protocol):
    """Sigma_t of a zero-mean noise: its diagonal and a square root applied to a probe."""

    def diag(self, t: int) -> Tensors: ...

    def sample(self, t: int, z: Tensors) -> Tensors: ...


@dataclass(frozen=True)
class DiagonalCovariance:
    """Sigma_t = scale_t diag(variance_t), restricted to the parameters ``keep`` names.

    ``variance`` is a dict of per-coordinate variances or a function of the segment step t
    returning one; ``scale`` a number or a function of t.
    """

    variance: Tensors | Callable[[int], Tensors]
    scale: float | Callable[[int], float] = 1.0
    keep: Callable[[str], bool] | frozenset[str] | None = None

    def _scale(self, t: int) -> float:
        return self.scale(t) if callable(self.scale) else self.scale

    def diag(self, t: int) -> Tensors:
        var = self.variance(t) if callable(self.variance) else self.variance
        s, kept = self._scale(t), _keeper(self.keep) if self.keep is not None else None
        return {
            k: s * v if kept is None or kept(k) else torch.zeros_like(v) for k, v in var.items()
        }

    def sample(self, t: int, z: Tensors) -> Tensors:
        """Sigma_t^{1/2} z = sqrt(scale_t variance_t) z."""
        return {k: d.sqrt() * z[k] for k, d in self.diag(t).items()}

    def scaled(self, factor: float) -> DiagonalCovariance:
        """factor Sigma_t (the noise's standard deviation times sqrt(factor))."""
        s = self.scale
        scale = (lambda t: factor * s(t)) if callable(s) else factor * s
        return DiagonalCovariance(self.variance, scale, self.keep)

    def restricted(self, keep: Callable[[str], bool] | Iterable[str]) -> DiagonalCovariance:
        """Sigma_t on the parameters ``keep`` names, 0 elsewhere."""
        keep = keep if callable(keep) else frozenset(keep)
        if self.keep is not None:
            inner, outer = _keeper(self.keep), _keeper(keep)
            keep = lambda name: inner(name) and outer(name)  # noqa: E731
        return DiagonalCovariance(self.variance, self.scale, keep)
