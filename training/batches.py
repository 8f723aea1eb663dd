"""The step's batch: which sequences (the seed's data order) and their gradient.

``batch_indices`` gives the positions of a global batch in the seed's epoch
permutations, the same for every condition of a seed; ``accumulate_gradient`` runs
a worker's share of it as the K micro-batches or in one group, in passes of at most
``forward_chunk`` sequences, so that ``.grad`` holds the share's mean gradient.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch

from training.config import TrainConfig


def batch_indices(seed: int, start: int, count: int, n_train: int) -> torch.Tensor:
    """Indices of global-batch positions [start, start + count) of the seed's data order.

    The order is a fresh permutation per epoch, drawn from (seed, epoch) alone, so
    every condition with the same seed sees the same sequences in the same order.
    """
    positions = torch.arange(start, start + count)
    epochs = positions // n_train
    out = torch.empty(count, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        mask = epochs == epoch
        out[mask] = epoch_order(seed, epoch, n_train)[positions[mask] % n_train]
    return out


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n_train: int) -> torch.Tensor:
    """The permutation of the training split used in ``epoch`` (drawn once, then reused)."""
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def forward_chunk(train_cfg: TrainConfig, size: int) -> int:
    """Sequences per forward/backward pass over a group of ``size`` sequences (a micro-batch
    of m, or a step's whole local batch of m K): all of them, or fewer when
    ``train.micro_batch_max`` caps it (memory of large batches at the paper scale).

    A capped group runs in ceil(size / cap) passes whose gradients accumulate, each
    loss weighted by its share of the group: the group's gradient, hence the K
    micro-batch means the P-NE logger sees, are those of one pass (up to rounding).
    """
    cap = train_cfg.micro_batch_max
    return size if cap is None else max(1, min(cap, size))


def accumulate_gradient(
    forward: torch.nn.Module,
    net: torch.nn.Module,
    loss_of: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    batch_of: Callable[[torch.Tensor], torch.Tensor],
    local: torch.Tensor,
    group: int,
    chunk: int,
    autocast: torch.autocast,
    sync: bool,
    after_group: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward passes over this worker's share ``local`` of the step's batch.

    ``local`` splits into groups of ``group`` sequences (the K micro-batches, or one
    group of all m K), each group into passes of at most ``chunk``. A pass's loss is
    weighted by its share of its group and each group by 1 / (number of groups), so
    ``.grad`` accumulates the mean gradient of ``local`` however it is split (up to
    rounding). ``after_group`` runs after each group's last backward (the micro-batch
    hooks of the P-NE logger and the noise arm). Under DDP (``net`` wrapped) only the
    last pass all-reduces, and only when ``sync``; the others run under ``no_sync``.

    Returns the mean loss of ``local`` (a device scalar: no sync per pass) and the
    last pass's sequences.
    """
    distributed = isinstance(net, torch.nn.parallel.DistributedDataParallel)
    n_groups = len(local) // group
    total = torch.zeros((), device=next(net.parameters()).device)
    for j in range(n_groups):
        members = local[j * group : (j + 1) * group]
        for c in range(0, group, chunk):
            seq = batch_of(members[c : c + chunk])
            last = j == n_groups - 1 and c + chunk >= group
            quiet = distributed and not (sync and last)
            with net.no_sync() if quiet else contextlib.nullcontext():
                with autocast:
                    # the group's mean loss / (number of groups), each pass weighted by its
                    # share of the group (a factor of exactly 1.0 in a single pass)
                    loss = loss_of(forward, seq) * (len(seq) / group) / n_groups
                loss.backward()
            total += loss.detach()
        if after_group is not None:
            after_group()
    return total, seq
