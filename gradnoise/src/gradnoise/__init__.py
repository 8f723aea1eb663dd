"""gradnoise: optimizer-preconditioned gradient noise exposure for PyTorch training loops.

P-NE_t = eta_t Tr(P_t C_t P_t) / B and P-NE*_t = P-NE_t / Tr(P_t F_t P_t) (seed 003):
the gradient noise a step injects, as the optimizer's preconditioner P_t shapes it.

Subpackages, one job each:

- ``gradnoise.estimation``: the logger and its formulas (measure the noise);
- ``gradnoise.injection``: noise added on purpose (Gaussian, Student-t, anisotropic,
  NAP, SGLD) and the preconditioner freeze;
- ``gradnoise.control``: the controller that steers injected noise to a target exposure;
- ``gradnoise.tap``: ``attach``, the logger fed by hooks from an unchanged training loop;
- ``gradnoise.selfcheck``: the estimate against exact per-example gradients on your model;
- ``gradnoise.replay``: counterfactual noise replay, a run's outcome under other noise
  predicted from its record (functional AdamW, tangents, pathwise and expected predictions);
- ``gradnoise.integrations``: PyTorch Lightning and Hugging Face callbacks (optional extras).

The names below are the public interface; everything else is internal.
"""

from gradnoise.control import BudgetWindow, ExposureController, ReferenceTrajectory
from gradnoise.estimation import CURVATURES, INTEGRATED, NoiseLogger
from gradnoise.injection import (
    GRADIENT_FORMS,
    NOISE_FORMS,
    GradientNoise,
    NAPNoise,
    PreconditionerFreeze,
    SGLDNoise,
    sgld_equivalent_diag,
)
from gradnoise.replay import predict_expected, predict_pathwise
from gradnoise.selfcheck import SelfCheckReport, selfcheck
from gradnoise.tap import NoiseTap, attach

__version__ = "0.1.0"

__all__ = [
    "CURVATURES",
    "GRADIENT_FORMS",
    "INTEGRATED",
    "NOISE_FORMS",
    "BudgetWindow",
    "ExposureController",
    "GradientNoise",
    "NAPNoise",
    "NoiseLogger",
    "NoiseTap",
    "PreconditionerFreeze",
    "ReferenceTrajectory",
    "SGLDNoise",
    "SelfCheckReport",
    "attach",
    "predict_expected",
    "predict_pathwise",
    "selfcheck",
    "sgld_equivalent_diag",
]
