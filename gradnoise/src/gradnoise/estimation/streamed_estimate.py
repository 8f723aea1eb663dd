"""The estimate of a logging step in the logger's streaming mode (``NoiseLogger(streaming=True)``).

The same quantities as the default mode's ``NoiseLogger._estimate``, from the
streamed moments and sketch rows of ``gradnoise.estimation.micro_stream`` instead of K + 1
gradient copies, without a temporary of the gradient's size:

- the pooled mean G_bar and unbiased variance of the n = K W micro-batch means,
  in place on the stream's two moment buffers (``pool_moments_``);
- P_t written into the stream's third buffer, once the sketch no longer needs
  its weight P_{t-1};
- the traces and per-layer sums chunk by chunk (``chunk_traces``), turning the
  variance and mean buffers into the covariance and Fisher diagonals, which the
  integral then holds without a copy;
- the spectrum from the gathered sketch rows centred on their mean row (the
  sketch is linear and w is the same on every worker, so the mean row of all
  n rows is S(w G_bar)), and the tail index from the strided sample centred on
  G_bar, divided by the per-tensor noise scale (``tail_scale``), as ``tail_sample``.
"""

from __future__ import annotations

import math

import torch

from gradnoise.estimation.curvature import DIAGONAL_PROXIES
from gradnoise.estimation.formulas import precond_flat
from gradnoise.estimation.micro_stream import (
    MicroStream,
    chunk_layout,
    chunk_traces,
    precond_sq_dot,
)
from gradnoise.estimation.pooling import gather_pair, pool_moments_
from gradnoise.estimation.record import LAYER_TRACES, check_one_lr
from gradnoise.estimation.spectrum import (
    gram_spectrum,
    hill_k,
    hill_tail_index,
    largest_abs,
    spectrum_summary,
    tail_scale,
)


class StreamedEstimate:
    """The streaming mode's estimate: a part of ``NoiseLogger``, reading its attributes."""

    def _estimate_streamed(self, logits_closure) -> dict:
        """Traces (totals and per layer) and noise shape of this step; holds its diagonals."""
        check_one_lr(self.optimizer)
        stream: MicroStream = self._stream
        if self._seen != self.n_micro:
            raise RuntimeError(
                f"NoiseLogger: step {self.step} saw {self._seen} micro-batch backward passes, "
                f"expected n_micro={self.n_micro}"
            )
        mean, var = pool_moments_(
            stream.mean, stream.m2, self.n_micro, self.world_size, self.process_group
        )
        if self.pooled_mean_check is not None:
            self.pooled_mean_check(mean)
        shape = self._noise_shape_streamed(stream, mean, var)
        # the previous held diagonals and P go before P_t takes the weight's buffer
        self.integral.held, self.last_precond = None, None
        precond = precond_flat(self.optimizer, self.params, out=stream.weight)
        chunks = chunk_layout(self.sizes, stream.chunk)
        sums = torch.zeros(
            len(LAYER_TRACES), len(self.sizes), dtype=torch.float64, device=precond.device
        )
        for i, lo, hi in chunks:
            sums[:, i] += chunk_traces(
                precond[lo:hi], mean[lo:hi], var[lo:hi], self.micro_batch_size,
                self.global_batch,
            )  # fmt: skip
        cov, fisher = var, mean  # the buffers now hold the diagonals
        layers = torch.zeros(len(LAYER_TRACES), len(self.layer_names), dtype=torch.float64)
        layers = self.loss_units(layers.index_add_(1, self._layer_index, sums.cpu()))
        estimate = dict(zip(LAYER_TRACES, layers.sum(1).tolist(), strict=True))
        estimate["layer_sums"] = layers
        precond_parts = [
            piece.view_as(p)
            for piece, p in zip(precond.split(self.sizes), self.params, strict=True)
        ]
        proxies = self._proxies(logits_closure, precond_parts)
        for name, column in self.proxy_columns.items():
            diag = proxies.get(name)
            estimate[column] = (
                math.nan if diag is None else precond_sq_dot(precond, diag, stream.chunk)
            )
        estimate["trace_php_hessian"] = proxies.get("hessian", math.nan)
        estimate |= shape
        if self._injected is not None:
            estimate["trace_pcp"] += precond_sq_dot(precond, self._injected, stream.chunk)
        self.last_precond = precond
        diagonals = {"cov": cov, "fisher": fisher} | {
            k: proxies[k] for k in DIAGONAL_PROXIES if k in proxies
        }
        # rows (M2, mu) of the stream's moments are (cov, fisher) now: held without a copy
        self.integral.hold(
            diagonals, estimate["trace_cov"], estimate["grad_sq"], stacked=stream.moments
        )
        self.b_window.append((estimate["trace_cov"], estimate["grad_sq"]))
        return estimate

    def _noise_shape_streamed(
        self, stream: MicroStream, mean: torch.Tensor, var: torch.Tensor
    ) -> dict:
        """Spectrum of P_{t-1} C P_{t-1} / B (sketched) and Hill tail index, over all workers."""
        n = self.n_micro * self.world_size
        sample = stream.centred_tail(mean).div_(tail_scale(var, self.sizes, stream.stride))
        k = hill_k(sample.numel() * self.world_size, self.hill_fraction)
        top = largest_abs(sample, k + 1)
        sketch = stream.sketch
        if self.world_size > 1:
            sketch, top = gather_pair(sketch, top, self.world_size, self.process_group)
        # rows x_j = w (g_j - G_bar) sqrt(m / ((n - 1) B)): sum_j x_j x_j^T = P C_hat P / B
        scale = math.sqrt(self.micro_batch_size / ((n - 1) * self.global_batch))
        centred = sketch.sub_(sketch.mean(0)).mul_(scale)  # in place: the raw rows are done
        self.last_spectrum = gram_spectrum(centred)
        shape = spectrum_summary(self.last_spectrum, self.sketch_rank)
        shape["hill_tail_index"] = hill_tail_index(top, k) if top.numel() > k else math.nan
        return shape
