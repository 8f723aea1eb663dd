"""The P-NE logger under DistributedDataParallel equals the single-process logger.

Two gloo processes train the study's GPT (a tiny configuration) exactly as
``training/train.py`` does: on logging steps all K micro-backwards under
``no_sync()`` and the gradients averaged by hand, on other steps DDP's own sync
on the last micro-batch. Every logged quantity, including the parts pooled by
collectives (moments, the randomized sketch with D > sketch width, the strided
Hill sample, the Hessian's Hutchinson trace averaged over workers), must equal that of one
process running the same global batch as 2K micro-batches. Equality here is up to
float rounding, not sampling error: both see the same micro-batch means.
"""

from __future__ import annotations

import contextlib
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gradnoise.estimation.logger import NoiseLogger
from training.model import GPT, GPTConfig, lm_loss

VOCAB, BLOCK, MICRO, N_MICRO_TOTAL, STEPS, LOG_INTERVAL = 32, 16, 2, 4, 7, 3
SETTINGS = {
    "sketch_width": 512,
    "hill_max_samples": 20_000,
    "proxies": ("ggn", "true_fisher", "hessian"),
}
# Probes through the logits are drawn per position: W = 2 draws other probes for the same
# examples than W = 1, so these agree in expectation only (tests/gradnoise/test_pne_curvature.py).
SAMPLED = ("ggn", "true_fisher")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (256, BLOCK + 1), generator=torch.Generator().manual_seed(0))


def simulate(rank: int, world: int, streaming: bool = False) -> list[dict]:
    """Train STEPS steps as the trainer does; return this rank's logger records."""
    data = tokens()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=32))
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # eps = 1e-4 bounds P by 1e4: the key bias of attention has an analytically zero gradient,
    # so with eps = 1e-8 its P (up to 1e8) amplifies rounding noise in the Hessian-vector
    # products, which would differ between W = 1 and W = 2 for reasons unrelated to pooling.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-4)
    n_micro = N_MICRO_TOTAL // world
    logger = NoiseLogger(
        net, optimizer, n_micro=n_micro, micro_batch_size=MICRO, world_size=world,
        log_interval=LOG_INTERVAL, streaming=streaming, **SETTINGS,
    )  # fmt: skip
    probe = data[:8].view(world, -1, BLOCK + 1)[rank]  # each worker: its half of the probe batch

    def logits_closure() -> tuple[torch.Tensor, torch.Tensor]:
        return model(probe[:, :-1]), probe[:, 1:]

    gen = torch.Generator().manual_seed(1)
    records = []
    for step in range(1, STEPS + 1):
        log_step = logger.is_log_step(step)
        logger.begin_step(step)
        batch = data[torch.randperm(len(data), generator=gen)[: MICRO * N_MICRO_TOTAL]]
        local = batch.view(world, -1, BLOCK + 1)[rank]
        for j in range(n_micro):
            seq = local[j * MICRO : (j + 1) * MICRO]
            sync = world > 1 and not log_step and j == n_micro - 1
            with net.no_sync() if world > 1 and not sync else contextlib.nullcontext():
                (lm_loss(net(seq[:, :-1]), seq[:, 1:]) / n_micro).backward()
            logger.after_micro_backward()
        if world > 1 and log_step:
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        clip_coef = min(1.0, 1.0 / (grad_norm + 1e-6))
        optimizer.step()
        record = logger.after_update(1e-2, grad_norm, clip_coef, logits_closure)
        optimizer.zero_grad(set_to_none=True)
        if record is not None:
            records.append(record)
    return records


def _worker(rank: int, world: int, port: int, out_path: str, streaming: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        records = simulate(rank, world, streaming)
        torch.save(records, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


def _same(a: float, b: float, scale: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-3 * max(abs(a), abs(b)) + 1e-6 * scale


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["snapshots", "streaming"])
def test_ddp_logger_equals_single_process_logger(tmp_path, streaming):
    single = simulate(0, 1, streaming)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_path = str(tmp_path / "records")
    mp.spawn(_worker, args=(2, port, out_path, streaming), nprocs=2, join=True)
    rank0, rank1 = torch.load(f"{out_path}.0"), torch.load(f"{out_path}.1")
    assert len(single) == len(rank0) == 4, "logging steps 1, 2, 3 and 6"
    for one, two, other in zip(single, rank0, rank1, strict=True):
        assert not math.isnan(one["hill_tail_index"]) and not math.isnan(one["trace_php_hessian"])
        for key, value in one.items():
            if key == "layers":
                continue
            if any(proxy in key for proxy in SAMPLED):
                assert two[key] == other[key] and 0 < two[key] < math.inf, f"{key} across ranks"
                continue
            if key == "b_simple" and abs(one["grad_sq"]) < 1e-3 * one["trace_cov"]:
                continue  # |G|^2 within rounding of 0: Tr(C)/|G|^2 is +-huge or inf at random
            scale = one["trace_cov"] if key == "grad_sq" else abs(value)
            assert _same(two[key], value, scale), f"{key}: W=2 {two[key]!r} vs W=1 {value!r}"
            assert _same(other[key], two[key], scale), f"{key} differs between the two ranks"
        for layer_one, layer_two in zip(one["layers"], two["layers"], strict=True):
            assert layer_one["layer"] == layer_two["layer"]
            assert layer_two["trace_pcp"] == pytest.approx(layer_one["trace_pcp"], rel=1e-3)
