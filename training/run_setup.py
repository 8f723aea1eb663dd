"""What a run builds before its first step: shapes, model, optimizer, logger, noise arm.

``setup_run`` turns a run's spec and config into a ``RunSetup``: the per-worker
micro-batch m = B / (K W), the step budget max_steps = token_cap / (B T), the
validation schedule, the model (wrapped in DDP under ``torchrun``, compiled when
``train.compile`` asks), AdamW, the P-NE logger (``gradnoise.NoiseLogger``) and the
run's noise arm (``training.noise_arms``). The training loop (``training.train``)
reads everything it needs from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.distributed as dist

from gradnoise import NoiseLogger
from preregistration.design import RunSpec
from training.config import StudyConfig, TrainConfig
from training.distributed import run_device
from training.model_setup import checkpoint_activations, make_optimizer
from training.noise_arms import NoiseArm
from training.stopping import ValidationSchedule
from training.task_family import TaskFamily, task_family


@dataclass
class RunSetup:
    """A run's fixed parts: its shapes, data, model and the objects that act on it."""

    spec: RunSpec
    cfg: StudyConfig
    world: int  # W workers
    rank: int
    n_micro: int  # K micro-batches per step and worker
    micro: int  # m sequences per micro-batch
    tokens_per_step: int  # B T
    max_steps: int  # the token cap in steps
    schedule: ValidationSchedule
    device: torch.device
    autocast: torch.autocast
    family: TaskFamily
    train: torch.Tensor
    val: torch.Tensor
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DDP wrapper
    forward: torch.nn.Module  # net, or torch.compile(net)
    optimizer: torch.optim.Optimizer
    logger: NoiseLogger
    arm: NoiseArm

    @property
    def train_cfg(self) -> TrainConfig:
        return self.cfg.train


def logged_proxies(train_cfg: TrainConfig, arm: str) -> tuple[str, ...]:
    """The extra curvature proxies a run of ``arm`` logs for the sensitivity table.

    ``train.curvature_proxies`` names them; ``train.curvature_proxy_arms``, when set,
    limits them to the runs of those arms (the sensitivity table compares those runs).
    They are measurements only: the logger draws its probes from its own generators
    and leaves ``.grad`` alone, so a run's updates are the same with or without them.
    """
    arms = train_cfg.curvature_proxy_arms
    if arms is not None and arm not in arms:
        return ()
    return tuple(train_cfg.curvature_proxies)


def setup_run(
    spec: RunSpec, cfg: StudyConfig, corpus: dict | None, reference_trace: pd.DataFrame | None
) -> RunSetup:
    """Build a run: check B = m K W, seed torch with the run's seed, build its parts."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    train_cfg, model_cfg = cfg.train, cfg.model
    n_micro = train_cfg.n_micro
    if spec.global_batch % (n_micro * world):
        raise ValueError(
            f"run {spec.run_id}: global batch {spec.global_batch} is not divisible by "
            f"n_micro * world_size = {n_micro} * {world}"
        )
    micro = spec.global_batch // (n_micro * world)
    tokens_per_step = spec.global_batch * model_cfg.block_size
    device = run_device(cfg)
    # bf16 autocast on GPUs (DESIGN §7); the P-NE logger always reads fp32 gradients.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    torch.manual_seed(spec.seed)
    family, corpus = task_family(cfg, corpus)
    model = family.build(model_cfg, corpus).to(device)
    if train_cfg.activation_checkpointing:
        checkpoint_activations(model)
    net: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    # The compiled forward shares net's parameters; no_sync and the logger use net itself.
    forward = torch.compile(net) if train_cfg.compile else net
    optimizer = make_optimizer(model, spec.lr_peak, train_cfg)
    logger = NoiseLogger(
        net,
        optimizer,
        n_micro=n_micro,
        micro_batch_size=micro,
        world_size=world,
        log_interval=train_cfg.log_interval,
        curvature=train_cfg.curvature,
        proxies=logged_proxies(train_cfg, spec.arm),
        curvature_probes=train_cfg.curvature_probes,
        streaming=train_cfg.pne_streaming,
    )
    arm = NoiseArm(spec, model, optimizer, logger, n_micro, micro, world, reference_trace)
    return RunSetup(
        spec=spec,
        cfg=cfg,
        world=world,
        rank=rank,
        n_micro=n_micro,
        micro=micro,
        tokens_per_step=tokens_per_step,
        max_steps=max(1, spec.token_cap // tokens_per_step),
        schedule=ValidationSchedule(spec.target_val_loss, *spec.validation),
        device=device,
        autocast=autocast,
        family=family,
        train=corpus["train"],
        val=corpus["val"],
        model=model,
        net=net,
        forward=forward,
        optimizer=optimizer,
        logger=logger,
        arm=arm,
    )
