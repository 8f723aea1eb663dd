"""The estimate of a logging step in the logger's default mode (K + 1 gradient copies).

From this worker's K micro-batch mean gradients (differences of the ``.grad``
snapshots, or the rows the hooks wrote): the pooled mean and unbiased variance of
all n = K W of them, diag(C) and the Fisher diagonal (``gradnoise.estimation.formulas``),
their traces under P_t in total and per layer, the extra curvature proxies, and the
noise shape (sketched spectrum of P C P / B, Hill tail index). The streaming mode's
counterpart is ``gradnoise.estimation.streamed_estimate``.

Units. The estimates are in the units of the gradient the optimizer is given:
micro-batch j's gradient is g_j = K d_j from its ``.grad`` increment d_j, whatever
the loss's scale, so the mean of the g_j is the accumulated ``.grad`` and C is
the covariance of per-example gradients scaled alike. P-NE, P-NE*, B_simple and
every trace under P therefore do not depend on how the loss is scaled under Adam
(P_t scales inversely with the gradient), and are those of the actual update under
SGD. Only the unpreconditioned columns ``trace_cov`` and ``grad_sq`` (totals and
per layer) carry the loss's units; ``loss_reduction`` declares them:
``"mean"`` (each micro-batch loss the mean over its m examples divided by K, as
above: per example of the loss) or ``"sum"`` (the sum over the step's m K local
examples, not divided: they are divided by (m K)^2 so they are per example too).
A loss declared wrongly leaves P-NE right and those two columns off by the square
of the ratio; no gradient can tell (a global rescaling of the loss rescales every
increment alike).
"""

from __future__ import annotations

import math

import torch

from gradnoise.estimation.curvature import DIAGONAL_PROXIES, PROXIES, fisher_diag, logit_curvature
from gradnoise.estimation.formulas import (
    covariance_diag,
    grad_sq_diag,
    precond_diag_product,
    preconditioner,
)
from gradnoise.estimation.pooling import gather_pair, mean_over_workers, pooled_moments
from gradnoise.estimation.record import LAYER_TRACES, check_one_lr
from gradnoise.estimation.spectrum import (
    count_sketch,
    gram_spectrum,
    hill_k,
    hill_tail_index,
    largest_abs,
    spectrum_summary,
    tail_sample,
)


class DefaultEstimate:
    """The default mode's estimate: a part of ``NoiseLogger``, reading its attributes."""

    def _estimate(self, logits_closure) -> dict:
        """Traces (totals and per layer) and noise shape of this step; holds its diagonals."""
        if self.streaming:
            return self._estimate_streamed(logits_closure)
        check_one_lr(self.optimizer)
        micro = self._micro_means()
        precond_parts = preconditioner(self.optimizer, self.params)
        precond = torch.cat([p.reshape(-1) for p in precond_parts])
        mean, var = pooled_moments(micro, self.world_size, self.process_group)
        if self.pooled_mean_check is not None:
            self.pooled_mean_check(mean)
        cov = covariance_diag(var, self.micro_batch_size)
        grad_sq = grad_sq_diag(mean, cov, self.global_batch)
        fisher = fisher_diag(cov, grad_sq)
        per_coord = torch.stack(
            [
                precond_diag_product(precond, cov) / self.global_batch,
                precond_diag_product(precond, fisher),
                cov,
                grad_sq,
            ]
        )
        layers = self.loss_units(self._layer_sums(per_coord))
        del per_coord
        estimate = dict(zip(LAYER_TRACES, layers.sum(1).tolist(), strict=True))
        estimate["layer_sums"] = layers
        proxies = self._proxies(logits_closure, precond_parts)
        for name, column in self.proxy_columns.items():
            diag = proxies.get(name)
            estimate[column] = math.nan if diag is None else float((precond**2) @ diag)
        estimate["trace_php_hessian"] = proxies.get("hessian", math.nan)
        estimate |= self._noise_shape(micro, mean, var, precond)
        if self._injected is not None:
            estimate["trace_pcp"] += float((precond**2) @ self._injected)
        self.last_precond = precond
        diagonals = {"cov": cov, "fisher": fisher} | {
            k: proxies[k] for k in DIAGONAL_PROXIES if k in proxies
        }
        self.integral.hold(diagonals, estimate["trace_cov"], estimate["grad_sq"])
        self.b_window.append((estimate["trace_cov"], estimate["grad_sq"]))
        return estimate

    def loss_units(self, layers: torch.Tensor) -> torch.Tensor:
        """``LAYER_TRACES`` sums (q, n_layers) with trace_cov and grad_sq per example of the loss.

        Under ``loss_reduction="sum"`` the gradient is (m K) times the mean loss's, so those
        two unpreconditioned traces are divided by (m K)^2; every other row is unit-free.
        """
        if self.loss_reduction == "sum":
            rows = [LAYER_TRACES.index("trace_cov"), LAYER_TRACES.index("grad_sq")]
            layers[rows] /= float(self.micro_batch_size * self.n_micro) ** 2
        return layers

    def _layer_sums(self, per_coord: torch.Tensor) -> torch.Tensor:
        """(q, n_layers) float64 sums of each row of ``per_coord`` (q, D) over each layer."""
        per_param = torch.stack(
            [piece.sum(1, dtype=torch.float64) for piece in per_coord.split(self.sizes, dim=1)], 1
        )
        out = torch.zeros(per_coord.shape[0], len(self.layer_names), dtype=torch.float64)
        return out.index_add_(1, self._layer_index, per_param.cpu())

    def _proxies(self, logits_closure, precond_parts: list[torch.Tensor]) -> dict:
        """The extra curvature proxies of this logging step, averaged over workers."""
        if not self.proxies:
            return {}
        if logits_closure is None:
            raise ValueError(
                f"NoiseLogger(curvature={self.curvature!r}, proxies={self.proxies}) needs "
                "after_update(..., logits_closure=...) on logging steps"
            )
        out = logit_curvature(
            logits_closure, self.params, precond_parts, self.proxies, self.curvature_probes,
            {name: self._generator(1 + i) for i, name in enumerate(PROXIES)},
        )  # fmt: skip
        if self.world_size > 1:
            device = self.params[0].device
            for name in DIAGONAL_PROXIES:
                if name in out:
                    torch.distributed.all_reduce(out[name], group=self.process_group)
                    out[name] /= self.world_size
            if "hessian" in out:
                out["hessian"] = mean_over_workers(
                    out["hessian"], self.world_size, self.process_group, device
                )
        return out

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
