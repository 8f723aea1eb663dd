"""Injection: noise added to a training run on purpose (DESIGN §3, seed 002).

Gradient noise added to the averaged gradient before clipping (Gaussian,
Student-t, anisotropic from the micro-batch gradients), noise-aligned
preconditioning (NAP, seed 002), SGLD update noise, and the preconditioner
freeze that stops Adam's second moment.
"""

from gradnoise.injection.freeze import PreconditionerFreeze, frozen_adamw_step
from gradnoise.injection.gradient_noise import (
    GRADIENT_FORMS,
    NOISE_FORMS,
    GradientNoise,
    SGLDNoise,
    sgld_equivalent_diag,
)
from gradnoise.injection.nap import NAPNoise, OjaSketch

__all__ = [
    "GRADIENT_FORMS",
    "NOISE_FORMS",
    "GradientNoise",
    "NAPNoise",
    "OjaSketch",
    "PreconditionerFreeze",
    "SGLDNoise",
    "frozen_adamw_step",
    "sgld_equivalent_diag",
]
