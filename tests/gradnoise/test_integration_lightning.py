"""The Lightning adapter logs what the manual-mode NoiseLogger logs on the same training.

A tiny classifier trains for a few optimizer steps with gradient accumulation, norm
clipping that binds and AdamW, once under ``lightning.pytorch.Trainer`` with
``gradnoise.integrations.lightning.NoiseCallback`` and once in a plain loop that drives
``NoiseLogger`` by hand (the loop of its docstring) from the same initial weights,
batches in the same order and the same optimizer. Every step logs (log_interval=1); the
records of the two must agree in every numeric column up to float rounding, and the
columns the callback sends to Lightning's loggers must be those records.

With two gloo workers (Lightning's ``ddp`` strategy in processes this test spawns, as
torchrun would) the reference is the manual mode with W = 2 as the study's trainer drives
it (``tests/gradnoise/test_pne_exact.py``): each worker takes the examples, in the order, that
Lightning's ``DistributedSampler`` gives it (shuffled, seed 0, every second example of
the permutation), runs its K micro-batches under ``no_sync`` and averages the gradients
over the workers itself.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections import OrderedDict

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.loggers import Logger
from torch.utils.data import DistributedSampler

from gradnoise.estimation.logger import NoiseLogger
from gradnoise.integrations.lightning import NoiseCallback

D_IN, HIDDEN, CLASSES = 6, 8, 4
MICRO, STEPS, LR, MAX_NORM = 4, 5, 1e-2, 0.05  # MAX_NORM below the gradient norm: clips
OPTIONS = {"log_interval": 1, "sketch_width": 64, "hill_max_samples": 4096}
REL = 1e-5  # float rounding: both sides compute the same sums in another order


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_data(n_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(n_examples, D_IN, generator=gen)
    labels = torch.randint(0, CLASSES, (n_examples,), generator=gen)
    return inputs, labels


class Classifier(pl.LightningModule):
    """Two layers and cross-entropy, the mean over the micro-batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(
            OrderedDict(
                hidden=torch.nn.Linear(D_IN, HIDDEN),
                act=torch.nn.Tanh(),
                out=torch.nn.Linear(HIDDEN, CLASSES),
            )
        )

    def training_step(self, batch, batch_idx):
        inputs, labels = batch
        return torch.nn.functional.cross_entropy(self.net(inputs), labels)

    def configure_optimizers(self):
        return make_optimizer(self.parameters())


def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), weight_decay=0.1)


class MemoryLogger(Logger):
    """A Lightning logger that keeps what it is given."""

    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.logged.append((step, dict(metrics)))


def fit_lightning(root, n_micro: int, world: int) -> tuple[NoiseCallback, MemoryLogger]:
    """Train under Lightning with the callback; W = world workers (already started)."""
    inputs, labels = make_data(STEPS * n_micro * MICRO * world)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, labels), batch_size=MICRO, shuffle=False
    )
    callback, memory = NoiseCallback(**OPTIONS), MemoryLogger()
    trainer = pl.Trainer(
        accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto",
        max_steps=STEPS, accumulate_grad_batches=n_micro, gradient_clip_val=MAX_NORM,
        logger=memory, callbacks=[callback], default_root_dir=root,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Classifier(), loader)
    return callback, memory


def manual_records(n_micro: int, rank: int = 0, world: int = 1) -> list[dict]:
    """The reference: NoiseLogger driven by hand on this worker's share of every batch."""
    inputs, labels = make_data(STEPS * n_micro * MICRO * world)
    model = Classifier()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = make_optimizer(model.parameters())
    logger = NoiseLogger(
        net, optimizer, n_micro=n_micro, micro_batch_size=MICRO, world_size=world, **OPTIONS
    )
    # Lightning's order: a DistributedSampler with shuffle=True and seed 0 for training, epoch 0
    shard = torch.arange(len(inputs))
    if world > 1:
        sampler = DistributedSampler(shard, num_replicas=world, rank=rank, shuffle=True, seed=0)
        shard = torch.tensor(list(sampler))
    records = []
    for step in range(1, STEPS + 1):
        logger.begin_step(step)
        window = shard[(step - 1) * n_micro * MICRO : step * n_micro * MICRO]
        with net.no_sync() if world > 1 else contextlib.nullcontext():
            for idx in window.view(n_micro, MICRO):
                batch = (inputs[idx], labels[idx])
                (model.training_step(batch, 0) / n_micro).backward()
                logger.after_micro_backward()
        if world > 1:
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM))
        clip_coef = min(1.0, MAX_NORM / (grad_norm + 1e-6))
        optimizer.step()
        records.append(logger.after_update(LR, grad_norm, clip_coef))
        optimizer.zero_grad(set_to_none=True)
    return records


def numeric(record: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def assert_same_records(got: list[dict], expected: list[dict]) -> None:
    """Every numeric column of the manual-mode records, equal up to float rounding."""
    assert len(got) == len(expected) == STEPS, "every step logs (log_interval=1)"
    for step, (one, ref) in enumerate(zip(got, expected, strict=True), start=1):
        ref_columns = numeric(ref)
        assert ref_columns.keys() <= numeric(one).keys(), f"step {step}: columns missing"
        assert ref["clip_rate"] == 1.0, "the clipping binds, so clip_coef matters"
        for key, value in ref_columns.items():
            scale = ref["trace_cov"] if key == "grad_sq" else abs(value)
            if key == "b_simple" and abs(ref["grad_sq"]) < 1e-3 * ref["trace_cov"]:
                continue  # |G|^2 within rounding of 0: Tr(C) / |G|^2 is huge, of either sign
            assert _same(one[key], value, scale), f"step {step} {key}: {one[key]!r} vs {value!r}"


def _same(a: float, b: float, scale: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= REL * max(abs(a), abs(b)) + 1e-9 * scale


def test_lightning_callback_logs_the_manual_records(tmp_path):
    n_micro = 4
    callback, memory = fit_lightning(tmp_path, n_micro, world=1)
    assert callback.tap is None, "detached when fit ends"
    assert_same_records(callback.records, manual_records(n_micro))
    assert [step for step, _ in memory.logged] == list(range(1, STEPS + 1))
    for (_, columns), record in zip(memory.logged, callback.records, strict=True):
        assert columns == {f"pne/{k}": v for k, v in numeric(record).items()}


def test_lightning_callback_refuses_a_short_last_window(tmp_path):
    """An epoch of 5 batches with K = 2 would end on a step of one micro-batch."""
    inputs, labels = make_data(5 * MICRO)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, labels), batch_size=MICRO
    )
    callback = NoiseCallback(**OPTIONS)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, accumulate_grad_batches=2, logger=False,
        callbacks=[callback], default_root_dir=tmp_path, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="not a multiple of accumulate_grad_batches=2"):
        trainer.fit(Classifier(), loader)
    assert callback.tap is None


def _worker(rank: int, world: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    # what torchrun sets: Lightning then runs in these processes instead of launching its own
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")  # fmt: skip
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n_micro = 2
        manual = manual_records(n_micro, rank, world)
        callback, _ = fit_lightning(root, n_micro, world)
        torch.save({"manual": manual, "lightning": callback.records}, f"{root}/records.{rank}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_lightning_callback_under_ddp_logs_the_manual_records(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        out = torch.load(tmp_path / f"records.{rank}")
        assert_same_records(out["lightning"], out["manual"])
