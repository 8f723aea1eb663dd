"""What a run records for counterfactual replay, and a recorded segment run again.

Recording (issue 21 item 1): a base run registered by the plan's ``replay`` section
saves its whole state every ``record_every`` steps, as the resume state of
``training.resume`` (model, AdamW's moments and step counts, the P-NE logger's sums
and held estimates, the noise arm's generators and controller, the trace so far, the
random states): ``{run}/replay/step{t:06d}.pt``. Nothing else is stored. The learning
rate and the data order are functions of the step (``lr_at``, ``batch_indices``), and
the noise of the steps after a recorded state is regenerated exactly by running the
training loop on from it (``Segment``): the injector's generator and the logger's held
diag(C) / B, which sets the noise's shape, are restored with the state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RECORD_DIR = "replay"  # under the run directory
_NAME = re.compile(r"step(\d{6})\.pt")


@dataclass(frozen=True)
class ReplayRecording:
    """Where and how often a training run saves its state for replay."""

    directory: Path
    every: int

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"replay recording: every must be >= 1 step, got {self.every}")

    def path(self, step: int) -> Path:
        return Path(self.directory) / f"step{step:06d}.pt"


@dataclass
class Segment:
    """Run the training loop on from the recorded state ``start`` to step ``stop_after``,
    calling ``observe(step, run, lr)`` each step once the step's noise is in ``.grad``."""

    start: Path
    stop_after: int
    observe: Callable

    def __post_init__(self) -> None:
        if not Path(self.start).is_file():
            raise FileNotFoundError(f"{self.start}: no recorded replay state there")


def recorded_steps(directory: str | Path) -> list[int]:
    """The steps at which a run saved its state for replay, ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory}: the run recorded no replay states (it is not a registered replay "
            "base, or it was trained before recording existed: train it again)"
        )
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name)))


def switch_step(recorded: list[int], run_steps: int, fraction: float, horizon: int) -> int:
    """The last recorded step at or before ``fraction`` of the run's steps.

    The segment after it must fit in the run: switch + horizon <= run_steps.
    """
    wanted = fraction * run_steps
    before = [s for s in recorded if s <= wanted]
    if not before:
        raise ValueError(
            f"no replay state recorded at or before step {wanted:g} ({fraction:g} of "
            f"{run_steps} steps); recorded: {recorded[:8]}"
        )
    step = before[-1]
    if step + horizon > run_steps:
        raise ValueError(
            f"switch at step {step} + horizon {horizon} passes the run's last step {run_steps}"
        )
    return step
