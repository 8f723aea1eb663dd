"""Pooling the P-NE logger's per-worker statistics across data-parallel workers.

Each worker holds the moments of the K micro-batch mean gradients of its own
share of the global batch. The estimate needs moments over all n = K * W of
them: two all-reduces of per-coordinate statistics, then one small all-gather of
the sketch rows and tail values. With W = 1 nothing is communicated.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def check_world(world_size: int, group=None) -> None:
    """With W > 1 the default process group must be up and hold exactly W workers."""
    if world_size == 1:
        return
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"NoiseLogger(world_size={world_size}) needs torch.distributed initialised "
            "(init_process_group) before it is built"
        )
    actual = dist.get_world_size(group)
    if actual != world_size:
        raise ValueError(f"NoiseLogger(world_size={world_size}) but the process group has {actual}")


def pool_moments_(
    mean: torch.Tensor, m2: torch.Tensor, n_local: int, world_size: int, group=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """In place: per-coordinate mean and unbiased variance over all workers' micro-batch means.

    ``mean`` (D,) and ``m2`` (D,) hold this worker's mean mu_w of its n_local = K
    means and M2_w = sum_j (g_j - mu_w)^2 (Welford, ``training.pne_stream``). Two
    in-place all-reduces, of K mu_w and of M2_w + K mu_w^2, give the pooled mean
    G_bar and M2 = sum_w (M2_w + K mu_w^2) - n G_bar^2 (Chan, Golub & LeVeque
    1983), whose cancellation touches only the between-worker part. Returns
    (G_bar, M2 / (n - 1)) in the buffers of ``mean`` and ``m2``: the unbiased
    variance of the n = K * W micro-batch means, with no extra gradient-sized memory.
    """
    n = n_local * world_size
    if world_size > 1:
        m2.addcmul_(mean, mean, value=n_local)
        mean.mul_(n_local)
        dist.all_reduce(mean, group=group)
        dist.all_reduce(m2, group=group)
        mean.div_(n)
        m2.addcmul_(mean, mean, value=-n).clamp_min_(0.0)
    return mean, m2.div_(n - 1)


def gather_pair(
    rows: torch.Tensor, values: torch.Tensor, world_size: int, group=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather ``rows`` (K, s) and ``values`` (k,) of every worker in one message, in rank order.

    Returns (W K, s) and (W k,). Every worker must pass the same shapes.
    """
    packed = torch.cat([rows.reshape(-1).float(), values.float()])
    parts = [torch.empty_like(packed) for _ in range(world_size)]
    dist.all_gather(parts, packed, group=group)
    gathered_rows = torch.cat([p[: rows.numel()].view_as(rows) for p in parts])
    gathered_values = torch.cat([p[rows.numel() :] for p in parts])
    return gathered_rows, gathered_values


def mean_over_workers(
    value: float, world_size: int, group=None, device: torch.device | str = "cpu"
) -> float:
    """The mean of a scalar over all workers (float64 all-reduce on ``device``, e.g. NCCL's GPU)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, group=group)
    return float(tensor) / world_size
