"""The K micro-batch gradients of a logging step, reduced as they arrive (memory free of K).

A logging step needs, per coordinate, the mean and the unbiased variance of the
K micro-batch mean gradients g_1 .. g_K of each worker, a randomized sketch of
them, and a strided sample of their coordinates for the tail index
(``training.pne_spectrum``). Each micro-batch backward adds g_j / K to ``.grad``;
``MicroStream.add`` takes the increment g_j = K (grad_j - grad_{j-1}) and folds it
into:

- Welford's (1962) running moments, per coordinate:
  mu_j = mu_{j-1} + (g_j - mu_{j-1}) / j,  M2_j = M2_{j-1} + (g_j - mu_{j-1}) (g_j - mu_j),
  so mu_K is the mean and M2_K / (K - 1) the unbiased variance, as accurate in
  fp32 as the two-pass formula (Chan, Golub & LeVeque 1983);
- one CountSketch row S (w g_j) per micro-batch (``training.pne_spectrum``'s hash,
  drawn afresh from the same generator state for every row); S is linear, so
  the sketch of the centred rows is S (w g_j) - S (w G_bar) once the pooled mean
  G_bar is known;
- the coordinates 0, s, 2s, ... of g_j (a fixed stride s: at most ``max_samples``
  values in all).

Memory: three fp32 vectors of the gradient's size (the previous ``.grad``, M2 and
mu) for any K, plus the K x min(D, width) sketch and the tail sample; the work
goes chunk by chunk (``chunks``), so temporaries are the size of one chunk,
about D / 128. The sketch weight w must be known while the micro-batches run: the
logger passes the preconditioner the optimizer held when the step began
(``training.pne``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from training.pne_spectrum import sketch_add_, sketch_hash

MIN_CHUNK = 2**11  # coordinates per chunk at least (not too many small kernels)
CHUNKS = 128  # chunks per gradient at most, above MIN_CHUNK coordinates each


class MicroStream:
    """Streaming moments, sketch rows and tail sample of one worker's K micro-batch gradients.

    Parameters
    ----------
    params : the parameters, in the logger's order (flat layout: their sizes end to end).
    n_micro : K.
    sketch_width : columns of the CountSketch; with D <= width the rows are kept exactly.
    max_samples : tail values kept at most (K rows of the strided coordinates).
    weight : ``weight(i, piece)``: the sketch weight of the coordinates ``piece`` (a
        slice) of flattened parameter i, flat fp32.
    generator : returns a fresh generator in the same state on every call (the hash).
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        n_micro: int,
        sketch_width: int,
        max_samples: int,
        weight: Callable[[int, slice], torch.Tensor],
        generator: Callable[[], torch.Generator],
    ):
        self.params, self.n_micro = params, n_micro
        self.weight, self.generator = weight, generator
        self.sizes = [p.numel() for p in params]
        n_coords = sum(self.sizes)
        device = params[0].device
        self.chunks = chunk_layout(self.sizes, max(MIN_CHUNK, math.ceil(n_coords / CHUNKS)))
        self.exact = n_coords <= sketch_width  # identity sketch
        self.width = n_coords if self.exact else sketch_width
        self.stride = max(1, math.ceil(n_micro * n_coords / max_samples))
        self.prev = torch.zeros(n_coords, device=device)  # .grad before the current micro-batch
        # Welford's M2_j and mu_j, as rows of one tensor: the logger turns them, in place,
        # into the covariance and Fisher diagonals it holds (``ExposureIntegral.hold``).
        self.moments = torch.zeros(2, n_coords, device=device)
        self.m2, self.mean = self.moments
        self.sketch = torch.zeros(n_micro, self.width, device=device)
        self.tail = torch.empty(n_micro, -(-n_coords // self.stride), device=device)
        self.seen = 0
        for i, piece, lo, hi in self.chunks:
            grad = params[i].grad
            if grad is not None:
                self.prev[lo:hi] = grad.reshape(-1)[piece]

    def add(self) -> None:
        """Fold the micro-batch just back-propagated (the increment of every ``.grad``) in."""
        j = self.seen + 1
        hashes = self._hash()
        for i, piece, lo, hi in self.chunks:
            prev, mean, m2 = self.prev[lo:hi], self.mean[lo:hi], self.m2[lo:hi]
            grad = self.params[i].grad
            if grad is None:
                g = prev.neg().mul_(self.n_micro)
                prev.zero_()
            else:
                grad = grad.reshape(-1)[piece]
                g = (grad.float() - prev).mul_(self.n_micro)  # g_j on this chunk
                prev.copy_(grad)
            delta = g - mean
            mean.add_(delta, alpha=1.0 / j)
            m2.addcmul_(delta, g - mean)
            self._sketch_add(self.sketch[self.seen], i, piece, lo, hi, g, next(hashes))
            self._tail_add(self.tail[self.seen], lo, hi, g)
        self.seen = j

    def release_prev(self) -> None:
        """Drop the previous-gradient vector once all K micro-batches are in."""
        self.prev = None

    def centred_sketch(self, pooled_mean: torch.Tensor) -> torch.Tensor:
        """(K, width) sketch rows of w (g_j - G_bar): the rows minus the sketch of w G_bar."""
        centre = torch.zeros(self.width, device=pooled_mean.device)
        hashes = self._hash()
        for i, piece, lo, hi in self.chunks:
            self._sketch_add(centre, i, piece, lo, hi, pooled_mean[lo:hi], next(hashes))
        return self.sketch.sub_(centre)  # in place: the raw rows are not needed again

    def centred_tail(self, pooled_mean: torch.Tensor) -> torch.Tensor:
        """(K, ceil(D / stride)) strided coordinates of g_j - G_bar (in place)."""
        return self.tail.sub_(pooled_mean[:: self.stride])

    def _hash(self) -> Iterator[tuple[torch.Tensor, torch.Tensor] | None]:
        """Bucket and sign of every coordinate, chunk by chunk, the same on every call."""
        if self.exact:
            return iter([None] * len(self.chunks))
        sizes = [hi - lo for _, _, lo, hi in self.chunks]
        return sketch_hash(sizes, self.width, self.generator(), self.params[0].device)

    def _sketch_add(self, row, i: int, piece: slice, lo: int, hi: int, values, hashed) -> None:
        weighted = values * self.weight(i, piece)
        if hashed is None:  # identity sketch: the coordinates themselves
            row[lo:hi] += weighted
        else:
            sketch_add_(row, weighted, hashed)

    def _tail_add(self, row: torch.Tensor, lo: int, hi: int, g: torch.Tensor) -> None:
        first = -(-lo // self.stride)  # first strided coordinate at or after lo
        last = -(-hi // self.stride)
        if last > first:
            row[first:last] = g[first * self.stride - lo :: self.stride]


def chunk_layout(sizes: list[int], chunk: int) -> list[tuple[int, slice, int, int]]:
    """Pieces of at most ``chunk`` coordinates: (parameter i, slice of it, flat lo, flat hi)."""
    out, offset = [], 0
    for i, size in enumerate(sizes):
        for start in range(0, size, chunk):
            stop = min(size, start + chunk)
            out.append((i, slice(start, stop), offset + start, offset + stop))
        offset += size
    return out
