"""Replay: Counterfactual Noise Replay (seed 002 §4; issue 21), a run's outcome under other noise.

From a recorded segment of an AdamW run (a checkpoint, and per step the batch, learning
rate and noise draw), predict how a metric of the end point would change had the noise
been another, without retraining: tangents pushed along the recorded trajectory by
Jacobian-vector products of the AdamW update map (forward over reverse), with the
SGD-form and identity Jacobians as baselines.

- ``adamw``: ``adamw_step``, a pure functional AdamW equal to ``torch.optim.AdamW``, and
  ``adamw_from_optimizer``;
- ``update``: the update map U_t (noise, clipping, AdamW) and ``functional_loss``;
- ``tangent``: one step of a tangent, J_t dS + K_t d xi, for each Jacobian;
- ``trajectory``: ``StepRecord``, ``Trajectory`` and ``rerun`` (the retrain it stands in for);
- ``candidates``: candidate noises, maps of the recorded draw and covariances;
- ``predict``: the pathwise (first-order) and expected (second-order) predictions;
- ``adjoint``: the pathwise prediction in reverse form, one reverse pass per Jacobian for
  every candidate (``pathwise_adjoint``).

Usage::

    traj = Trajectory(loss_fn, params, state, hyper, [StepRecord(batch, lr, xi), ...])
    rows = predict_pathwise(traj, {"x2": rescaled(2.0)}, {"loss": metric_fn})
    rows = predict_expected(traj, {"x2": cov.scaled(4.0)}, cov, {"loss": metric_fn})
    rows = pathwise_adjoint(traj, {"x2": rescaled(2.0), "x0": rescaled(0.0)}, {"loss": metric_fn})
"""

from gradnoise.replay.adamw import AdamState, AdamWHyper, adamw_from_optimizer, adamw_step
from gradnoise.replay.adjoint import AdjointPrediction, pathwise_adjoint
from gradnoise.replay.candidates import Covariance, DiagonalCovariance, rescaled, restricted
from gradnoise.replay.predict import (
    ExpectedPrediction,
    PathwisePrediction,
    delta_theta,
    predict_expected,
    predict_pathwise,
    propagate,
)
from gradnoise.replay.tangent import JACOBIANS, Tangent, hvp, push, push_batch
from gradnoise.replay.trajectory import StepRecord, Trajectory, rerun
from gradnoise.replay.update import functional_loss, update

__all__ = [
    "JACOBIANS",
    "AdamState",
    "AdamWHyper",
    "AdjointPrediction",
    "Covariance",
    "DiagonalCovariance",
    "ExpectedPrediction",
    "PathwisePrediction",
    "StepRecord",
    "Tangent",
    "Trajectory",
    "adamw_from_optimizer",
    "adamw_step",
    "delta_theta",
    "functional_loss",
    "hvp",
    "pathwise_adjoint",
    "predict_expected",
    "predict_pathwise",
    "propagate",
    "push",
    "push_batch",
    "rerun",
    "rescaled",
    "restricted",
    "update",
]
