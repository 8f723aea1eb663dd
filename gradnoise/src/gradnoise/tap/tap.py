"""NoiseTap: the hooks that feed a ``NoiseLogger`` from an unchanged training loop.

Per optimizer step t the hooks see, in order:

1. the first tensor hook of a backward pass opens micro-batch j (and, for j = 1,
   step t: the logger decides whether t logs); it queues a callback for the end
   of that backward pass;
2. each parameter's tensor hook receives d_j, its gradient increment of this
   backward pass, before it is added to ``.grad`` and before DDP's all-reduce; on
   logging steps it adds K d_j / S into row j of the logger's (K, D) micro-batch
   gradients (streaming: into one running sum of g_1 + .. + g_j), S the
   GradScaler's scale (1 without one): the gradients in the units of the one
   the optimizer is given, whatever the loss convention (it sets the units of
   ``trace_cov`` and ``grad_sq`` only, ``NoiseLogger``);
3. the end-of-backward callback hands a streamed micro-batch to the logger and,
   after the K-th pass on a single process, reads |g_pre| from ``.grad``; under
   DDP the communication hook reads it from the averaged buckets instead;
4. the optimizer's step post-hook reads eta_t from the parameter groups, |g_post|
   from ``.grad``, c_t = |g_post| / |g_pre|, and calls ``logger.after_update``,
   which reads P_t from the optimizer state; on logging steps the accumulated
   gradient is first checked against the micro-batch gradients
   (``gradnoise.tap.consistency``).

A step the GradScaler skips (inf or NaN: ``optimizer.step`` never runs) shows as
a new backward pass after K passes without a step; it is counted in
``skipped_steps`` and the same step number starts again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch.autograd import Variable

from gradnoise.estimation.logger import NoiseLogger
from gradnoise.estimation.record import check_one_lr
from gradnoise.tap.consistency import check_accumulated
from gradnoise.tap.loop_state import batch_size, grads_still_scaled
from gradnoise.tap.norms import clip_coefficient, install_comm_hook, tensor_norms


class NoiseTap:
    """The hooks of one training run and the records they produce (built by ``attach``).

    Attributes
    ----------
    logger : the ``NoiseLogger`` (None until the first forward pass when the micro-batch
        size is read from it).
    records : the logging steps' record dicts, as ``NoiseLogger.after_update`` returns them.
    step : optimizer steps taken.
    skipped_steps : steps a GradScaler skipped for inf or NaN gradients (not logged).
    last_grad_norm, last_clip_coef : |g_pre| and c_t of the latest step.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        n_micro: int,
        loss_reduction: str,
        micro_batch_size: int | None,
        world_size: int,
        process_group,
        scaler,
        on_record: Callable[[dict], None] | None,
        logits_closure,
        logger_options: dict,
    ):
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        module = getattr(model, "module", model)
        self.params = [p for _, p in module.named_parameters() if p.requires_grad]
        self.sizes = [p.numel() for p in self.params]
        self.device = self.params[0].device
        self.n_micro, self.loss_reduction = n_micro, loss_reduction
        self.micro_batch_size, self.world_size = micro_batch_size, world_size
        self.process_group, self.on_record, self.logits_closure = (
            process_group,
            on_record,
            logits_closure,
        )
        self._logger_options = logger_options
        self.logger: NoiseLogger | None = None
        self.records: list[dict] = []
        self.step = self.skipped_steps = 0
        self.last_grad_norm = self.last_clip_coef = math.nan
        self._backwards = 0  # backward passes of the open step
        self._in_backward = self._busy = self._logging = False
        self._active = True  # False after detach: the DDP hook (not removable) passes through
        self._factor = 1.0  # a / S of the open logging step
        self._targets: list[list[torch.Tensor]] | list[torch.Tensor] = []
        self._running: torch.Tensor | None = None  # streaming: flat g_1 + .. + g_j
        self._pre_norms: list[torch.Tensor | None] = [None] * len(self.params)
        self._scaled = scaler is not None and scaler.is_enabled()
        self._pre_scaled = self._scaled  # |g_pre| read before the GradScaler unscaled
        self._injected: torch.Tensor | None = None
        self._batch_seen: int | None = None
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
        if not self._ddp and world_size > 1:
            raise ValueError(
                f"gradnoise.tap.attach: world_size={world_size} needs the model passed as its "
                "DistributedDataParallel wrapper: the global gradient norm before clipping is "
                "read from DDP's all-reduce (a communication hook)"
            )
        if self._ddp:
            install_comm_hook(model, process_group, self._on_bucket)
        if micro_batch_size is not None:
            self._build_logger()
        # Tensor hooks on every parameter only for steps that log; on the others on the
        # sentinels alone (``_hook_parameters``): they count the backward passes.
        self._param_handles: dict[int, object] = {}
        self._sentinels: list[int] = []  # first and last parameter to get a gradient
        self._arrived: list[int] = []  # the parameters of this logging step's first pass, in order
        self._hook_parameters(range(len(self.params)))
        self._handles = [optimizer.register_step_post_hook(self._after_step)]
        if micro_batch_size is None:
            self._handles.append(
                model.register_forward_pre_hook(self._on_forward, with_kwargs=True)
            )

    # -- public ------------------------------------------------------------

    @property
    def sums(self) -> dict[str, float]:
        """The integrated exposures up to the last step (empty before the logger exists)."""
        return {} if self.logger is None else self.logger.sums

    def add_injected(self, cov_diag: torch.Tensor) -> None:
        """Declare diag(Sigma) (flat, D) of noise just added to ``.grad`` (as the logger's).

        Call after the noise is in ``.grad`` (with a GradScaler, after
        ``scaler.unscale_(optimizer)``) and before clipping: |g_pre| is read again
        here, with the noise, as the clipping will see it.
        """
        if self.logger is None or self._backwards != self.n_micro:
            raise RuntimeError(
                "gradnoise.tap: add_injected belongs after the step's last micro-batch backward "
                f"and before optimizer.step(); {self._backwards} of n_micro={self.n_micro} "
                "backward passes have run"
            )
        self.logger.add_injected(cov_diag)
        self._injected = cov_diag
        self._pre_norms = list(tensor_norms([p.grad for p in self.params], self.device))
        self._pre_scaled = self._scaled and grads_still_scaled(self.scaler, self.optimizer)

    def detach(self) -> None:
        """Remove every hook; a DDP communication hook cannot be removed and only averages then."""
        for handle in [*self._handles, *self._param_handles.values()]:
            handle.remove()
        self._handles, self._param_handles, self._active = [], {}, False

    def __enter__(self) -> NoiseTap:
        return self

    def __exit__(self, *exc) -> bool:
        self.detach()
        return False

    # -- the hooks -----------------------------------------------------------

    def _on_forward(self, module, args, kwargs) -> None:
        if self._busy or not torch.is_grad_enabled():
            return
        self._batch_seen = batch_size(args, kwargs)
        if self.logger is None:
            self.micro_batch_size = self._batch_seen
            self._build_logger()

    def _on_grad(self, i: int, grad: torch.Tensor) -> None:
        if self._busy:
            return
        if not self._in_backward:
            self._begin_backward()
        if self._logging:
            self._arrive(i)
            target = (
                self._targets[i] if self.logger.streaming else self._targets[self._backwards - 1][i]
            )
            target.add_(grad, alpha=self._factor)

    def _begin_backward(self) -> None:
        if self._backwards == self.n_micro:  # K passes and no optimizer step since
            if not self._scaled:
                raise RuntimeError(
                    f"gradnoise.tap: backward pass {self.n_micro + 1} in step {self.step + 1} "
                    f"before optimizer.step(), n_micro={self.n_micro} declared (a wrong n_micro, "
                    "or an extra backward pass through the model's parameters)"
                )
            self.skipped_steps += 1  # the GradScaler skipped the step: it starts again
            self._backwards = 0
        if self._backwards == 0:
            self._begin_step()
        self._backwards += 1
        self._in_backward = True
        Variable._execution_engine.queue_callback(self._end_backward)

    def _begin_step(self) -> None:
        if self.logger is None:
            raise RuntimeError(
                "gradnoise.tap: a backward pass before any forward pass through the model; "
                "pass attach(..., micro_batch_size=m) when the forward does not go through it"
            )
        step = self.step + 1
        self._logging = self.logger.is_log_step(step)
        self.logger.begin_hooked_step(step, self._logging)
        self._pre_norms = [None] * len(self.params)
        self._pre_scaled, self._injected = self._scaled, None
        if not self._logging:
            return
        if self._batch_seen is not None and self._batch_seen != self.micro_batch_size:
            raise RuntimeError(
                f"gradnoise.tap: step {step} has a micro-batch of {self._batch_seen} examples, the "
                f"first had {self.micro_batch_size}; the estimate needs micro-batches of one size"
            )
        scale = float(self.scaler.get_scale()) if self._scaled else 1.0
        self._factor = self.n_micro / scale
        if self.logger.streaming:
            if self._running is None:
                self._running = torch.zeros(sum(self.sizes), device=self.device)
            self._targets = _views(self._running.zero_(), self.params)
        else:
            self._targets = [_views(row, self.params) for row in self.logger.micro_rows]

    def _end_backward(self) -> None:
        self._in_backward = False
        if self._logging:
            self.logger.after_hooked_micro(self._targets if self.logger.streaming else None)
        if self._backwards == self.n_micro and not self._ddp:
            self._pre_norms = list(tensor_norms([p.grad for p in self.params], self.device))

    def _on_bucket(self, bucket) -> None:
        if not self._active or self._busy or self._backwards != self.n_micro:
            return
        norms = tensor_norms(bucket.gradients(), self.device)
        for p, norm in zip(bucket.parameters(), norms, strict=True):
            if id(p) in self._index:
                self._pre_norms[self._index[id(p)]] = norm

    def _step_inputs(self, optimizer) -> tuple[int, float, float, float]:
        """(t, eta_t, |g_pre|, c_t) of the step just taken; checks the backward count."""
        step = self.step + 1
        if self._backwards != self.n_micro:
            raise RuntimeError(
                f"gradnoise.tap: optimizer step {step} after {self._backwards} backward passes, "
                f"n_micro={self.n_micro} declared"
            )
        check_one_lr(optimizer)
        lr = float(optimizer.param_groups[0]["lr"])
        pre_norm, post_norm = self._norms()
        return step, lr, pre_norm, clip_coefficient(pre_norm, post_norm, step)

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self._busy:
            return
        step, lr, pre_norm, clip_coef = self._step_inputs(optimizer)
        logger = self.logger
        if self._logging:
            logger.pooled_mean_check = functools.partial(
                _check, self.params, 1.0, clip_coef, self._injected, step
            )
        self._busy = (
            True  # the logger's own backward passes (curvature probes) are not micro-batches
        )
        try:
            closure = self.logits_closure if self._logging else None
            record = logger.after_update(lr, pre_norm, clip_coef, logits_closure=closure)
        finally:
            self._busy, logger.pooled_mean_check = False, None
        self._next_step_hooks(step)
        self.step, self._backwards, self._logging = step, 0, False
        self.last_grad_norm, self.last_clip_coef = pre_norm, clip_coef
        if record is not None:
            self.records.append(record)
            if self.on_record is not None:
                self.on_record(record)

    # -- internals -----------------------------------------------------------

    def _arrive(self, i: int) -> None:
        """Note parameter i's gradient in the first backward pass of a logging step."""
        if self._backwards == 1:
            self._arrived.append(i)

    def _logs(self, step: int) -> bool:
        """Whether step ``step`` reads the micro-batch gradients (needs every tensor hook)."""
        return self.logger is None or self.logger.is_log_step(step)

    def _next_step_hooks(self, step: int) -> None:
        """After step ``step``: tensor hooks on every parameter when step + 1 logs, else on
        the sentinels only.

        A step that does not log needs only the count of its backward passes and the
        end of the last one (|g_pre| is read off ``.grad``, or DDP's buckets): one hook
        that fires in each pass does that. The sentinels are the first and the last
        parameter whose gradient arrived in the first pass of the latest logging step;
        a pass that reaches neither is not counted, and the next optimizer step then
        fails with the count, never a wrong estimate. Idle hooks on every parameter
        cost a Python call per parameter and pass (3-5 % of a step of the CPU model).
        """
        if self._arrived:
            self._sentinels = sorted({self._arrived[0], self._arrived[-1]})
            self._arrived = []
        every = self._logs(step + 1) or not self._sentinels
        self._hook_parameters(range(len(self.params)) if every else self._sentinels)

    def _hook_parameters(self, indices) -> None:
        """Tensor hooks on exactly the parameters ``indices``."""
        wanted = set(indices)
        for i in [i for i in self._param_handles if i not in wanted]:
            self._param_handles.pop(i).remove()
        for i in sorted(wanted - set(self._param_handles)):
            hook = functools.partial(self._on_grad, i)
            self._param_handles[i] = self.params[i].register_hook(hook)

    def _norms(self) -> tuple[float, float]:
        """(|g_pre| unscaled, |g_post|) of this step, read in one device synchronisation."""
        missing = [i for i, norm in enumerate(self._pre_norms) if norm is None]
        if missing and self._ddp:
            raise RuntimeError(
                f"gradnoise.tap: DDP's all-reduce did not run in the last backward pass of step "
                f"{self.step + 1} for {len(missing)} parameters; the tap needs DDP's own "
                "gradient averaging (no no_sync() on the last micro-batch, no manual all-reduce)"
            )
        pre = [torch.zeros((), device=self.device) if n is None else n for n in self._pre_norms]
        post = tensor_norms([p.grad for p in self.params], self.device)
        values = [torch.linalg.vector_norm(torch.stack(pre)), torch.linalg.vector_norm(post)]
        pre_norm, post_norm = torch.stack(values).tolist()
        # the scale of the backward passes: a GradScaler changes it in update(), after the step
        scale = float(self.scaler.get_scale()) if self._pre_scaled else 1.0
        return pre_norm / scale, post_norm

    logger_class = NoiseLogger  # the estimate the hooks feed (gradnoise.tap.welford_tap)

    def _build_logger(self) -> None:
        self.logger = self.logger_class(
            self.model, self.optimizer, n_micro=self.n_micro,
            micro_batch_size=self.micro_batch_size, world_size=self.world_size,
            process_group=self.process_group, loss_reduction=self.loss_reduction,
            **self._logger_options,
        )  # fmt: skip
        if [id(p) for p in self.logger.params] != [id(p) for p in self.params]:
            raise RuntimeError("gradnoise.tap: the logger's parameters differ from the hooked ones")


def _check(params, conversion, clip_coef, injected, step, pooled_mean) -> None:
    check_accumulated(params, pooled_mean, conversion, clip_coef, injected, step)


def _views(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-parameter views of one flat (D,) row, in the logger's order."""
    return [
        piece.view_as(p)
        for piece, p in zip(flat.split([p.numel() for p in params]), params, strict=True)
    ]
