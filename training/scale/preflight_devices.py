"""What the GPU preflight (``training.scale.preflight``) reads off its devices: peak memory,
synchronisation, and the all-reduce of gradient-sized tensors over every GPU.

``allreduce`` times an fp32 all-reduce of each size: NCCL under torchrun with every
visible GPU (each worker is ``python -m training.scale.preflight --allreduce-worker``,
``allreduce_worker``), gloo in one process on a CPU, skipped on a single GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:  # Linux: heap pages freed so far go back first, then VmHWM := the current RSS
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> int:
    """Peak bytes since the last reset: allocated on the GPU, resident on a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) * 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def allreduce_times(numels: list[int], device: torch.device, iters: int) -> list[dict]:
    """Seconds of an all-reduce (sum) of an fp32 tensor of each size, in the current group."""
    world = dist.get_world_size()
    out = []
    for numel in numels:
        grad = torch.ones(numel, dtype=torch.float32, device=device)
        for _ in range(2):  # the communicator's setup and the first buffers
            dist.all_reduce(grad)
        synchronize(device)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(grad)
        synchronize(device)
        seconds = (time.perf_counter() - start) / iters
        nbytes = 4 * numel
        out.append(
            {
                "numel": numel,
                "bytes": nbytes,
                "seconds": seconds,
                "bus_bandwidth_bytes_per_s": 2 * (world - 1) / world * nbytes / seconds
                if world > 1
                else nbytes / seconds,
            }
        )
    return out


def allreduce(numels: list[int], gpus: int, iters: int) -> dict:
    """The all-reduce section: NCCL under torchrun with every GPU, gloo in-process on a CPU,
    skipped on a single GPU (nothing to reduce)."""
    if gpus == 1:
        return {"skipped": "one GPU: a single process has nothing to all-reduce"}
    if gpus == 0:
        with tempfile.TemporaryDirectory() as tmp:
            store = dist.FileStore(str(Path(tmp) / "store"), 1)
            dist.init_process_group("gloo", store=store, rank=0, world_size=1)
            try:
                sizes = allreduce_times(numels, torch.device("cpu"), iters)
            finally:
                dist.destroy_process_group()
        return {"backend": "gloo", "world_size": 1, "sizes": sizes}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "allreduce.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={gpus}", "-m", "training.scale.preflight", "--allreduce-worker",
            str(out), "--numels", ",".join(map(str, numels)), "--iters", str(iters),
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": f"torchrun exited {proc.returncode}: {proc.stderr[-2000:]}"}
        return json.loads(out.read_text())


def allreduce_worker(out: Path, numels: list[int], iters: int) -> None:
    """One torchrun worker of :func:`allreduce`; rank 0 writes the result."""
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    try:
        sizes = allreduce_times(numels, torch.device("cuda", local), iters)
        if dist.get_rank() == 0:
            result = {"backend": "nccl", "world_size": dist.get_world_size(), "sizes": sizes}
            out.write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
