"""P-NE: optimizer-preconditioned gradient noise exposure, logged online (DESIGN §2, seed 003).

Per optimizer step t, with learning rate eta_t, the optimizer's diagonal
preconditioner P_t, the per-example gradient covariance C_t and the global batch
B = m * K * W (micro-batch size m, K accumulated micro-batches, W workers):

    P-NE_t  = eta_t Tr(P_t C_t P_t) / B
    P-NE*_t = P-NE_t / max(eps, Tr(P_t F_t P_t))      F_t a curvature proxy

Every ``log_interval`` steps the logger estimates diag(C_t) from the K * W
micro-batch mean gradients the step computes anyway (no extra backward pass),
and holds that estimate until the next logging step; every step it adds
eta_t * (held trace) to the integrated exposure. A training loop calls it in
four places::

    logger = NoiseLogger(model, optimizer, n_micro=K, micro_batch_size=m)
    for step in range(1, n_steps + 1):
        logger.begin_step(step)
        for batch in micro_batches:                   # K of them
            (loss_fn(model, batch) / K).backward()
            logger.after_micro_backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        clip_coef = min(1.0, max_norm / (grad_norm + 1e-6))
        optimizer.step()
        record = logger.after_update(lr, grad_norm, clip_coef)   # dict on log steps
        optimizer.zero_grad(set_to_none=True)

Under DDP the K micro-backwards of a logging step must run under ``no_sync()``
(so the logger sees each worker's own micro-batches) and the loop averages the
gradients itself afterwards. The record's keys are the P-NE columns of
``preregistration.tables.STEPS``; its ``layers`` entry is a list of per-module rows, the
``preregistration.tables.LAYERS`` table.

Cost: on non-logging steps nothing but a few float additions. On a logging step
(K + 1) flat fp32 copies of the gradient (memory 4 (K + 1) D bytes), one
all-reduce of 2 D floats, one all-gather of K * ``sketch_width`` + k floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from training.pne_curvature import fisher_diag, hutchinson_trace_php
from training.pne_formulas import (
    b_simple,
    covariance_diag,
    effective,
    grad_sq_diag,
    layer_name,
    pne,
    pne_eta2,
    pne_star,
    precond_diag_product,
    preconditioner,
)
from training.pne_pooling import check_world, gather_pair, mean_over_workers, pooled_moments
from training.pne_spectrum import (
    count_sketch,
    gram_spectrum,
    hill_k,
    hill_tail_index,
    largest_abs,
    spectrum_summary,
    tail_sample,
)

CURVATURES = ("fisher", "hutchinson")
# Per-coordinate quantities summed per layer, in the order ``_estimate`` stacks them.
LAYER_TRACES = ("trace_pcp", "trace_pfp_fisher", "trace_cov", "grad_sq")
INTEGRATED = (
    "int_pne",
    "int_pne_star",
    "int_pne_eff",
    "int_pne_star_eff",
    "int_pne_eta2",
    "int_pne_star_fisher",
    "int_pne_star_hutchinson",
)


class NoiseLogger:
    """Online estimator of potential and effective P-NE and P-NE* for one training run.

    Parameters
    ----------
    model : the model, or a DDP wrapper of it (its ``.module`` is used).
    optimizer : ``torch.optim.Adam``, ``AdamW`` or ``SGD`` over the model's parameters.
    n_micro : K, micro-batches accumulated per optimizer step on each worker.
    micro_batch_size : m, sequences per micro-batch.
    world_size : W, data-parallel workers (all call the logger identically).
    log_interval : N; estimates at step 1 and every N-th step.
    curvature : ``fisher`` (free) or ``hutchinson`` (needs ``loss_closure``) for P-NE*.
    eps : floor of the curvature trace in P-NE*.
    sketch_rank : r, eigenvalues of P C P whose share of the trace is reported.
    process_group : the group to reduce over (default: the world).
    sketch_width : columns of the randomized sketch (Gram entries to ~sqrt(2/width)).
    hill_fraction : share of the pooled sample used as the Hill estimator's k.
    hill_max_samples : coordinates x micro-batches fed to the Hill estimator at most.
    hutchinson_probes : Rademacher probes per Hutchinson estimate.
    seed : seed of the logger's own random numbers (sketch, probes); the global
        RNG is never touched, so logging does not change training.
    """

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
        eps: float = 1e-12,
        sketch_rank: int = 8,
        process_group=None,
        sketch_width: int = 4096,
        hill_fraction: float = 0.01,
        hill_max_samples: int = 2**18,
        hutchinson_probes: int = 2,
        seed: int = 0,
    ):
        _check_settings(optimizer, n_micro, micro_batch_size, world_size, log_interval, curvature)
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
        self.log_interval, self.curvature, self.eps = log_interval, curvature, eps
        self.sketch_rank, self.sketch_width, self.seed = sketch_rank, sketch_width, seed
        self.hill_fraction, self.hill_max_samples = hill_fraction, hill_max_samples
        self.hutchinson_probes = hutchinson_probes
        self.process_group = process_group
        self.sums = dict.fromkeys(INTEGRATED, 0.0)
        self.held: dict[str, float] | None = None
        self.window_steps = self.window_clipped = 0
        self.step: int | None = None
        self._logging = False
        self._seen = 0
        self._cumulative: torch.Tensor | None = None  # (K + 1, D) accumulated .grad snapshots
        self.last_precond: torch.Tensor | None = None  # flat P of the latest logging step
        self.last_spectrum: torch.Tensor | None = None  # eigenvalues of P C P / B, descending

    # -- the four calls of a training loop ---------------------------------

    def is_log_step(self, step: int) -> bool:
        """Whether ``step`` (1-based optimizer step) estimates: step 1 and every N-th step."""
        return step == 1 or step % self.log_interval == 0

    def begin_step(self, step: int, log: bool | None = None) -> None:
        """Start optimizer step ``step``; on a logging step, snapshot the .grad it starts from.

        ``log`` forces (True) or skips (False) an estimate at this step; None follows
        ``is_log_step``. Step 1 always estimates: every later step integrates its estimate.
        """
        logging = self.is_log_step(step) if log is None else bool(log) or step == 1
        self.step, self._logging, self._seen = step, logging, 0
        if self._logging:
            n_coords = sum(self.sizes)
            device = self.params[0].device
            if self._cumulative is None:
                self._cumulative = torch.empty(self.n_micro + 1, n_coords, device=device)
            self._copy_grads(self._cumulative[0])

    def after_micro_backward(self) -> None:
        """After each micro-batch backward: on logging steps, snapshot the accumulated gradient."""
        if not self._logging:
            return
        if self._seen >= self.n_micro:
            raise RuntimeError(
                f"NoiseLogger: after_micro_backward called more than n_micro={self.n_micro} "
                f"times in step {self.step}"
            )
        self._seen += 1
        self._copy_grads(self._cumulative[self._seen])

    def after_update(
        self,
        lr: float,
        grad_norm: float,
        clip_coef: float,
        loss_closure: Callable[[], torch.Tensor] | None = None,
    ) -> dict | None:
        """Integrate this step's exposure; on a logging step estimate anew and return the record.

        Call after ``optimizer.step()`` and before ``zero_grad()``. ``grad_norm`` is
        the unclipped norm (the caller records it; the estimate uses the
        snapshots, so clipping ``.grad`` in place does not leak into the potential
        exposure), ``clip_coef`` = min(1, max_norm / grad_norm) the update used.
        ``loss_closure`` returns a scalar loss, with its graph, from the unwrapped
        module (DDP cannot double-backward); required with curvature ``hutchinson``,
        optional with ``fisher``, where it adds the Hutchinson proxy as a second column.
        """
        if self.step is None:
            raise RuntimeError("NoiseLogger: after_update called before begin_step")
        self.window_steps += 1
        self.window_clipped += int(clip_coef < 1.0)
        estimate = self._estimate(loss_closure) if self._logging else None
        if self.held is None:
            raise RuntimeError(
                f"NoiseLogger: step {self.step} has no held estimate; start at step 1 or "
                "restore the logger with load_state_dict when resuming"
            )
        self._integrate(lr, clip_coef)
        if estimate is None:
            return None
        record = self._record(estimate, lr, clip_coef)
        self.window_steps = self.window_clipped = 0
        self._logging, self._cumulative = False, None
        return record

    def divergence_record(self) -> dict:
        """Integrated exposures so far, for the trace row of a step that diverged.

        Such a step applies no update and makes no estimate; its per-step columns
        are left to the caller (NaN).
        """
        return dict(self.sums)

    # -- resume ------------------------------------------------------------

    def state_dict(self) -> dict:
        """Integrated sums, the held estimate and the clip-rate window, for a checkpoint."""
        return {
            "sums": dict(self.sums),
            "held": None if self.held is None else dict(self.held),
            "window_steps": self.window_steps,
            "window_clipped": self.window_clipped,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned, so a resumed run integrates as an unbroken one."""
        missing = {"sums", "held", "window_steps", "window_clipped"} - set(state)
        if missing:
            raise KeyError(f"NoiseLogger state lacks {sorted(missing)}")
        self.sums = dict.fromkeys(INTEGRATED, 0.0) | {k: float(v) for k, v in state["sums"].items()}
        self.held = (
            None if state["held"] is None else {k: float(v) for k, v in state["held"].items()}
        )
        self.window_steps = int(state["window_steps"])
        self.window_clipped = int(state["window_clipped"])

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
        snaps = self._cumulative
        for j in range(self.n_micro, 0, -1):
            snaps[j].sub_(snaps[j - 1]).mul_(self.n_micro)
        return snaps[1:]

    def _estimate(self, loss_closure) -> dict:
        """Traces (totals and per layer) and noise shape of this step; updates the held estimate."""
        _check_one_lr(self.optimizer)
        micro = self._micro_means()
        precond_parts = preconditioner(self.optimizer, self.params)
        precond = torch.cat([p.reshape(-1) for p in precond_parts])
        mean, var = pooled_moments(micro, self.world_size, self.process_group)
        cov = covariance_diag(var, self.micro_batch_size)
        grad_sq = grad_sq_diag(mean, cov, self.global_batch)
        per_coord = torch.stack(
            [
                precond_diag_product(precond, cov) / self.global_batch,
                precond_diag_product(precond, fisher_diag(cov, grad_sq)),
                cov,
                grad_sq,
            ]
        )
        layers = self._layer_sums(per_coord)
        del per_coord
        estimate = dict(zip(LAYER_TRACES, layers.sum(1).tolist(), strict=True))
        estimate["layer_sums"] = layers
        estimate["trace_php_hutchinson"] = self._hutchinson(loss_closure, precond_parts)
        estimate |= self._noise_shape(micro, mean, var, precond)
        self.last_precond = precond
        selected = estimate[
            "trace_php_hutchinson" if self.curvature == "hutchinson" else "trace_pfp_fisher"
        ]
        trace = estimate["trace_pcp"]
        self.held = {
            "trace_pcp": trace,
            "trace_pfp": selected,
            "ratio": pne_star(trace, selected, self.eps),
            "ratio_fisher": pne_star(trace, estimate["trace_pfp_fisher"], self.eps),
            "ratio_hutchinson": pne_star(trace, estimate["trace_php_hutchinson"], self.eps),
        }
        return estimate

    def _layer_sums(self, per_coord: torch.Tensor) -> torch.Tensor:
        """(q, n_layers) float64 sums of each row of ``per_coord`` (q, D) over each layer."""
        per_param = torch.stack(
            [piece.sum(1, dtype=torch.float64) for piece in per_coord.split(self.sizes, dim=1)], 1
        )
        out = torch.zeros(per_coord.shape[0], len(self.layer_names), dtype=torch.float64)
        return out.index_add_(1, self._layer_index, per_param.cpu())

    def _hutchinson(self, loss_closure, precond_parts: list[torch.Tensor]) -> float:
        """Tr(P H P) when a loss closure is given (always with curvature ``hutchinson``;
        with ``fisher`` it is a secondary proxy for the sensitivity analysis), else NaN."""
        if loss_closure is None and self.curvature != "hutchinson":
            return math.nan
        if loss_closure is None:
            raise ValueError(
                "NoiseLogger(curvature='hutchinson') needs after_update(..., loss_closure=...) "
                "on logging steps"
            )
        value = hutchinson_trace_php(
            loss_closure, self.params, precond_parts, self.hutchinson_probes, self._generator(1)
        )
        if self.world_size > 1:
            value = mean_over_workers(
                value, self.world_size, self.process_group, self.params[0].device
            )
        return value

    def _noise_shape(
        self, micro: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, precond: torch.Tensor
    ) -> dict:
        """Spectrum of P C P / B (sketched) and Hill tail index, pooled over all workers.

        Centres ``micro`` in place (the snapshots are not needed afterwards).
        """
        n = self.n_micro * self.world_size
        centred = micro.sub_(mean)
        # rows x_j = P (g_j - G_bar) sqrt(m / ((n - 1) B)): sum_j x_j x_j^T = P C_hat P / B
        weight = precond * math.sqrt(self.micro_batch_size / ((n - 1) * self.global_batch))
        sketch = count_sketch(centred, self.sketch_width, self._generator(0), weight)
        sample = tail_sample(centred, var, self.sizes, self.hill_max_samples // self.world_size)
        k = hill_k(sample.numel() * self.world_size, self.hill_fraction)
        top = largest_abs(sample, k + 1)
        if self.world_size > 1:
            sketch, top = gather_pair(sketch, top, self.world_size, self.process_group)
        self.last_spectrum = gram_spectrum(sketch)
        shape = spectrum_summary(self.last_spectrum, self.sketch_rank)
        shape["hill_tail_index"] = hill_tail_index(top, k) if top.numel() > k else math.nan
        return shape

    def _generator(self, purpose: int) -> torch.Generator:
        generator = torch.Generator(device=self.params[0].device)
        return generator.manual_seed((self.seed * 1_000_003 + self.step) * 4 + purpose)

    def _integrate(self, lr: float, clip_coef: float) -> None:
        """Add this step's exposure, the held trace times this step's own eta_t (DESIGN §2)."""
        held, sums = self.held, self.sums
        sums["int_pne"] += pne(lr, held["trace_pcp"])
        sums["int_pne_eff"] += effective(pne(lr, held["trace_pcp"]), clip_coef)
        sums["int_pne_star"] += pne(lr, held["ratio"])
        sums["int_pne_star_eff"] += effective(pne(lr, held["ratio"]), clip_coef)
        sums["int_pne_eta2"] += pne_eta2(lr, held["trace_pcp"])
        sums["int_pne_star_fisher"] += pne(lr, held["ratio_fisher"])
        sums["int_pne_star_hutchinson"] += pne(lr, held["ratio_hutchinson"])

    def _record(self, estimate: dict, lr: float, clip_coef: float) -> dict:
        """The row of the steps table (P-NE columns) with the per-layer rows under ``layers``."""
        trace, trace_pfp = self.held["trace_pcp"], self.held["trace_pfp"]
        pne_value = pne(lr, trace)
        pne_star_value = pne_star(pne_value, trace_pfp, self.eps)
        return {
            "trace_pcp": trace,
            "trace_pfp": trace_pfp,
            "pne": pne_value,
            "pne_star": pne_star_value,
            "pne_eff": effective(pne_value, clip_coef),
            "pne_star_eff": effective(pne_star_value, clip_coef),
            "pne_eta2": pne_eta2(lr, trace),
            "b_simple": b_simple(estimate["trace_cov"], estimate["grad_sq"]),
            **self.sums,
            "clip_rate": self.window_clipped / self.window_steps,
            "trace_cov": estimate["trace_cov"],
            "grad_sq": estimate["grad_sq"],
            "trace_pfp_fisher": estimate["trace_pfp_fisher"],
            "pne_star_fisher": pne_star(pne_value, estimate["trace_pfp_fisher"], self.eps),
            "trace_php_hutchinson": estimate["trace_php_hutchinson"],
            "pne_star_hutchinson": pne_star(pne_value, estimate["trace_php_hutchinson"], self.eps),
            "spectrum_top": estimate["spectrum_top"],
            "spectrum_top_share": estimate["spectrum_top_share"],
            "eff_rank": estimate["eff_rank"],
            "hill_tail_index": estimate["hill_tail_index"],
            "layers": self._layer_rows(estimate["layer_sums"], lr, clip_coef, trace_pfp),
        }

    def _layer_rows(
        self, layer_sums: torch.Tensor, lr: float, clip_coef: float, trace_pfp: float
    ) -> list[dict]:
        """One row per module; trace_pcp, pne, pne_star, pne_eff sum to the step's totals.

        A layer's ``pne_star`` divides its P-NE by the whole model's curvature
        trace (its share of P-NE*); its ``trace_pfp`` is its Fisher trace.
        """
        rows = []
        for name, column in zip(self.layer_names, layer_sums.T.tolist(), strict=True):
            values = dict(zip(LAYER_TRACES, column, strict=True))
            layer_pne = pne(lr, values["trace_pcp"])
            rows.append(
                {
                    "layer": name,
                    "n_params": self._layer_sizes[name],
                    "trace_pcp": values["trace_pcp"],
                    "trace_pfp": values["trace_pfp_fisher"],
                    "trace_cov": values["trace_cov"],
                    "grad_sq": values["grad_sq"],
                    "pne": layer_pne,
                    "pne_star": pne_star(layer_pne, trace_pfp, self.eps),
                    "pne_eff": effective(layer_pne, clip_coef),
                }
            )
        return rows


def _check_settings(optimizer, n_micro, micro_batch_size, world_size, log_interval, curvature):
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW | torch.optim.SGD):
        raise TypeError(
            f"NoiseLogger supports Adam, AdamW and SGD (their preconditioner is known); "
            f"got {type(optimizer).__name__}"
        )
    for name, value in (
        ("n_micro", n_micro),
        ("micro_batch_size", micro_batch_size),
        ("world_size", world_size),
        ("log_interval", log_interval),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"NoiseLogger: {name} must be a positive integer, got {value!r}")
    if n_micro * world_size < 2:
        raise ValueError(
            "NoiseLogger needs at least two micro-batches per step (n_micro * world_size >= 2) "
            "to estimate their variance"
        )
    if curvature not in CURVATURES:
        raise ValueError(f"NoiseLogger: curvature must be one of {CURVATURES}, got {curvature!r}")


def _check_one_lr(optimizer: torch.optim.Optimizer) -> None:
    rates = {float(g["lr"]) for g in optimizer.param_groups}
    if len(rates) > 1:
        raise ValueError(
            f"NoiseLogger assumes one learning rate for all parameter groups, found {sorted(rates)}"
        )
