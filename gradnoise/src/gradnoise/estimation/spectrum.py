"""The shape of the gradient noise: a low-rank spectrum of P C P and a tail index.

Two diagnostics that the trace Tr(P C P) hides (DESIGN §2, seed 003 §3.4,
"Anisotropy and heavy tails"):

- the top eigenvalues and the effective rank of the preconditioned noise
  covariance P C P / B, from a randomized sketch of the centred micro-batch
  gradients (Halko, Martinsson & Tropp 2011; the sketch is the sparse embedding
  of Clarkson & Woodruff 2013);
- the tail index of the noise, from the Hill (1975) estimator on the absolute
  centred micro-batch gradient coordinates.

Every function here is pure: tensors in, tensors or floats out. The logger
(``gradnoise.estimation.logger``) decides what to feed them and gathers across workers.
"""

from __future__ import annotations

import math

import torch


def count_sketch(
    rows: torch.Tensor, width: int, generator: torch.Generator, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Sketch each row of ``rows * weight`` (n, D) down to ``width`` coordinates: (n, width).

    Each coordinate i is added, with a random sign s_i, into one random bucket
    h(i) (Clarkson & Woodruff 2013). For any rows x, y the sketched inner product
    is unbiased, E<Sx, Sy> = <x, y>, with variance at most (|x|^2 |y|^2 +
    <x, y>^2) / width, so Gram entries carry a relative error of about
    sqrt(2 / width). The sketch costs one pass over the rows, one row of
    temporary memory and no D x width matrix. Workers that draw from generators
    with the same seed apply the same S, so their sketches can be gathered and
    compared. When D <= width the identity is used (exact). ``weight`` (D,), e.g.
    the preconditioner, scales every row first.
    """
    n_rows, n_coords = rows.shape
    weight = torch.ones(n_coords, device=rows.device) if weight is None else weight
    if n_coords <= width:
        return rows * weight
    bucket = torch.randint(0, width, (n_coords,), generator=generator, device=rows.device)
    sign = torch.randint(0, 2, (n_coords,), generator=generator, device=rows.device)
    signed_weight = weight * (2 * sign - 1).to(weight.dtype)
    out = torch.zeros(n_rows, width, dtype=rows.dtype, device=rows.device)
    for j in range(n_rows):  # row by row: one (D,) temporary, not (n, D)
        out[j].index_add_(0, bucket, rows[j] * signed_weight)
    return out


def gram_spectrum(sketch: torch.Tensor) -> torch.Tensor:
    """Eigenvalues, descending and clipped at 0, of sum_j z_j z_j^T for the rows z_j of ``sketch``.

    The non-zero eigenvalues of the D x D matrix X^T X equal those of the small
    n x n Gram matrix X X^T (Halko et al. 2011, §5): with n micro-batches this is
    an n x n eigenproblem, whatever the number of parameters.
    """
    rows = sketch.double()  # one float64 copy of the (n, width) rows
    gram = rows @ rows.T  # (n, n)
    eigenvalues = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    return eigenvalues.flip(0)


def effective_rank(eigenvalues: torch.Tensor) -> float:
    """Participation ratio (sum lambda)^2 / sum lambda^2 of a spectrum; NaN when it is all zero.

    It equals r for r equal eigenvalues and 1 for a rank-one spectrum. Estimated
    from n micro-batches it is at most n - 1 (the rank of a centred sample
    covariance), and it is biased low when the true effective rank approaches n.
    """
    total = float(eigenvalues.sum())
    square = float((eigenvalues**2).sum())
    return total**2 / square if square > 0 else math.nan


def top_share(eigenvalues: torch.Tensor, rank: int) -> float:
    """Share of the spectrum's total in its ``rank`` largest eigenvalues; NaN if all zero."""
    total = float(eigenvalues.sum())
    return float(eigenvalues[:rank].sum()) / total if total > 0 else math.nan


def spectrum_summary(eigenvalues: torch.Tensor, rank: int) -> dict[str, float]:
    """Top eigenvalue, share of the top ``rank`` eigenvalues, and effective rank of a spectrum."""
    return {
        "spectrum_top": float(eigenvalues[0]),
        "spectrum_top_share": top_share(eigenvalues, rank),
        "eff_rank": effective_rank(eigenvalues),
    }


def tail_sample(
    centred: torch.Tensor, var: torch.Tensor, sizes: list[int], max_samples: int
) -> torch.Tensor:
    """Centred micro-batch gradient coordinates (K, D') for the tail index, unit RMS per tensor.

    ``centred`` (K, D) holds micro-batch mean gradients minus their pooled mean,
    ``var`` their pooled per-coordinate unbiased variance over all n micro-batches,
    ``sizes`` the sizes of the parameter tensors laid end to end. Each tensor's
    centred values are divided by their root mean square, so that differences of
    scale between layers do not pose as a heavy tail (a mixture of Gaussians of
    different scales looks heavy-tailed to the Hill estimator at finite k). At
    most ``max_samples`` values are kept, by a fixed stride over coordinates, the
    same on every worker so that the pooled sample does not depend on W.
    """
    per_tensor = torch.stack([v.mean() for v in var.split(sizes)])
    lengths = torch.tensor(sizes, device=var.device)
    rms = torch.repeat_interleave(per_tensor.sqrt().clamp_min(1e-30), lengths)
    stride = max(1, math.ceil(centred.numel() / max_samples))
    return centred[:, ::stride] / rms[::stride]


def tail_scale(var: torch.Tensor, sizes: list[int], stride: int) -> torch.Tensor:
    """The divisors of ``tail_sample`` at flat coordinates 0, s, 2s, ...: per-tensor RMS noise.

    For a sample taken by stride s as the values arrive (``gradnoise.estimation.micro_stream``):
    the root of each tensor's mean pooled variance ``var`` (D,), repeated for
    the strided coordinates that fall in that tensor (tensors laid end to end in
    pieces of ``sizes``). ``tail_sample`` divides by the same numbers.
    """
    per_tensor = torch.stack([v.mean() for v in var.split(sizes)]).sqrt().clamp_min(1e-30)
    ends = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    counts = [
        -(-hi // stride) - -(-lo // stride) for lo, hi in zip(ends[:-1], ends[1:], strict=True)
    ]
    return per_tensor.repeat_interleave(torch.tensor(counts, device=var.device))


def hill_k(n_samples: int, fraction: float, min_k: int = 10) -> int:
    """Number k of upper order statistics the Hill estimator uses: max(min_k, fraction * n).

    k trades bias against variance: the estimator's standard error is about
    alpha / sqrt(k), while its bias grows with k as the tail departs from an
    exact power law (for Student-t with nu degrees of freedom the relative bias
    is of order (k / n)^(2 / nu)). The result is capped at n - 1.
    """
    return max(1, min(n_samples - 1, max(min_k, int(fraction * n_samples))))


def hill_tail_index(top_values: torch.Tensor, k: int) -> float:
    """Hill (1975) estimate of the tail index alpha from the k + 1 largest absolute values.

    alpha_hat = k / sum_{i=1..k} ln(X_(i) / X_(k+1)),  X_(1) >= X_(2) >= ...

    For a regularly varying tail P(|X| > x) ~ L(x) x^(-alpha), alpha_hat is
    consistent as k -> inf and k / n -> 0, asymptotically normal with variance
    alpha^2 / k. ``top_values`` may hold more than k + 1 values and need not be
    sorted. Returns NaN when X_(k+1) is zero (no tail to measure).
    """
    ordered = torch.sort(top_values.double().abs(), descending=True).values[: k + 1]
    threshold = float(ordered[k])
    if threshold <= 0 or not math.isfinite(threshold):
        return math.nan
    log_excess = float(torch.log(ordered[:k] / threshold).sum())
    return k / log_excess if log_excess > 0 else math.inf


def largest_abs(values: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` largest absolute values of ``values`` (any shape), descending.

    The k + 1 largest values of a pooled sample are among the union of each
    worker's k + 1 largest, so gathering these from every worker gives the Hill
    estimate of the pooled sample exactly.
    """
    flat = values.reshape(-1).abs()
    return torch.topk(flat, min(count, flat.numel())).values
