"""Estimation: the P-NE logger and the formulas it evaluates (seed 003, DESIGN §2).

``NoiseLogger`` estimates, on logging steps, diag(C) from the micro-batch mean
gradients a step computes anyway, and integrates eta_t Tr(P C P) / B and P-NE*
over every step. The formulas (``formulas``), the curvature proxies
(``curvature``), the integrals (``integrals``), the worker pooling (``pooling``),
the spectrum and tail index (``spectrum``) and the streaming reduction
(``micro_stream``, ``streamed_estimate``) are one module each.
"""

from gradnoise.estimation.formulas import (
    b_simple,
    covariance_diag,
    curvature_floor,
    effective,
    grad_sq_diag,
    pne,
    pne_star,
    precond_flat,
    precond_sq_flat,
    preconditioner,
)
from gradnoise.estimation.integrals import INTEGRATED
from gradnoise.estimation.logger import CURVATURES, NoiseLogger

__all__ = [
    "CURVATURES",
    "INTEGRATED",
    "NoiseLogger",
    "b_simple",
    "covariance_diag",
    "curvature_floor",
    "effective",
    "grad_sq_diag",
    "pne",
    "pne_star",
    "precond_flat",
    "precond_sq_flat",
    "preconditioner",
]
