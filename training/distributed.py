"""Where a run's worker runs: its device, the process group under torchrun, and the
gradient average of a logging step (whose micro-batches run without DDP's sync)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from training.config import StudyConfig


def run_device(cfg: StudyConfig) -> torch.device:
    """CPU, or this worker's GPU (LOCAL_RANK under torchrun) when the config asks for cuda."""
    if cfg.device != "cuda":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("config asks for device 'cuda' but no GPU is visible")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def all_reduce_mean_grads(model: torch.nn.Module, world: int) -> None:
    """Average ``.grad`` over the W workers (a sum by all-reduce, then / W)."""
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
