"""What a run records for replay, and the run replayed with the recorded or another noise.

A ``Trajectory`` is a segment of a run: the parameters and AdamW state at its start (a
checkpoint), the number of updates done before it, the hyper-parameters, and per step a
``StepRecord``: the batch the loss was taken on, the learning rate eta_t and the noise
draw xi_t added to the averaged gradient, stored or regenerated on demand by a callable
(the injector's generator restored to its state at the checkpoint).

``rerun`` replays the segment with the update map of ``gradnoise.replay.update``: with the
recorded draws it reproduces the recorded run; with ``noise=phi`` it is the retrain under
the candidate noise xi~_t = phi(t, xi_t), the same data order and the same base draws
(common random numbers), which a pathwise prediction stands in for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gradnoise.replay.adamw import AdamState, AdamWHyper, Tensors
from gradnoise.replay.update import LossFn, update

NoiseMap = Callable[[int, Tensors], Tensors]  # (segment step t, recorded xi_t) -> xi~_t


@dataclass
class StepRecord:
    """One recorded step: its batch, learning rate and noise draw (None: no added noise)."""

    batch: Any
    lr: float
    noise: Tensors | Callable[[], Tensors] | None = None

    def draw(self) -> Tensors | None:
        """The recorded xi_t (regenerated when stored as a callable)."""
        return self.noise() if callable(self.noise) else self.noise


@dataclass
class Trajectory:
    """A recorded segment: the start (checkpoint) and its steps, replayable with ``loss_fn``."""

    loss_fn: LossFn
    params: Tensors
    state: AdamState
    hyper: AdamWHyper
    steps: Sequence[StepRecord]
    steps_done: int = 0  # AdamW updates before the segment (torch's state["step"])
    max_norm: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return len(self.steps)


def zeros_like(params: Tensors) -> Tensors:
    return {k: torch.zeros_like(v) for k, v in params.items()}


def rerun(trajectory: Trajectory, noise: NoiseMap | None = None) -> tuple[Tensors, AdamState]:
    """theta_T and the state after replaying every step, with xi_t or with noise(t, xi_t)."""
    params, state = trajectory.params, trajectory.state
    with torch.no_grad():
        for t, record in enumerate(trajectory.steps):
            xi = record.draw()
            if noise is not None:
                xi = noise(t, xi if xi is not None else zeros_like(params))
            params, state = update(
                trajectory.loss_fn,
                trajectory.hyper,
                params,
                state,
                xi,
                record.batch,
                record.lr,
                trajectory.steps_done + t + 1,
                trajectory.max_norm,
            )
    return params, state
