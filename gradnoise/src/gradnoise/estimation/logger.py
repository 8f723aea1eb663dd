"""P-NE: optimizer-preconditioned gradient noise exposure, logged online (DESIGN §2, seed 003).

Per optimizer step t, with learning rate eta_t, the optimizer's diagonal
preconditioner P_t, the per-example gradient covariance C_t and the global batch
B = m * K * W (micro-batch size m, K accumulated micro-batches, W workers):

    P-NE_t  = eta_t Tr(P_t C_t P_t) / B
    P-NE*_t = P-NE_t / max(floor_t, Tr(P_t F_t P_t))   F_t a PSD curvature proxy

On logging steps (step 1, 2, 4, ... below N, then every N-th step, or whenever
the caller forces one) the logger estimates diag(C_t) from the K * W
micro-batch mean gradients the step computes anyway (no extra backward pass),
and the curvature proxies' diagonals; it holds those diagonals until the next
logging step, and every step integrates them under a current P (refreshed at
logging steps and every ``precond_interval`` steps) and that step's own eta_t
(``gradnoise.estimation.integrals``). A training loop calls it in four places::

    logger = NoiseLogger(model, optimizer, n_micro=K, micro_batch_size=m)
    for step in range(1, n_steps + 1):
        logger.begin_step(step)                       # or begin_step(step, log=True)
        for batch in micro_batches:                   # K of them
            (loss_fn(model, batch) / K).backward()
            logger.after_micro_backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        clip_coef = min(1.0, max_norm / (grad_norm + 1e-6))
        optimizer.step()
        record = logger.after_update(lr, grad_norm, clip_coef)   # dict on log steps
        optimizer.zero_grad(set_to_none=True)

Under DDP the K micro-backwards of a logging step must run under ``no_sync()``
(so the logger sees each worker's own micro-batches; ``logger.logging`` says
whether the current step logs) and the loop averages the gradients itself
afterwards. The record's keys are the P-NE columns of ``preregistration.tables.STEPS``;
its ``layers`` entry is a list of per-module rows, the ``preregistration.tables.LAYERS`` table.

Cost: on every r-th non-logging step (``precond_interval``) one pass over Adam's second
moments and one (q, D) x D product, nothing else on the others; the q = 2 + (diagonal
proxies) <= 4 held diagonals stay in memory (4 q D bytes, fp32, on the parameters' device).
On a logging step (K + 1) flat fp32 copies of the gradient (memory 4 (K + 1) D
bytes), one all-reduce of 2 D floats, one all-gather of K * ``sketch_width`` + k
floats (with diagonal proxies, one all-reduce of D floats each); with extra curvature
proxies one forward and backward pass per probe and proxy (raw Hessian: double backward).
With ``streaming=True`` the K micro-batch gradients are reduced as they arrive
(``gradnoise.estimation.micro_stream``): a logging step holds at most three extra flat fp32
vectors of the gradient's size (12 D bytes) for any K, plus the K x
``sketch_width`` sketch rows, the tail sample and chunk-sized temporaries (each
diagonal curvature proxy adds D floats, as in the default mode). The estimates
are those of the default mode up to float rounding, except the spectrum
columns, whose sketch is weighted by the preconditioner held when the step
began, P_{t-1} (the rows are sketched while the micro-batches run, before the
update sets P_t; zero before Adam's first update, so the step-1 spectrum is 0
and its shares NaN); the traces, per-layer sums, B_simple, integrals and the
tail index use P_t as in the default mode. Streaming needs ``.grad`` zero (or
None) when a logging step begins.

Units and ``loss_reduction``: ``gradnoise.estimation.default_estimate``; hook mode
(``gradnoise.tap.attach``): ``gradnoise.estimation.hooked_steps``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from gradnoise.estimation.curvature import PROXIES
from gradnoise.estimation.default_estimate import DefaultEstimate
from gradnoise.estimation.formulas import (
    layer_name,
    precond_flat,
    precond_sq_flat,
)
from gradnoise.estimation.hooked_steps import HookedSteps
from gradnoise.estimation.integrals import DIAGONAL_CURVATURES, INTEGRATED, ExposureIntegral
from gradnoise.estimation.micro_stream import MicroStream
from gradnoise.estimation.pooling import check_world
from gradnoise.estimation.record import (
    check_proxies,
    check_settings,
    step_record,
)
from gradnoise.estimation.resume_state import ResumeState
from gradnoise.estimation.streamed_estimate import StreamedEstimate

__all__ = ["CURVATURES", "INTEGRATED", "NoiseLogger"]

CURVATURES = DIAGONAL_CURVATURES  # selectable denominators of P-NE*: all positive semi-definite
PROXY_COLUMNS = {"ggn": "trace_pgp_ggn", "true_fisher": "trace_pfp_true_fisher"}
LOSS_REDUCTIONS = ("mean", "sum")  # micro-batch loss: mean over its examples / K, or their sum


class NoiseLogger(DefaultEstimate, StreamedEstimate, HookedSteps, ResumeState):
    """Online estimator of potential and effective P-NE and P-NE* for one training run.

    Parameters
    ----------
    model : the model, or a DDP wrapper of it (its ``.module`` is used).
    optimizer : ``torch.optim.Adam``, ``AdamW`` or ``SGD`` over the model's parameters.
    n_micro : K, micro-batches accumulated per optimizer step on each worker.
    micro_batch_size : m, sequences per micro-batch.
    world_size : W, data-parallel workers (all call the logger identically).
    log_interval : N; estimates at steps 1, 2, 4, ... below N and every N-th step.
    curvature : the registered proxy of P-NE*: ``fisher`` (empirical Fisher, free),
        ``ggn`` or ``true_fisher`` (both need ``logits_closure``).
    proxies : further proxies estimated at logging steps from ``logits_closure``
        for the sensitivity analysis, a subset of ``ggn``, ``true_fisher``, ``hessian``
        (the raw Hessian trace is reported, never a denominator).
    eps_rel : floor of a curvature trace relative to the empirical Fisher trace.
    curvature_probes : probes per proxy estimate.
    b_simple_window : logged estimates pooled in the row's ``b_simple_window``.
    precond_interval : r; the integral applies a fresh P_t at logging steps and at
        every r-th step, and holds it in between (1: every step, O(D) per step).
    sketch_rank : r, eigenvalues of P C P whose share of the trace is reported.
    process_group : the group to reduce over (default: the world).
    sketch_width : columns of the randomized sketch (Gram entries to ~sqrt(2/width)).
    hill_fraction : share of the pooled sample used as the Hill estimator's k.
    hill_max_samples : coordinates x micro-batches fed to the Hill estimator at most.
    seed : seed of the logger's own random numbers (sketch, probes); the global
        RNG is never touched, so logging does not change training.
    streaming : reduce the micro-batch gradients as they arrive (three gradient-sized
        buffers for any K, ``gradnoise.estimation.micro_stream``) instead of keeping K + 1 copies;
        the spectrum is then that of P_{t-1} C P_{t-1} / B (see the module docstring).
    loss_reduction : ``"mean"`` (each micro-batch loss the mean over its examples divided
        by K) or ``"sum"`` (the sum over its examples): the units of ``trace_cov`` and
        ``grad_sq`` only; see the module docstring.
    """

    proxy_columns = PROXY_COLUMNS  # read by the streaming estimate too

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        n_micro: int,
        micro_batch_size: int,
        world_size: int = 1,
        log_interval: int = 100,
        curvature: str = "fisher",
        proxies: tuple[str, ...] = (),
        eps_rel: float = 1e-6,
        curvature_probes: int = 1,
        b_simple_window: int = 16,
        precond_interval: int = 4,
        sketch_rank: int = 8,
        process_group=None,
        sketch_width: int = 4096,
        hill_fraction: float = 0.01,
        hill_max_samples: int = 2**18,
        seed: int = 0,
        streaming: bool = False,
        loss_reduction: str = "mean",
    ):
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"NoiseLogger(loss_reduction={loss_reduction!r}): expected one of {LOSS_REDUCTIONS}"
            )
        check_settings(optimizer, n_micro, micro_batch_size, world_size, log_interval, curvature)
        check_proxies(proxies, curvature_probes, b_simple_window, eps_rel, precond_interval)
        check_world(world_size, process_group)
        module = getattr(model, "module", model)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.param_layers = [layer_name(n) for n, _ in named]
        self.layer_names = list(dict.fromkeys(self.param_layers))
        self.sizes = [p.numel() for p in self.params]
        self._layer_index = torch.tensor([self.layer_names.index(n) for n in self.param_layers])
        self._layer_sizes = dict.fromkeys(self.layer_names, 0)
        for name, size in zip(self.param_layers, self.sizes, strict=True):
            self._layer_sizes[name] += size
        self.optimizer = optimizer
        self.n_micro, self.micro_batch_size, self.world_size = n_micro, micro_batch_size, world_size
        self.global_batch = micro_batch_size * n_micro * world_size
        self.log_interval, self.curvature, self.eps_rel = log_interval, curvature, eps_rel
        extra = () if curvature == "fisher" else (curvature,)
        self.proxies = tuple(p for p in PROXIES if p in (*proxies, *extra))
        self.curvature_probes, self.precond_interval = curvature_probes, precond_interval
        self.sketch_rank, self.sketch_width, self.seed = sketch_rank, sketch_width, seed
        self.hill_fraction, self.hill_max_samples = hill_fraction, hill_max_samples
        self.process_group = process_group
        self.integral = ExposureIntegral(curvature, self.proxies, self.global_batch, eps_rel)
        self.b_window: deque[tuple[float, float]] = deque(maxlen=b_simple_window)
        self.window_steps = self.window_clipped = 0
        self.step: int | None = None
        self.logging = False  # whether the current step estimates
        self._seen = 0
        self._cumulative: torch.Tensor | None = None  # (K + 1, D) accumulated .grad snapshots
        self._precond_sq: torch.Tensor | None = None  # (D,) buffer of P_t^2 for the integral
        self.last_precond: torch.Tensor | None = None  # flat P of the latest logging step
        self.last_spectrum: torch.Tensor | None = None  # eigenvalues of P C P / B, descending
        self.step_traces: dict[str, float] = {}  # held diagonals under the last step's own P
        self._injected: torch.Tensor | None = None  # diag of this step's injected covariance
        self.streaming = streaming
        self._stream: MicroStream | None = None  # streamed micro-batch gradients (streaming)
        self.loss_reduction = loss_reduction
        self._hooked = False  # the current step's gradients come from hooks (gradnoise.tap)
        self._rows: torch.Tensor | None = None  # (K, D) micro-batch gradients written by hooks
        self.pooled_mean_check: Callable[[torch.Tensor], None] | None = None
        if streaming:  # P^2 for the integral, allocated once: no logging step allocates it
            self._precond_sq = torch.empty(sum(self.sizes), device=self.params[0].device)

    @property
    def sums(self) -> dict[str, float]:
        """The integrated exposures up to the last completed step (``INTEGRATED`` keys)."""
        return self.integral.sums

    @property
    def held_cov_diag(self) -> torch.Tensor | None:
        """diag(C) (flat, D) estimated at the latest logging step; None before the first."""
        held = self.integral.held
        return None if held is None else held[0]

    @property
    def latest_precond_sq(self) -> torch.Tensor | None:
        """P^2 (flat, D) the integral applied last; None before the first step."""
        return self.integral.latest_precond_sq

    @property
    def needs_logits(self) -> bool:
        """Whether logging steps need ``after_update(..., logits_closure=...)``."""
        return bool(self.proxies)

    # -- the four calls of a training loop ---------------------------------

    def is_log_step(self, step: int) -> bool:
        """The default rule: steps 1, 2, 4, 8, ... below N (dense early), and every N-th step.

        Early, Adam's P and the gradient statistics change fastest; a power-of-two
        ladder costs log2(N) extra estimates per run.
        """
        if step % self.log_interval == 0:
            return True
        return step < self.log_interval and step & (step - 1) == 0

    def begin_step(self, step: int, log: bool | None = None) -> None:
        """Start optimizer step ``step``; on a logging step, snapshot the .grad it starts from.

        In streaming mode a logging step opens the micro-batch stream instead, with
        the sketch weight P_{t-1}, the preconditioner held now.

        ``log`` forces (True) or skips (False) the estimate of this step; None
        applies ``is_log_step``. Under DDP the caller's no_sync decision must match.
        """
        self.step, self._seen = step, 0
        self.logging = self.is_log_step(step) if log is None else bool(log)
        self._stream, self._hooked, self._rows = None, False, None  # nothing of an abandoned step
        if self.logging and self.streaming:
            self._stream = self._open_stream(self.n_micro, check=True)
        elif self.logging:
            n_coords = sum(self.sizes)
            device = self.params[0].device
            if self._cumulative is None:
                self._cumulative = torch.empty(self.n_micro + 1, n_coords, device=device)
            self._copy_grads(self._cumulative[0])

    def _open_stream(self, scale: float, check: bool) -> MicroStream:
        return MicroStream(
            self.params, self.n_micro, self.sketch_width,
            self.hill_max_samples // self.world_size,
            lambda out: precond_flat(self.optimizer, self.params, out),
            lambda: self._generator(0), scale=scale, check=check,
        )  # fmt: skip

    def after_micro_backward(self) -> None:
        """After each micro-batch backward: on logging steps, snapshot the accumulated gradient."""
        if not self.logging:
            return
        if self._seen >= self.n_micro:
            raise RuntimeError(
                f"NoiseLogger: after_micro_backward called more than n_micro={self.n_micro} "
                f"times in step {self.step}"
            )
        self._seen += 1
        if self.streaming:
            self._stream.add()
            return
        self._copy_grads(self._cumulative[self._seen])

    def after_update(
        self,
        lr: float,
        grad_norm: float,
        clip_coef: float,
        logits_closure: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict | None:
        """Integrate this step's exposure; on a logging step estimate anew and return the record.

        Call after ``optimizer.step()`` and before ``zero_grad()``. ``grad_norm`` is
        the unclipped norm (the caller records it; the estimate uses the
        snapshots, so clipping ``.grad`` in place does not leak into the potential
        exposure), ``clip_coef`` = min(1, max_norm / grad_norm) the update used.
        ``logits_closure`` returns ``(logits, targets)`` of a batch, logits with
        their graph from the unwrapped module (DDP cannot double-backward),
        targets -1 where ignored; the loss is their mean cross-entropy. Required
        on logging steps when ``needs_logits``.
        """
        if self.step is None:
            raise RuntimeError("NoiseLogger: after_update called before begin_step")
        self.window_steps += 1
        self.window_clipped += int(clip_coef < 1.0)
        estimate = self._estimate(logits_closure) if self.logging else None
        if self.integral.held is None:
            raise RuntimeError(
                f"NoiseLogger: step {self.step} has no held estimate; start at step 1 or "
                "restore the logger with load_state_dict when resuming"
            )
        precond_sq = self._step_precond_sq(estimate)
        self.step_traces = self.integral.add_step(precond_sq, lr, clip_coef, self._injected)
        self._injected = None
        if estimate is None:
            return None
        record = self._record(estimate, lr, clip_coef)
        self.window_steps = self.window_clipped = 0
        self.logging, self._cumulative, self._stream = False, None, None
        self._hooked, self._rows = False, None
        return record

    def _step_precond_sq(self, estimate: dict | None):
        """P_t^2 for this step's integral; None between refreshes (the latest traces again)."""
        if estimate is not None and self.streaming:
            return torch.mul(self.last_precond, self.last_precond, out=self._precond_sq)
        if estimate is not None:
            return self.last_precond**2
        if self.step % self.precond_interval == 0:
            if self._precond_sq is None:
                self._precond_sq = torch.empty(sum(self.sizes), device=self.params[0].device)
            return precond_sq_flat(self.optimizer, self.params, out=self._precond_sq)
        return None

    def divergence_record(self) -> dict:
        """Integrated exposures so far, for the trace row of a step that diverged.

        Such a step applies no update and makes no estimate; its per-step columns
        are left to the caller (NaN).
        """
        return dict(self.sums) | {"int_pne_star_injected": self.injected_sum}

    # -- injected noise (gradnoise.injection.gradient_noise, issue 10) ------------------

    def add_injected(self, cov_diag: torch.Tensor) -> None:
        """Declare diag(Sigma_t) (flat, D) of noise added to this step's mean gradient.

        Call between the last micro-batch backward and ``after_update``. The noise
        is added exactly: Tr(P Sigma_t P) joins the estimated Tr(P C P) / B in the
        step's ``trace_pcp`` (logging steps) and in every integral; the empirical
        Fisher (the curvature of the data) is not changed.
        """
        self._injected = cov_diag

    @property
    def injected_sum(self) -> float:
        """Integrated P-NE* of the injected noise so far."""
        return self.integral.injected_sum

    def injected_rate(self, cov_diag: torch.Tensor, lr: float) -> float:
        """P-NE* one step of injected diag(Sigma) adds under the latest P (NaN before step 1)."""
        return self.integral.injected_rate(cov_diag, lr)

    # -- internals ---------------------------------------------------------

    def _copy_grads(self, row: torch.Tensor) -> None:
        grads = [p.grad for p in self.params]
        if all(g is not None and g.dtype == row.dtype for g in grads):
            torch.cat([g.reshape(-1) for g in grads], out=row)  # one call: the common case
            return
        for piece, g in zip(row.split(self.sizes), grads, strict=True):
            if g is None:
                piece.zero_()
            else:
                piece.copy_(g.reshape(-1))

    def _micro_means(self) -> torch.Tensor:
        """(K, D) micro-batch mean gradients: n_micro times each micro-batch's .grad increment."""
        if self._seen != self.n_micro:
            raise RuntimeError(
                f"NoiseLogger: step {self.step} saw {self._seen} micro-batch backward passes, "
                f"expected n_micro={self.n_micro}"
            )
        if self._hooked:
            return self._rows
        snaps = self._cumulative
        for j in range(self.n_micro, 0, -1):
            snaps[j].sub_(snaps[j - 1]).mul_(self.n_micro)
        return snaps[1:]

    def _generator(self, purpose: int) -> torch.Generator:
        generator = torch.Generator(device=self.params[0].device)
        return generator.manual_seed((self.seed * 1_000_003 + self.step) * 4 + purpose)

    def _record(self, estimate: dict, lr: float, clip_coef: float) -> dict:
        """The row of the steps table (P-NE columns) with the per-layer rows under ``layers``."""
        column = "trace_pfp_fisher" if self.curvature == "fisher" else PROXY_COLUMNS[self.curvature]
        return step_record(
            estimate, estimate[column], self.integral.sums, self.b_window, lr, clip_coef,
            self.eps_rel, self.window_clipped / self.window_steps, self._layer_meta(),
        ) | {"int_pne_star_injected": self.injected_sum}  # fmt: skip

    def _layer_meta(self) -> list[tuple[str, int]]:
        return [(name, self._layer_sizes[name]) for name in self.layer_names]
