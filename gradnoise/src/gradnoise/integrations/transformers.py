"""P-NE from a Hugging Face ``Trainer.train``, the model as it is (``gradnoise[transformers]``).

::

    from gradnoise.integrations.transformers import NoiseCallback

    noise = NoiseCallback(log_interval=100)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[noise])
    trainer.train()
    noise.records       # the records of the logging steps (dicts, as NoiseTap.records)

How the Trainer's step meets the hooks of ``gradnoise.tap`` (transformers 5.23,
``Trainer._run_epoch`` and ``training_step``):

- Accumulation. Each optimizer step runs K = ``args.gradient_accumulation_steps``
  micro-batches of ``args.per_device_train_batch_size`` examples, all but the last under
  DDP's ``no_sync``; the tap's per-parameter tensor hooks see each one's local gradient
  before DDP's all-reduce, so K is per worker and W would be ``args.world_size``.
- The loss convention. When the model's ``forward`` takes no loss keyword arguments (no
  ``**kwargs``, ``accepts_loss_kwargs`` false) and no ``compute_loss_func`` is given,
  the Trainer divides each micro-batch's loss by K: the ``"mean"`` convention. When it
  does (the library's own language models), the Trainer passes ``num_items_in_batch``,
  the number of label tokens of all K micro-batches (and of all workers, with
  ``average_tokens_across_devices``), and the model sums its token losses and divides
  by that count: micro-batch j then contributes (n_j / N) times its per-token mean
  gradient. That equals the ``"mean"`` convention when every micro-batch counts the
  same number of label tokens (fixed-length sequences without ignored labels); with
  unequal counts (padding, ``-100`` masks) the micro-batch increments are weighted by
  their token counts and the estimate of the gradient covariance is biased: that case
  is not supported, and the callback warns when the model takes loss keywords.
- Step and clipping. After the K-th backward the Trainer clips (``max_grad_norm``,
  ``accelerator.clip_grad_norm_``, after unscaling under fp16), then calls
  ``optimizer.step()`` on accelerate's ``AcceleratedOptimizer``, which steps the torch
  optimizer (through the ``GradScaler`` under fp16: a step with non-finite gradients
  never reaches it, nor its hooks). The tap's step post-hook sees the clipped
  gradient and the learning rate of the update (the scheduler steps after it). The
  callback hands the tap the torch optimizer inside the wrapper and the wrapper's scaler.
- A last window shorter than K at an epoch's end is stepped with fewer micro-batches;
  keep the number of batches per epoch a multiple of K (or ``max_steps`` within it).

Not supported: more than one worker. A callback is handed the unwrapped model
(``Trainer.model``), while under DDP the tap reads the global pre-clip norm from a
communication hook on the ``DistributedDataParallel`` wrapper (``Trainer.model_wrapped``),
which no callback argument reaches; ``on_train_begin`` refuses W > 1.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
import transformers
from accelerate.optimizer import AcceleratedOptimizer

from gradnoise.integrations.columns import scalar_columns
from gradnoise.tap import NoiseTap, attach

__all__ = ["NoiseCallback"]


class NoiseCallback(transformers.TrainerCallback):
    """Attach ``gradnoise.tap`` to a Trainer's training and add each record to its logs.

    Parameters
    ----------
    loss_reduction : ``"mean"`` (the Trainer's division by K, or ``num_items_in_batch``
        with equal label-token counts per micro-batch: see the module docstring) or
        ``"sum"`` (a ``compute_loss`` of one's own that sums over examples); None takes
        ``"mean"`` and warns when the model takes loss keyword arguments.
    prefix : put before each column's name in the logs (``pne/trace_pcp``, ...).
    **logger_options : handed to ``gradnoise.tap.attach`` and on to ``NoiseLogger``
        (``log_interval``, ``curvature``, ``streaming``, ...).

    Attributes
    ----------
    records : the tap's records of this training, one dict per logging step.
    tap : the attached ``NoiseTap`` during training, None outside it.

    Notes
    -----
    ``on_train_begin`` attaches to the callback's ``model`` and ``optimizer`` with
    n_micro = ``args.gradient_accumulation_steps``, m = ``args.per_device_train_batch_size``
    and W = ``args.world_size`` (1 only: see the module docstring). After an optimizer
    step whose record is new, ``on_step_end`` asks the Trainer to log; ``on_log`` adds
    every numeric column of the record to that step's ``logs`` and to its entry of
    ``state.log_history``. Callbacks run in the order of the Trainer's list, reporting
    integrations (``report_to``) before the user's: to send the columns to them too,
    put this callback first (``trainer.callback_handler.callbacks.insert(0,
    trainer.pop_callback(NoiseCallback))``). ``on_train_end`` detaches.
    """

    def __init__(self, *, loss_reduction: str | None = None, prefix: str = "pne/",
                 **logger_options: Any):  # fmt: skip
        if loss_reduction not in (None, "mean", "sum"):
            raise ValueError(
                f"gradnoise NoiseCallback: loss_reduction must be 'mean', 'sum' or None, "
                f"not {loss_reduction!r}"
            )
        self.loss_reduction = loss_reduction
        self.prefix = prefix
        self.logger_options = logger_options
        self.records: list[dict] = []
        self.tap: NoiseTap | None = None
        self._pending: list[dict] = []  # records not yet added to the logs

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise ValueError("gradnoise NoiseCallback: on_train_begin got no model or optimizer")
        if args.world_size > 1:
            raise ValueError(
                f"gradnoise NoiseCallback: world_size={args.world_size} is not supported: a "
                "TrainerCallback is handed the unwrapped model, and under DDP the tap needs the "
                "DistributedDataParallel wrapper (Trainer.model_wrapped) for the global pre-clip "
                "norm; attach gradnoise.tap to trainer.model_wrapped yourself"
            )
        if self.loss_reduction is None and _takes_loss_kwargs(model):
            warnings.warn(
                f"gradnoise NoiseCallback: {type(model).__name__} takes loss keyword "
                "arguments, so the Trainer weights each micro-batch by its share of "
                "num_items_in_batch; the P-NE estimate is exact only when every micro-batch "
                "counts the same number of label tokens (pass loss_reduction='mean' to "
                "declare that)",
                stacklevel=2,
            )
        self.records, self._pending = [], []
        self.tap = attach(
            model, _torch_optimizer(optimizer), n_micro=args.gradient_accumulation_steps,
            loss_reduction=self.loss_reduction or "mean",
            micro_batch_size=args.per_device_train_batch_size, world_size=args.world_size,
            scaler=getattr(optimizer, "scaler", None), on_record=self._on_record,
            **self.logger_options,
        )  # fmt: skip

    def on_step_end(self, args, state, control, **kwargs):
        if self._pending:
            control.should_log = True  # one log entry per record
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._pending or logs is None:
            return
        columns: dict[str, float] = {}
        for record in self._pending:  # several only if a log was skipped: the latest wins
            columns |= scalar_columns(record, self.prefix)
        self._pending = []
        logs.update(columns)
        if state.log_history:
            state.log_history[-1].update(columns)

    def on_train_end(self, args, state, control, **kwargs):
        if self.tap is not None:
            self.tap.detach()
            self.tap = None

    def _on_record(self, record: dict) -> None:
        self.records.append(record)
        self._pending.append(record)


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (or the one given)."""
    if isinstance(optimizer, AcceleratedOptimizer):
        return optimizer.optimizer
    return optimizer


def _takes_loss_kwargs(model: torch.nn.Module) -> bool:
    """Whether the Trainer passes ``num_items_in_batch`` to ``model`` (its own test)."""
    if hasattr(model, "accepts_loss_kwargs"):
        return bool(model.accepts_loss_kwargs)
    parameters = inspect.signature(model.forward).parameters.values()
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)
