"""The training loop of one run: one straight path from batch to logged trace.

Per optimizer step: learning rate from the schedule, the forward and backward
passes (gradient accumulation), gradient clipping, the AdamW step, and the P-NE
logger's bookkeeping. The K micro-batches run as separate passes only where their
gradients are read (the logger's logging steps, the anisotropic and NAP noise arms);
every other step runs its batch in as few passes as ``train.micro_batch_max``
allows. The run measures its validation loss on the registered schedule in tokens
(``training.stopping``) and stops at the first validation at or below the target
(DESIGN §3 stopping). The trace has a row at every logging step of the P-NE logger
and at every validation (a validation step is always a logging step, so the stop
step's exposure is in the trace). A non-finite loss ends the run with status
``diverged`` and a last row that shows it; it is recorded, never raised.

Runs in one process or under ``torchrun`` (DistributedDataParallel, gloo or NCCL):
each of the W workers takes its share of every global batch. The same loop serves
both scales (DESIGN §7): on GPUs AdamW runs fused, and the train config may ask for
``compile`` (``torch.compile`` of the forward pass) and ``activation_checkpointing``
(blocks recompute their activations in the backward pass, for the 1.3B model).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from gradnoise import NoiseLogger
from preregistration.design import RunSpec
from training.checkpoints import save_plain
from training.distributed import all_reduce_mean_grads, run_device
from training.model import GPT
from training.model_setup import checkpoint_activations, make_optimizer
from training.noise_arms import NoiseArm
from training.resume import load_resume_state, save_resume_state
from training.stopping import ValidationSchedule
from training.task_family import task_family
from training.tensorboard_log import tensorboard_log

PACKAGES = ("torch", "numpy", "pandas", "snakemake", "statsmodels", "pingouin", "scikit-learn")


@dataclass
class RunResult:
    status: str  # reached_target | token_cap | diverged
    steps: int
    tokens: int
    final_val_loss: float
    wall_time_s: float
    trace: pd.DataFrame  # one row per logged step (preregistration.tables STEPS)
    layers: pd.DataFrame  # per-layer breakdown at logged steps (may be empty)
    noise_control: dict = field(default_factory=dict)  # meta.json noise_control (issue 10)


def lr_at(step: int, lr_peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to ``lr_peak`` over ``warmup`` steps, then cosine decay to min_ratio * peak."""
    if step <= warmup:
        return lr_peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


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


def logged_proxies(train_cfg: dict, arm: str) -> tuple[str, ...]:
    """The extra curvature proxies a run of ``arm`` logs for the sensitivity table.

    ``train.curvature_proxies`` names them; ``train.curvature_proxy_arms``, when set,
    limits them to the runs of those arms (the sensitivity table compares those runs).
    They are measurements only: the logger draws its probes from its own generators
    and leaves ``.grad`` alone, so a run's updates are the same with or without them.
    """
    arms = train_cfg.get("curvature_proxy_arms")
    if arms is not None and arm not in arms:
        return ()
    return tuple(train_cfg.get("curvature_proxies", ()))


def forward_chunk(train_cfg: dict, size: int) -> int:
    """Sequences per forward/backward pass over a group of ``size`` sequences (a micro-batch
    of m, or a step's whole local batch of m K): all of them, or fewer when
    ``train.micro_batch_max`` caps it (memory of large batches at the paper scale).

    A capped group runs in ceil(size / cap) passes whose gradients accumulate, each
    loss weighted by its share of the group: the group's gradient, hence the K
    micro-batch means the P-NE logger sees, are those of one pass (up to rounding).
    """
    cap = train_cfg.get("micro_batch_max")
    return size if cap is None else max(1, min(int(cap), size))


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


def package_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in PACKAGES}


def train_run(
    spec: RunSpec,
    cfg: dict,
    corpus: dict,
    show_progress: bool = True,
    resume_path: Path | None = None,
    reference_trace: pd.DataFrame | None = None,
    tensorboard_dir: Path | None = None,
) -> tuple[GPT, RunResult]:
    """Train one run of the study to its target loss or token cap; return model and trace.

    With ``resume_path`` the run saves its state there after every
    ``checkpoint_interval`` logged steps (train config, default 10) and, when the
    file exists at start, continues from it: a run killed and restarted gives the
    same trace and model as one that was never interrupted.

    ``spec.noise`` selects the run's noise options (``training.noise_arms``);
    ``reference_trace`` is the trace of ``spec.reference`` when the run has one.
    With ``train.tensorboard`` on, rank 0 also writes every trace row as TensorBoard
    scalars into ``tensorboard_dir`` (``training.tensorboard_log``).
    """
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    train_cfg, model_cfg = cfg["train"], cfg["model"]
    n_micro = int(train_cfg["n_micro"])
    if spec.global_batch % (n_micro * world):
        raise ValueError(
            f"run {spec.run_id}: global batch {spec.global_batch} is not divisible by "
            f"n_micro * world_size = {n_micro} * {world}"
        )
    micro = spec.global_batch // (n_micro * world)
    block = int(model_cfg["block_size"])
    tokens_per_step = spec.global_batch * block
    max_steps = max(1, spec.token_cap // tokens_per_step)
    schedule = ValidationSchedule(spec.target_val_loss, *spec.validation)

    device = run_device(cfg)
    # bf16 autocast on GPUs (DESIGN §7); the P-NE logger always reads fp32 gradients.
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=cfg.get("dtype", "float32") == "bfloat16"
    )
    torch.manual_seed(spec.seed)
    family, corpus = task_family(cfg, corpus)
    model = family.build(model_cfg, corpus).to(device)
    if train_cfg.get("activation_checkpointing", False):
        checkpoint_activations(model)
    net: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    # The compiled forward shares net's parameters; no_sync and the logger use net itself.
    forward = torch.compile(net) if train_cfg.get("compile", False) else net
    optimizer = make_optimizer(model, spec.lr_peak, train_cfg)
    logger = NoiseLogger(
        net,
        optimizer,
        n_micro=n_micro,
        micro_batch_size=micro,
        world_size=world,
        log_interval=int(train_cfg["log_interval"]),
        curvature=train_cfg.get("curvature", "fisher"),
        proxies=logged_proxies(train_cfg, spec.arm),
        curvature_probes=int(train_cfg.get("curvature_probes", 1)),
        streaming=bool(train_cfg.get("pne_streaming", False)),
    )
    arm = NoiseArm(spec, model, optimizer, logger, n_micro, micro, world, reference_trace)
    train, val = corpus["train"], corpus["val"]

    rows: list[dict] = []
    layer_rows: list[dict] = []
    status, val_loss, step = "token_cap", math.nan, 0
    first_step, wall_before = 1, 0.0
    if resume_path is not None and Path(resume_path).exists():
        state = load_resume_state(Path(resume_path), spec, cfg, model, optimizer, logger)
        arm.load_state_dict(state["noise"])
        rows, layer_rows = state["rows"], state["layer_rows"]
        first_step, wall_before = state["step"] + 1, state["wall_time_s"]
        val_loss = next((r["val_loss"] for r in reversed(rows) if r["validated"]), math.nan)
    # a state saved at the last step leaves no step to take: the run is the saved one
    step = first_step - 1
    checkpoint_every = int(train_cfg.get("checkpoint_interval", 10))
    board = tensorboard_log(train_cfg, tensorboard_dir, rank, first_step)
    start = time.perf_counter()
    bar = tqdm(
        initial=(first_step - 1) * tokens_per_step,
        total=max_steps * tokens_per_step,
        unit="tok",
        unit_scale=True,
        desc=spec.run_id,
        disable=not show_progress or rank != 0,
        mininterval=2.0,
    )
    for step in range(first_step, max_steps + 1):
        lr = lr_at(
            step,
            spec.lr_peak,
            int(train_cfg["warmup_steps"]),
            max_steps,
            float(train_cfg["min_lr_ratio"]),
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        validate = schedule.due(step, tokens_per_step, max_steps, val_loss)
        log_step = validate or logger.is_log_step(step)
        logger.begin_step(step, log=log_step)
        batch = batch_indices(
            spec.seed, (step - 1) * spec.global_batch, spec.global_batch, len(train)
        )
        local = batch[rank * micro * n_micro : (rank + 1) * micro * n_micro]
        # The K micro-batches run apart only when their gradients are read (logging steps,
        # the anisotropic and NAP arms); otherwise the local batch runs in as few passes
        # as train.micro_batch_max allows, with the same mean gradient.
        by_micro = log_step or arm.needs_micro_gradients
        group = micro if by_micro else micro * n_micro
        train_loss, seq = accumulate_gradient(
            forward, net, family.loss, lambda idx: family.batch(train, idx).to(device), local,
            group=group, chunk=forward_chunk(train_cfg, group),
            autocast=autocast, sync=not log_step,
            after_group=functools.partial(after_micro, logger, arm) if by_micro else None,
        )  # fmt: skip
        if world > 1 and log_step:
            all_reduce_mean_grads(model, world)
        if world > 1:
            dist.all_reduce(train_loss)
            train_loss /= world
        train_loss = float(train_loss)
        arm.before_clip(step, lr, val_loss)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg["grad_clip"])
        )
        step_row = {
            "run_id": spec.run_id,
            "step": step,
            "tokens": step * tokens_per_step,
            "lr": lr,
            "train_loss": train_loss,
            "grad_norm": grad_norm,
            "global_batch": spec.global_batch,
        }
        if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
            # No update is applied: the row shows the loss and the exposure so far.
            status = "diverged"
            rows.append(step_row | divergence_record(logger, validated=False))
            if board is not None:
                board.write(rows[-1])
            break
        clip_coef = min(1.0, train_cfg["grad_clip"] / (grad_norm + 1e-6))
        arm.optimizer_step(step)
        arm.after_optimizer_step(lr)
        closure = None
        if log_step and logger.needs_logits:
            # Curvature at the updated parameters, on the step's last forward pass's sequences.
            def closure(seq=seq):
                return model(seq[:, :-1]), seq[:, 1:]

        record = logger.after_update(lr, grad_norm, clip_coef, logits_closure=closure)
        arm.after_logger(step)
        optimizer.zero_grad(set_to_none=True)
        bar.update(tokens_per_step)
        if record is None:
            continue
        if validate:
            val_loss = family.validation(model, val)
        layers = record.pop("layers", None) or []
        rows.append(
            step_row
            | {"val_loss": val_loss if validate else math.nan, "validated": validate}
            | {"clip_coef": clip_coef, **record}
            | arm.row(step)
        )
        if board is not None:
            board.write(rows[-1])
        layer_rows += [{"run_id": spec.run_id, "step": step, **layer} for layer in layers]
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}", refresh=False)
        outcome = schedule.status(val_loss) if validate else None
        if outcome is not None:
            status = outcome
            break
        if resume_path is not None and rank == 0 and len(rows) % checkpoint_every == 0:
            save_resume_state(
                Path(resume_path), spec, cfg, step, model, optimizer, logger, rows, layer_rows,
                wall_before + time.perf_counter() - start, arm.state_dict(),
            )  # fmt: skip
    bar.close()
    if board is not None:
        board.close()
    result = RunResult(
        status=status,
        steps=step,
        tokens=step * tokens_per_step,
        final_val_loss=math.nan if status == "diverged" else val_loss,
        wall_time_s=wall_before + time.perf_counter() - start,
        trace=pd.DataFrame(rows),
        layers=pd.DataFrame(layer_rows),
        noise_control=arm.summary(),
    )
    return model, result


def after_micro(logger: NoiseLogger, arm: NoiseArm) -> None:
    """The micro-batch hooks: the logger snapshots .grad on logging steps, the arm its own."""
    logger.after_micro_backward()
    arm.after_micro_backward()


def divergence_record(logger: NoiseLogger, validated: bool) -> dict:
    """Trace columns of a step whose loss is not finite: no estimate, the exposure so far.

    The step applied no update, so the integrated exposures are the logger's sums
    up to the previous step; the step's own estimates do not exist (NaN).
    """
    return {
        "val_loss": math.nan,
        "validated": validated,
        "clip_coef": math.nan,
        **logger.divergence_record(),
    }


def save_checkpoint(path: Path, model: GPT, spec: RunSpec, result: RunResult) -> None:
    save_plain(
        {
            "model": model.state_dict(),
            "gpt_config": vars(model.cfg),
            "spec": spec.as_dict(),
            "status": result.status,
            "steps": result.steps,
        },
        path,
    )
