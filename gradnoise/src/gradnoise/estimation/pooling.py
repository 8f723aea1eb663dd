"""Pooling the P-NE logger's per-worker statistics across data-parallel workers.

Each worker holds the K micro-batch mean gradients of its own share of the
global batch. The estimate needs moments over all n = K * W of them: one
all-reduce of per-coordinate statistics, then one small all-gather of the
sketch rows and tail values. With W = 1 nothing is communicated.
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


def pooled_moments(
    micro: torch.Tensor, world_size: int, group=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate mean and unbiased variance over all workers' micro-batch means.

    ``micro`` (K, D) holds this worker's K means. Each worker centres its own
    means first (two passes, accurate in fp32): mu_w and M2_w = sum_j (g_j - mu_w)^2.
    One all-reduce of [K mu_w, M2_w + K mu_w^2] gives the pooled mean G_bar and
    M2 = sum_w (M2_w + K mu_w^2) - n G_bar^2 (Chan, Golub & LeVeque 1983), whose
    cancellation touches only the between-worker part. Returns (G_bar,
    M2 / (n - 1)), the unbiased variance of the n = K * W micro-batch means.
    """
    n_local = micro.shape[0]
    n = n_local * world_size
    local_mean = micro.mean(0)
    local_m2 = torch.zeros_like(local_mean)
    for row in micro:  # row by row: a (D,) temporary, not (K, D); var_mean(dim=0) is slow on CPU
        centred = row - local_mean
        local_m2.addcmul_(centred, centred)
    if world_size == 1:
        return local_mean, local_m2 / (n - 1)
    packed = torch.cat([n_local * local_mean, local_m2 + n_local * local_mean**2])
    dist.all_reduce(packed, group=group)
    total, second = packed.split(local_mean.numel())
    mean = total / n
    return mean, (second - n * mean**2).clamp_min(0.0) / (n - 1)


def pool_moments_(
    mean: torch.Tensor, m2: torch.Tensor, n_local: int, world_size: int, group=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pooled_moments`` in place, from streamed moments (``gradnoise.estimation.micro_stream``).

    ``mean`` (D,) and ``m2`` (D,) hold this worker's mean mu_w of its n_local = K
    micro-batch means and M2_w = sum_j (g_j - mu_w)^2. Two in-place all-reduces,
    of K mu_w and of M2_w + K mu_w^2, give the pooled mean G_bar and
    M2 = sum_w (M2_w + K mu_w^2) - n G_bar^2 (Chan, Golub & LeVeque 1983). Returns
    (G_bar, M2 / (n - 1)) in the buffers of ``mean`` and ``m2``: no extra memory.
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
