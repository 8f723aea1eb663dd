"""The standard tier's logger: micro-batch gradients folded into the held buffer (two of D).

``WelfordLogger`` is ``NoiseLogger`` in hook mode with two buffers of the
gradient's size in all, the held estimate included (``gradnoise.tap.attach``,
``tier="standard"``):

- one (2, D) fp32 buffer holds, between logging steps, the covariance and
  empirical Fisher diagonals the stride-free integral weights every step
  (``ExposureIntegral.hold`` keeps it without a copy); a logging step no longer
  needs them (it holds its own estimate before integrating), so when it begins
  the same buffer becomes Welford's (1962) moments (M2, mu) of the step's K
  micro-batch gradients;
- the hooks fold each micro-batch increment straight in, parameter by parameter
  and chunk by chunk (``fold``): with g_j = a d_j (a = K / S, as ``gradnoise.tap``),

      delta = g_j - mu_{j-1},   M2_j = M2_{j-1} + (j - 1) / j delta^2,   mu_j = mu_{j-1} + delta / j

  (no running sum, no sketch rows, no tail sample: ``micro_stream``'s recursion
  without its third buffer);
- the estimate pools them over workers in place (``pool_moments_``) and turns
  them, chunk by chunk, into the cov and Fisher diagonals (``chunk_traces``),
  with P_t computed per chunk from Adam's state (the operations of
  ``precond_flat``): no vector of P or P^2 is kept; the integral reads P_t^2 the
  same way at every refresh (``PrecondSquare``).

The records are the default mode's (``NoiseLogger``) up to float rounding, except
the spectrum and tail-index columns (``spectrum_top``, ``spectrum_top_share``,
``eff_rank``, ``hill_tail_index``), NaN here, and the curvature proxies other than
the empirical Fisher, which this logger refuses (``tier="full"`` has them).
``injected_rate`` between refreshes uses the current P, not the latest refreshed one.
"""

from __future__ import annotations

import math

import torch

from gradnoise.estimation.integrals import ExposureIntegral
from gradnoise.estimation.logger import NoiseLogger
from gradnoise.estimation.micro_stream import CHUNKS, MIN_CHUNK, chunk_traces
from gradnoise.estimation.pooling import pool_moments_
from gradnoise.estimation.record import LAYER_TRACES, check_one_lr

NAN_COLUMNS = ("spectrum_top", "spectrum_top_share", "eff_rank", "hill_tail_index",
               "trace_pgp_ggn", "trace_pfp_true_fisher", "trace_php_hessian")  # fmt: skip


def precond_chunks(optimizer, params: list[torch.Tensor], chunk: int):
    """Yield (parameter i, flat lo, hi, P_t of those coordinates) in chunks of at most ``chunk``.

    P as ``formulas.precond_flat`` computes it (Adam: 1 / (sqrt(v / (1 - beta2^t)) + eps),
    the same in-place operations; SGD: 1; 0 without optimizer state), in a temporary of
    the chunk's size.
    """
    adam = isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    offset = 0
    for i, p in enumerate(params):
        group, state = group_of.get(id(p)), optimizer.state.get(p, {})
        second = None
        if adam and group is not None and "exp_avg_sq" in state:
            amsgrad = group.get("amsgrad", False)
            second = (state["max_exp_avg_sq"] if amsgrad else state["exp_avg_sq"]).reshape(-1)
            correction = 1.0 - group["betas"][1] ** float(state["step"])
        for start in range(0, p.numel(), chunk):
            stop = min(p.numel(), start + chunk)
            if second is not None:  # v / c written into a new chunk: precond_flat's copy_ + div_
                piece = torch.div(second[start:stop].float(), correction).sqrt_()
                piece.add_(group["eps"]).reciprocal_()
            else:
                piece = torch.full((stop - start,), float(group is not None and not adam),
                                   device=p.device)  # fmt: skip
            yield i, offset + start, offset + stop, piece
        offset += p.numel()


class PrecondSquare:
    """P_t^2 read from the optimizer when used: ``row @ it`` = sum_i P_i^2 row_i, chunk by chunk.

    Stands for the (D,) P^2 vector ``ExposureIntegral`` takes, without one; ``.cpu()``
    builds that vector (for a checkpoint).
    """

    def __init__(self, optimizer, params: list[torch.Tensor], chunk: int):
        self.optimizer, self.params, self.chunk = optimizer, params, chunk
        self.preset: torch.Tensor | None = None  # row sums already known (a logging step's)

    def __rmatmul__(self, row: torch.Tensor) -> float:
        return float(self.dots(row[None])[0])

    def dots(self, rows: torch.Tensor) -> torch.Tensor:
        """(q,) float64 sums_i P_i^2 rows_ki of (q, D) ``rows``, in one pass over P."""
        total = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
        for _, lo, hi, p in precond_chunks(self.optimizer, self.params, self.chunk):
            total += rows[:, lo:hi].float() @ (p * p)
        return total

    __matmul__ = __rmatmul__  # P^2 is diagonal: v^T P^2 = P^2 v

    def cpu(self) -> torch.Tensor:
        pieces = [p * p for *_, p in precond_chunks(self.optimizer, self.params, self.chunk)]
        return torch.cat(pieces).cpu()


class ChunkedIntegral(ExposureIntegral):
    """``ExposureIntegral`` whose P^2 is a ``PrecondSquare``: every held row in one pass."""

    def traces(self, precond_sq) -> dict[str, float]:
        if not isinstance(precond_sq, PrecondSquare):
            return super().traces(precond_sq)
        sums = precond_sq.dots(self.held) if precond_sq.preset is None else precond_sq.preset
        values = dict(zip(self.rows, sums.tolist(), strict=True))
        return {"trace_pcp": values.pop("cov") / self.global_batch} | values


class WelfordLogger(NoiseLogger):
    """``NoiseLogger`` in hook mode whose two gradient-sized buffers are all it holds.

    Takes ``NoiseLogger``'s arguments except ``streaming``, ``curvature`` other than
    ``"fisher"`` and ``proxies``; the hooks call ``fold`` for each parameter's
    increment on logging steps (module docstring).
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("curvature", "fisher") != "fisher" or kwargs.get("proxies"):
            raise ValueError(
                "attach(tier='standard') estimates the registered empirical Fisher only; "
                "curvature proxies need tier='full'"
            )
        super().__init__(*args, **kwargs)
        self.integral = ChunkedIntegral(
            self.curvature, self.proxies, self.global_batch, self.eps_rel
        )
        n_coords = sum(self.sizes)
        self.chunk = max(MIN_CHUNK, math.ceil(n_coords / CHUNKS))
        self._precond_sq_reader = PrecondSquare(self.optimizer, self.params, self.chunk)
        self._moments: torch.Tensor | None = None  # (2, D): (M2, mu), then (cov, fisher)
        self._folded = [False] * len(self.params)  # parameters of this micro-batch folded

    @property
    def micro_rows(self) -> tuple:
        return ()  # the hooks fold instead (``fold``)

    def begin_hooked_step(self, step: int, log: bool | None = None) -> None:
        """Open step ``step``; a logging step turns the held buffer into zeroed moments."""
        self.begin_step(step, log=False)
        self.logging, self._hooked = self.is_log_step(step) if log is None else bool(log), True
        if not self.logging:
            return
        held, shape = self.integral.held, (2, sum(self.sizes))
        if held is not None and held.shape == shape and held.dtype == torch.float32:
            self._moments = held.zero_()  # this step holds its own estimate before integrating
        else:
            self._moments = torch.zeros(shape, device=self.params[0].device)
        m2, mean = self._moments
        self._m2_views, self._mean_views = m2.split(self.sizes), mean.split(self.sizes)
        self._folded = [False] * len(self.params)

    def fold(self, i: int, grad: torch.Tensor, factor: float, j: int) -> None:
        """Fold g_j = factor * grad (parameter i's increment of micro-batch j) into (M2, mu).

        With e = grad - mu / factor = delta / factor: M2 += (j - 1) / j factor^2 e^2 and
        mu += factor / j e, three operations per chunk.
        """
        flat, mean, m2 = grad.reshape(-1), self._mean_views[i], self._m2_views[i]
        if flat.dtype != torch.float32:
            flat = flat.float()
        if j == 1:  # mu_1 = g_1, M2_1 = 0 (the moments were zeroed)
            torch.mul(flat, factor, out=mean)
            self._folded[i] = True
            return
        if flat.numel() <= self.chunk:  # the common case: no slicing
            scaled = torch.sub(flat, mean, alpha=1 / factor)
            if j > 1:
                m2.addcmul_(scaled, scaled, value=(j - 1) / j * factor**2)
            mean.add_(scaled, alpha=factor / j)
            self._folded[i] = True
            return
        for lo in range(0, flat.numel(), self.chunk):
            hi = lo + self.chunk
            scaled = torch.sub(flat[lo:hi], mean[lo:hi], alpha=1 / factor)
            if j > 1:
                m2[lo:hi].addcmul_(scaled, scaled, value=(j - 1) / j * factor**2)
            mean[lo:hi].add_(scaled, alpha=factor / j)
        self._folded[i] = True

    def after_hooked_micro(self, running_sums=None) -> None:
        """After micro-batch backward j: a parameter without a gradient in it had g_j = 0."""
        if not self.logging:
            return
        if self._seen >= self.n_micro:
            raise RuntimeError(
                f"NoiseLogger: more than n_micro={self.n_micro} micro-batch backward passes "
                f"in step {self.step}"
            )
        self._seen += 1
        j = self._seen
        for i, folded in enumerate(self._folded):
            if not folded and j > 1:  # delta = -mu_{j-1}
                mean = self._mean_views[i]
                self._m2_views[i].addcmul_(mean, mean, value=(j - 1) / j)
                mean.mul_((j - 1) / j)
        self._folded = [False] * len(self.params)

    def _step_precond_sq(self, estimate: dict | None):
        """P_t^2 read chunk by chunk (``PrecondSquare``) at logging steps and refreshes.

        On a logging step the held rows' sums under P_t are the estimate's own, so the
        reader hands them over instead of a second pass over P.
        """
        self._precond_sq_reader.preset = self._held_traces if estimate is not None else None
        refresh = estimate is not None or self.step % self.precond_interval == 0
        return self._precond_sq_reader if refresh else None

    def _estimate(self, logits_closure) -> dict:
        """Traces (totals and per layer) of this step from its moments; holds its diagonals."""
        check_one_lr(self.optimizer)
        if self._seen != self.n_micro:
            raise RuntimeError(
                f"NoiseLogger: step {self.step} saw {self._seen} micro-batch backward passes, "
                f"expected n_micro={self.n_micro}"
            )
        m2, mean = self._moments
        mean, var = pool_moments_(mean, m2, self.n_micro, self.world_size, self.process_group)
        if self.pooled_mean_check is not None:
            self.pooled_mean_check(mean)
        sums = torch.zeros(
            len(LAYER_TRACES), len(self.sizes), dtype=torch.float64, device=mean.device
        )
        for i, lo, hi, precond in precond_chunks(self.optimizer, self.params, self.chunk):
            sums[:, i] += chunk_traces(
                precond, mean[lo:hi], var[lo:hi], self.micro_batch_size, self.global_batch
            )
        layers = torch.zeros(len(LAYER_TRACES), len(self.layer_names), dtype=torch.float64)
        layers = self.loss_units(layers.index_add_(1, self._layer_index, sums.cpu()))
        estimate = dict(zip(LAYER_TRACES, layers.sum(1).tolist(), strict=True))
        estimate["layer_sums"] = layers
        estimate |= dict.fromkeys(NAN_COLUMNS, math.nan)
        # Tr(P_t cov P_t) (times B) and Tr(P_t F P_t): what the integral weights this step
        self._held_traces = sums[:2].sum(1) * torch.tensor(
            [self.global_batch, 1.0], device=mean.device
        )
        if self._injected is not None:
            estimate["trace_pcp"] += self._precond_sq_reader @ self._injected
        self.last_precond = None
        # rows (M2, mu) are (cov, fisher) now: held without a copy
        diagonals = {"cov": self._moments[0], "fisher": self._moments[1]}
        self.integral.hold(
            diagonals, estimate["trace_cov"], estimate["grad_sq"], stacked=self._moments
        )
        self.b_window.append((estimate["trace_cov"], estimate["grad_sq"]))
        return estimate
