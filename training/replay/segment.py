"""A recorded segment of a base run, regenerated from its replay state (issue 21 item 1).

``regenerate`` runs the training loop on from the state a base run recorded at the
switch step c (``training.recording``) for ``horizon`` steps and keeps what the
replay needs of each step t = c + 1 .. c + horizon: the learning rate, the batch (the
seed's data order), the injected draw xi_t = sqrt(s_t) (d_t^(1/2) * z_t) as the
injector made it (``GradientNoise.last_draw``: the standard draw z_t, the root d_t^(1/2)
of diag(C) / B held by the logger, the controller's scale s_t) and Adam's second moment
before the step (for candidates shaped by the preconditioner). The start is the
parameters and AdamW state at c, read from the optimizer (``adamw_from_optimizer``).

``trajectory`` turns it into a ``gradnoise.replay.Trajectory`` of the GPT's loss, whose
``rerun`` with the recorded draws is the base run's segment again (up to the rounding of
one forward pass instead of the loop's micro-batch passes on logging steps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.func import functional_call

from gradnoise import GradientNoise
from gradnoise.replay import (
    AdamState,
    AdamWHyper,
    StepRecord,
    Trajectory,
    adamw_from_optimizer,
)
from preregistration.design import RunSpec
from training.batches import batch_indices
from training.config import StudyConfig
from training.model import lm_loss
from training.recording import Segment
from training.run_setup import RunSetup


@dataclass
class RecordedStep:
    """Step t of the segment: lr, batch positions, the draw (z, d^(1/2), s), v before it."""

    step: int
    lr: float
    indices: torch.Tensor
    standard: torch.Tensor  # z_t, flat
    root: torch.Tensor  # d_t^(1/2), flat
    scale: float  # s_t
    exp_avg_sq: torch.Tensor  # Adam's v before the step, flat
    clip_coef: float = math.nan

    @property
    def noise(self) -> torch.Tensor:
        """xi_t, flat, computed as the injector did: (d^(1/2) * z) * sqrt(s)."""
        return self.root * self.standard * math.sqrt(self.scale)


@dataclass
class RecordedSegment:
    """The segment after switch step c of a base run, and the model to replay it on."""

    spec: RunSpec
    switch_step: int
    model: torch.nn.Module  # the run's model object (its parameters are not used)
    names: list[str]  # parameter names in the injector's flat order
    shapes: list[torch.Size]
    params: dict[str, torch.Tensor]  # theta_c
    state: AdamState
    hyper: AdamWHyper
    steps_done: int
    max_norm: float
    steps: list[RecordedStep] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def horizon(self) -> int:
        return len(self.steps)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat vector in the injector's order as a dict by parameter name."""
        sizes = [math.prod(s) for s in self.shapes]
        pieces = flat.split(sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def loss_fn(self):
        """L(params; seq): the mean next-token loss of a batch, as the loop computes it."""
        model = self.model

        def loss(params: dict[str, torch.Tensor], seq: torch.Tensor) -> torch.Tensor:
            return lm_loss(functional_call(model, params, (seq[:, :-1],)), seq[:, 1:])

        return loss


def regenerate(
    spec: RunSpec, cfg: StudyConfig, corpus: dict, reference_trace: pd.DataFrame | None,
    state_path: Path, horizon: int,
) -> RecordedSegment:  # fmt: skip
    """Run the loop from the recorded state at ``state_path`` for ``horizon`` steps, keeping
    each step's draw; the result's start is the state itself."""
    from training.train import train_run  # the loop imports this package's recording module

    if spec.noise.get("form") != "gaussian":
        raise ValueError(
            f"run {spec.run_id}: replay bases must inject Gaussian noise (their draws are "
            f"regenerable); its noise form is {spec.noise.get('form', 'none')!r}"
        )
    found: dict = {}

    def observe(step: int, run: RunSetup, lr: float) -> None:
        injector = run.arm.injector
        if not isinstance(injector, GradientNoise) or injector.last_draw is None:
            raise RuntimeError(f"run {spec.run_id}: step {step} injected no recorded draw")
        if "start" not in found:
            found["start"] = adamw_from_optimizer(run.optimizer, run.model)
            found["model"] = run.model
            found["names"] = [n for n, p in run.model.named_parameters() if p.requires_grad]
            found["shapes"] = [p.shape for p in run.model.parameters() if p.requires_grad]
            found["max_norm"] = float(run.train_cfg.grad_clip)
        draw = injector.last_draw
        v = torch.cat(
            [run.optimizer.state[p]["exp_avg_sq"].reshape(-1).float() for p in injector.params]
        )
        b = spec.global_batch
        found.setdefault("steps", []).append(
            RecordedStep(
                step,
                lr,
                batch_indices(spec.seed, (step - 1) * b, b, len(run.train)),
                draw.standard.detach().clone(),
                draw.root.detach().clone(),
                draw.scale,
                v.clone(),
            )  # fmt: skip
        )

    first = int(Path(state_path).stem.removeprefix("step"))
    start = time.perf_counter()
    segment = Segment(Path(state_path), first + horizon, observe)
    _, result = train_run(
        spec, cfg, corpus, show_progress=False, reference_trace=reference_trace, segment=segment
    )
    steps = found.get("steps", [])
    if len(steps) != horizon or result.status == "diverged":
        raise RuntimeError(
            f"{state_path}: the regenerated segment has {len(steps)} of {horizon} steps "
            f"(status {result.status}); the run ended inside it"
        )
    hyper, _, params, state, done = found["start"]
    if done != first:
        raise RuntimeError(f"{state_path}: AdamW's step count {done} is not the state's {first}")
    clips = result.trace.set_index("step")["clip_coef"] if len(result.trace) else pd.Series()
    for s in steps:
        s.clip_coef = float(clips.get(s.step, math.nan))
    return RecordedSegment(
        spec, first, found["model"], found["names"], found["shapes"], params, state, hyper,
        done, found["max_norm"], steps, time.perf_counter() - start,
    )  # fmt: skip


def trajectory(segment: RecordedSegment, train: torch.Tensor, horizon: int | None = None):
    """The segment's first ``horizon`` steps as a ``gradnoise.replay.Trajectory``."""
    steps = segment.steps[: horizon or segment.horizon]
    records = [StepRecord(train[s.indices].long(), s.lr, segment.split(s.noise)) for s in steps]
    return Trajectory(
        segment.loss_fn(), segment.params, segment.state, segment.hyper, records,
        steps_done=segment.steps_done, max_norm=segment.max_norm,
    )  # fmt: skip
