"""The K micro-batch gradients of a logging step, reduced as they arrive (memory free of K).

A logging step needs, per coordinate, the mean and the unbiased variance of the
K micro-batch mean gradients g_1 .. g_K of each worker, a randomized sketch of
the weighted rows w g_j, and a strided sample of their coordinates for the tail
index (``gradnoise.estimation.spectrum``). Backward pass j adds g_j / K to ``.grad``, so
with ``.grad`` zero when the step begins, K grad_j = g_1 + ... + g_j and the
running mean of the first j micro-batch gradients is mu_j = K grad_j / j: it is
read off ``.grad``, not accumulated. ``MicroStream.add`` folds micro-batch j in
with Welford's (1962) update, in place on two flat fp32 vectors (mu, M2):

    delta_j = g_j - mu_{j-1} = K grad_j - j mu_{j-1}
    M2_j    = M2_{j-1} + (j - 1) / j delta_j^2      (= delta_j (g_j - mu_j))
    mu_j    = K grad_j / j

(K stands for the factor a with g_j = a (grad_j - grad_{j-1}): K for losses that are
micro-batch means divided by K, 1 / m for summed ones, ``MicroStream(scale=a)``)
so mu_K is the mean and M2_K / (K - 1) the unbiased variance, as accurate in
fp32 as the two-pass formula (Chan, Golub & LeVeque 1983). The buffer of mu
holds delta_j in between; it is sampled at the strided coordinates and, times
the weight w, sketched. Sketch and sample are linear and g_j = delta_j +
mu_{j-1} = delta_j + (mean of g_1 .. g_{j-1}), so the row of g_j is the row of
delta_j plus the mean of the rows before it (K x width numbers, not D).

Memory: three fp32 vectors of the gradient's size for any K (mu, M2 and the
sketch weight w, whose buffer the logger then fills with P_t), plus the K x
min(D, width) sketch, the tail sample, and chunk-sized temporaries of at most
D / 16 coordinates. The weight must be known while the micro-batches run,
before the update that sets P_t: the logger passes the preconditioner held when
the step began, P_{t-1} (``gradnoise.estimation.logger``). Per micro-batch: seven passes over D
(two of them one ``torch._foreach`` call each) and the sketch's hash, drawn
afresh in chunks from the same generator state (never stored).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

MIN_CHUNK = 2**11  # coordinates per chunk at least (not too many small kernels)
CHUNKS = 16  # chunks per gradient at most (temporaries of D / 16)


class MicroStream:
    """Streaming moments, sketch rows and tail sample of one worker's K micro-batch gradients.

    Parameters
    ----------
    params : the parameters, in the logger's order (flat layout: their sizes end to end).
    n_micro : K.
    sketch_width : columns of the CountSketch; with D <= width the rows are kept exactly.
    max_samples : tail values kept at most (K rows of the strided coordinates).
    weight : fills a flat (D,) buffer with the sketch weight w (the logger: P_{t-1}).
    generator : returns a fresh generator in the same state on every call (the hash).
    scale : a, with g_j = a times the j-th increment of the cumulative gradient ``add``
        reads: K (default) for micro-batch losses that are means divided by K, 1 / m
        for summed ones, 1 when the cumulative tensors already hold g_1 + ... + g_j.
    check : require every ``.grad`` zero or None at the start (``add`` reads ``.grad``).
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        n_micro: int,
        sketch_width: int,
        max_samples: int,
        weight: Callable[[torch.Tensor], torch.Tensor],
        generator: Callable[[], torch.Generator],
        scale: float | None = None,
        check: bool = True,
    ):
        self.params, self.n_micro, self.generator = params, n_micro, generator
        self.scale = n_micro if scale is None else scale
        self.sizes = [p.numel() for p in params]
        if check:
            check_clear(params)
        n_coords = sum(self.sizes)
        device = params[0].device
        self.chunk = max(MIN_CHUNK, math.ceil(n_coords / CHUNKS))
        self.exact = n_coords <= sketch_width  # identity sketch
        self.width = n_coords if self.exact else sketch_width
        self.stride = max(1, math.ceil(n_micro * n_coords / max_samples))
        # Welford's M2 and mu as the rows of one tensor: the logger turns them, in place,
        # into the covariance and Fisher diagonals it holds (``ExposureIntegral.hold``).
        self.moments = torch.zeros(2, n_coords, device=device)
        self.m2, self.mean = self.moments
        self.mean_views = [
            part.view_as(p) for part, p in zip(self.mean.split(self.sizes), params, strict=True)
        ]
        self.weight = weight(torch.empty(n_coords, device=device))
        self.sketch = torch.zeros(n_micro, self.width, device=device)
        self.tail = torch.empty(n_micro, -(-n_coords // self.stride), device=device)
        self.seen = 0

    def add(self, cumulative: list[torch.Tensor | None] | None = None) -> None:
        """Fold the micro-batch just back-propagated (the increment of every ``.grad``) in.

        ``cumulative``: per parameter, the running sum to read instead of ``.grad``
        (the hooks of ``gradnoise.tap`` keep their own, before any all-reduce).
        """
        j = self.seen + 1
        sums = [p.grad for p in self.params] if cumulative is None else cumulative
        # parameters without .grad have had no gradient: their mu and delta stay 0
        present = [(v, g) for v, g in zip(self.mean_views, sums, strict=True) if g is not None]
        views, grads = [v for v, _ in present], [g for _, g in present]
        delta = self.mean.mul_(-j)  # -j mu_{j-1}; + a grad_j below
        if views:
            torch._foreach_add_(views, grads, alpha=self.scale)  # one call for all parameters
        if j > 1:
            self.m2.addcmul_(delta, delta, value=(j - 1) / j)
        self.tail[self.seen] = delta[:: self.stride]
        self._sketch_row(self.sketch[self.seen], delta.mul_(self.weight))
        if j > 1:  # the rows of g_j = delta_j + mean of g_1 .. g_{j-1}
            self.tail[self.seen] += self.tail[: self.seen].mean(0)
            self.sketch[self.seen] += self.sketch[: self.seen].mean(0)
        if views:
            torch._foreach_copy_(views, grads)
        self.mean.mul_(self.scale / j)  # mu_j = a grad_j / j
        self.seen = j

    def centred_tail(self, pooled_mean: torch.Tensor) -> torch.Tensor:
        """(K, ceil(D / stride)) strided coordinates of g_j - G_bar (in place)."""
        return self.tail.sub_(pooled_mean[:: self.stride])

    def _sketch_row(self, row: torch.Tensor, values: torch.Tensor) -> None:
        """Add the CountSketch S values of the flat ``values`` to ``row`` (width,), in place.

        Bucket h(i) and sign s_i are drawn as one integer r_i = 2 h(i) + (1 - s_i) / 2,
        uniform on [0, 2 width), so h and s are independent and uniform as in
        ``gradnoise.estimation.spectrum.count_sketch``: values_i is added to entry r_i
        of a (width, 2) buffer whose first column minus its second is the row.
        The same generator state draws the same r for every row, chunk by chunk.
        """
        if self.exact:  # identity sketch: the coordinates themselves
            row += values
            return
        pairs = torch.zeros(2 * self.width, device=values.device)
        generator = self.generator()
        for lo in range(0, values.numel(), self.chunk):
            piece = values[lo : lo + self.chunk]
            index = torch.randint(
                0, 2 * self.width, (piece.numel(),), generator=generator,
                device=values.device, dtype=torch.int32,
            )  # fmt: skip
            pairs.index_add_(0, index, piece)
        pairs = pairs.view(self.width, 2)
        row += pairs[:, 0] - pairs[:, 1]


def check_clear(params: list[torch.Tensor]) -> None:
    """Raise unless every ``.grad`` is None or zero (one reduction over all parameters)."""
    flags = [p.grad.any() for p in params if p.grad is not None]
    if not flags or not bool(torch.stack(flags).any()):
        return
    i = next(i for i, p in enumerate(params) if p.grad is not None and bool(p.grad.any()))
    raise ValueError(
        f"NoiseLogger(streaming=True): parameter {i} (shape {tuple(params[i].shape)}) has a "
        "non-zero .grad when the logging step begins; clear the gradients "
        "(optimizer.zero_grad()) before every step"
    )


def chunk_layout(sizes: list[int], chunk: int) -> list[tuple[int, int, int]]:
    """Pieces of at most ``chunk`` coordinates within one parameter: (parameter i, flat lo, hi)."""
    out, offset = [], 0
    for i, size in enumerate(sizes):
        for start in range(0, size, chunk):
            out.append((i, offset + start, offset + min(size, start + chunk)))
        offset += size
    return out


def chunk_traces(
    precond: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, micro_batch_size: int,
    global_batch: int,
) -> torch.Tensor:  # fmt: skip
    """Sums over one chunk of P^2 cov / B, P^2 fisher, cov, grad_sq (float64, ``LAYER_TRACES``).

    In place: ``var`` becomes cov = m var (``covariance_diag``), ``mean`` becomes
    fisher = cov + grad_sq with grad_sq = G_bar^2 - cov / B (``grad_sq_diag``,
    ``fisher_diag``); the same operations as those functions, with two
    chunk-sized temporaries (P^2 and a scratch) instead of gradient-sized ones.
    """
    cov = var.mul_(micro_batch_size)
    p2, scratch = precond * precond, torch.empty_like(precond)
    pcp = torch.mul(p2, cov, out=scratch).sum(dtype=torch.float64) / global_batch
    cov_sum = cov.sum(dtype=torch.float64)
    grad_sq = mean.square_().sub_(torch.div(cov, global_batch, out=scratch))
    grad_sq_sum = grad_sq.sum(dtype=torch.float64)
    fisher = grad_sq.add_(cov)
    pfp = torch.mul(p2, fisher, out=scratch).sum(dtype=torch.float64)
    return torch.stack((pcp, pfp, cov_sum, grad_sq_sum))


def precond_sq_dot(precond: torch.Tensor, diag: torch.Tensor, chunk: int) -> float:
    """Tr(P diag P) = sum_i P_i^2 diag_i, chunk by chunk (no gradient-sized temporary)."""
    total = torch.zeros((), dtype=torch.float64, device=precond.device)
    for lo in range(0, precond.numel(), chunk):
        p = precond[lo : lo + chunk]
        total += (p * p) @ diag[lo : lo + chunk]
    return float(total)  # one device synchronisation
