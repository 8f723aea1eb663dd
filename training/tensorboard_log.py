"""TensorBoard event files of a run's trace rows, for watching it (``train.tensorboard``).

The trainer writes one set of scalars per logged step (a row of the trace), from
rank 0 only, into the run's ``tensorboard/`` folder, so ``tensorboard --logdir
<results>`` shows every run of a study. The trace stays the record; the event files
are a view of it. ``tensorboard`` is an optional dependency, imported only when the
switch is on.
"""

from __future__ import annotations

from pathlib import Path

from training.config import TrainConfig

# TensorBoard tag -> trace column (preregistration.tables STEPS); the tag's group is
# the panel it is drawn in.
SCALARS = {
    "loss/train_loss": "train_loss",
    "loss/val_loss": "val_loss",  # validated steps only
    "exposure/pne": "pne",
    "exposure/pne_star": "pne_star",
    "exposure/int_pne": "int_pne",
    "exposure/int_pne_star": "int_pne_star",
    "optimizer/clip_rate": "clip_rate",
    "optimizer/lr": "lr",
}


class TensorBoardLog:
    """Scalars of the trace rows in event files under ``log_dir``.

    ``first_step`` is the run's first step in this process (after a resume, the step
    after the checkpoint): TensorBoard hides the events of an earlier attempt from that
    step on, so a killed and resumed run shows each step once.
    """

    def __init__(self, log_dir: Path, first_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError(
                "config key train.tensorboard is true but the tensorboard package is not "
                "installed: pip install tensorboard (or set train.tensorboard: false)"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=first_step, flush_secs=30)

    def write(self, row: dict) -> None:
        """The scalars of one trace row (a column the row lacks is left out)."""
        for tag, column in SCALARS.items():
            if column not in row or (column == "val_loss" and not row["validated"]):
                continue
            self.writer.add_scalar(tag, float(row[column]), global_step=int(row["step"]))

    def close(self) -> None:
        self.writer.close()


def tensorboard_log(
    train_cfg: TrainConfig, log_dir: Path | None, rank: int, first_step: int
) -> TensorBoardLog | None:
    """The run's TensorBoard log when ``train.tensorboard`` is on and this is rank 0, else None."""
    if not train_cfg.tensorboard or rank != 0:
        return None
    if log_dir is None:
        raise ValueError(
            "config key train.tensorboard is true but train_run got no tensorboard_dir "
            "for the event files"
        )
    return TensorBoardLog(Path(log_dir), first_step)
