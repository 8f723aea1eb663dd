"""P-NE from a Lightning ``Trainer.fit``, the LightningModule as it is (``gradnoise[lightning]``).

::

    from gradnoise.integrations.lightning import NoiseCallback

    noise = NoiseCallback(log_interval=100)
    trainer = lightning.pytorch.Trainer(accumulate_grad_batches=4, gradient_clip_val=1.0,
                                        callbacks=[noise])
    trainer.fit(module, datamodule)
    noise.records       # the records of the logging steps (dicts, as NoiseTap.records)

How Lightning's automatic optimization meets the hooks of ``gradnoise.tap``
(lightning 2.6, ``loops/optimization/automatic.py`` and ``plugins/precision/``):

- Accumulation. Each optimizer step runs K = ``accumulate_grad_batches`` training
  steps; Lightning divides each returned loss by K (the ``"mean"`` convention: each
  micro-batch loss a mean over its examples). The first K - 1 backward passes run
  under DDP's ``no_sync``; the per-parameter tensor hooks see every micro-batch's
  local gradient before DDP's all-reduce, so K is per worker and W is
  ``trainer.world_size``. Under DDP the tap is attached to the strategy's
  ``DistributedDataParallel`` wrapper (``trainer.strategy.model``), whose
  communication hook gives it the global gradient norm before clipping; Lightning's
  default DistributedSampler splits the examples. Lightning zeroes the gradients
  after the forward pass of a window's first micro-batch, before its backward, which
  the hooks do not depend on.
- Step and clipping. The K-th micro-batch's forward and backward and the gradient
  clipping (``configure_gradient_clipping``, ``gradient_clip_val``) run inside the
  closure that the precision plugin hands to ``optimizer.step(closure)``; so the
  optimizer's step pre-hook runs before the last backward, and the tap does its work
  in the step post-hook, where ``.grad`` holds the clipped gradient of the update and
  ``param_groups`` the learning rate it used (schedulers step after it).
- Mixed precision (``16-mixed``). The plugin calls the closure itself, unscales the
  gradients, clips and calls ``scaler.step(optimizer)``, which skips the optimizer (and
  its hooks) when a gradient is not finite; the plugin's ``GradScaler`` is handed to
  the tap, which divides the micro-batch gradients by its scale and counts the steps
  that never reached the optimizer.
- A window shorter than K at the end of an epoch (``num_training_batches`` not a
  multiple of K) would be stepped with fewer micro-batches than the logger expects;
  fit refuses it at the start (see ``on_train_start``).

Not supported: manual optimization (the module steps its optimizers itself; attach
``gradnoise.tap`` in the module) and more than one optimizer. Resuming from a
checkpoint restarts the integrals at zero.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.nn.parallel import DistributedDataParallel

from gradnoise.integrations.columns import scalar_columns
from gradnoise.tap import NoiseTap, attach

__all__ = ["NoiseCallback"]


class NoiseCallback(pl.Callback):
    """Attach ``gradnoise.tap`` to a Lightning fit and log each record's P-NE columns.

    Parameters
    ----------
    micro_batch_size : m, examples per micro-batch on each worker; None reads the
        training DataLoader's ``batch_size``.
    prefix : put before each column's name in the loggers (``pne/trace_pcp``, ...).
    **logger_options : handed to ``gradnoise.tap.attach`` and on to ``NoiseLogger``
        (``log_interval``, ``curvature``, ``streaming``, ...).

    Attributes
    ----------
    records : the tap's records of this fit, one dict per logging step.
    tap : the attached ``NoiseTap`` during fit, None outside it.

    Notes
    -----
    Attaches in ``on_train_start`` (after Lightning has wrapped the model for DDP, set
    up the optimizer and the training DataLoader) with n_micro =
    ``trainer.accumulate_grad_batches``, world size ``trainer.world_size`` and the
    precision plugin's ``GradScaler`` if any; detaches when training ends or fails.
    On global rank 0, after the batch that completed a logging step, every numeric
    column of its record goes to each of ``trainer.loggers`` as ``log_metrics(columns,
    step=trainer.global_step)``, in float64 (``LightningModule.log`` would round to
    float32). The records agree across workers (the estimate is pooled over them).
    """

    def __init__(self, *, micro_batch_size: int | None = None, prefix: str = "pne/",
                 **logger_options: Any):  # fmt: skip
        self.micro_batch_size = micro_batch_size
        self.prefix = prefix
        self.logger_options = logger_options
        self.records: list[dict] = []
        self.tap: NoiseTap | None = None
        self._pending: list[dict] = []  # records not yet handed to the loggers

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = self._single_optimizer(trainer, pl_module)
        n_micro = trainer.accumulate_grad_batches
        self._check_windows(trainer, n_micro)
        micro_batch_size = self.micro_batch_size or _loader_batch_size(trainer)
        if micro_batch_size is None:
            raise ValueError(
                "gradnoise NoiseCallback: the training DataLoader has no batch_size (a "
                "batch_sampler?); pass NoiseCallback(micro_batch_size=m)"
            )
        # under DDP the tap reads the global pre-clip norm from a communication hook on the
        # DistributedDataParallel wrapper that the strategy built around the module
        wrapped = trainer.strategy.model
        model = wrapped if isinstance(wrapped, DistributedDataParallel) else pl_module
        self.records, self._pending = [], []
        self.tap = attach(
            model, optimizer, n_micro=n_micro, loss_reduction="mean",
            micro_batch_size=micro_batch_size, world_size=trainer.world_size,
            scaler=getattr(trainer.precision_plugin, "scaler", None), on_record=self._on_record,
            **self.logger_options,
        )  # fmt: skip

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        pending, self._pending = self._pending, []
        if not trainer.is_global_zero:
            return
        for record in pending:
            columns = scalar_columns(record, self.prefix)
            for logger in trainer.loggers:
                logger.log_metrics(columns, step=trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        self._detach()

    # -- internals ---------------------------------------------------------

    def _on_record(self, record: dict) -> None:
        self.records.append(record)
        self._pending.append(record)

    def _detach(self) -> None:
        if self.tap is not None:
            self.tap.detach()
            self.tap = None

    @staticmethod
    def _single_optimizer(trainer: pl.Trainer, pl_module) -> torch.optim.Optimizer:
        if not pl_module.automatic_optimization:
            raise ValueError(
                "gradnoise NoiseCallback: the LightningModule uses manual optimization; "
                "attach gradnoise.tap in the module, where its n_micro is known"
            )
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"gradnoise NoiseCallback: configure_optimizers returned "
                f"{len(trainer.optimizers)} optimizers; the tap follows exactly one"
            )
        return trainer.optimizers[0]

    @staticmethod
    def _check_windows(trainer: pl.Trainer, n_micro: int) -> None:
        """Refuse a fit that would step an epoch's last, shorter accumulation window."""
        batches = trainer.num_training_batches
        if batches == float("inf") or batches % n_micro == 0:
            return
        full_steps = int(batches) // n_micro
        if trainer.max_steps == -1 or trainer.max_steps > full_steps:
            raise ValueError(
                f"gradnoise NoiseCallback: {int(batches)} training batches per epoch is not a "
                f"multiple of accumulate_grad_batches={n_micro}, so an epoch ends with a step of "
                f"{int(batches) % n_micro} micro-batches; set limit_train_batches (or the "
                "DataLoader's drop_last and size) to a multiple of it"
            )


def _loader_batch_size(trainer: pl.Trainer) -> int | None:
    """The training DataLoader's ``batch_size`` (per worker), None if it has none."""
    loader = trainer.train_dataloader
    return getattr(loader, "batch_size", None)
