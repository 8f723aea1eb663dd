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

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from gradnoise import NoiseLogger
from preregistration.design import RunSpec
from training.batches import accumulate_gradient, batch_indices, forward_chunk
from training.checkpoints import save_plain
from training.config import StudyConfig, study_config
from training.distributed import all_reduce_mean_grads
from training.model import GPT
from training.noise_arms import NoiseArm
from training.recording import ReplayRecording, Segment
from training.resume import load_resume_state, save_resume_state
from training.run_setup import RunSetup, setup_run
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


def package_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in PACKAGES}


def train_run(
    spec: RunSpec,
    cfg: StudyConfig | Mapping,
    corpus: dict,
    show_progress: bool = True,
    resume_path: Path | None = None,
    reference_trace: pd.DataFrame | None = None,
    tensorboard_dir: Path | None = None,
    replay: ReplayRecording | None = None,
    segment: Segment | None = None,
) -> tuple[torch.nn.Module, RunResult]:
    """Train one run of the study to its target loss or token cap; return model and trace.

    With ``resume_path`` the run saves its state there after every
    ``train.checkpoint_interval`` logged steps and, when the
    file exists at start, continues from it: a run killed and restarted gives the
    same trace and model as one that was never interrupted.

    ``spec.noise`` selects the run's noise options (``training.noise_arms``);
    ``reference_trace`` is the trace of ``spec.reference`` when the run has one.
    With ``train.tensorboard`` on, rank 0 also writes every trace row as TensorBoard
    scalars into ``tensorboard_dir`` (``training.tensorboard_log``).

    ``replay`` saves the run's state for counterfactual replay every
    ``replay.every`` steps (``training.recording``); ``segment`` instead
    starts from such a recorded state, stops after ``segment.stop_after`` and calls
    ``segment.observe(step, run, lr)`` once the step's noise is in ``.grad``
    (``training.replay.segment``): the recorded run, regenerated.
    """
    run = setup_run(spec, study_config(cfg), corpus, reference_trace)
    logger, arm, train_cfg = run.logger, run.arm, run.train_cfg
    state = start_state(run, segment.start if segment is not None else resume_path)
    last_step = run.max_steps
    if segment is not None:  # the schedule stays the run's own; only the loop ends early
        resume_path, last_step = None, min(run.max_steps, segment.stop_after)
    board = tensorboard_log(train_cfg, tensorboard_dir, run.rank, state.step + 1)
    bar = progress_bar(run, state.step, show_progress)
    start = time.perf_counter()
    for step in range(state.step + 1, last_step + 1):
        state.step = step
        lr = set_learning_rate(run, step)
        validate = run.schedule.due(step, run.tokens_per_step, run.max_steps, state.val_loss)
        log_step = validate or logger.is_log_step(step)
        logger.begin_step(step, log=log_step)
        train_loss, seq = step_gradient(run, step, log_step)
        arm.before_clip(step, lr, state.val_loss)
        if segment is not None:
            segment.observe(step, run, lr)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), train_cfg.grad_clip)
        )
        step_row = {
            "run_id": spec.run_id,
            "step": step,
            "tokens": step * run.tokens_per_step,
            "lr": lr,
            "train_loss": train_loss,
            "grad_norm": grad_norm,
            "global_batch": spec.global_batch,
        }
        if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
            # No update is applied: the row shows the loss and the exposure so far.
            state.status = "diverged"
            state.add_row(step_row | divergence_record(logger, validated=False), board)
            break
        clip_coef = min(1.0, train_cfg.grad_clip / (grad_norm + 1e-6))
        arm.optimizer_step(step)
        arm.after_optimizer_step(lr)
        closure = curvature_closure(run, seq) if log_step else None
        record = logger.after_update(lr, grad_norm, clip_coef, logits_closure=closure)
        arm.after_logger(step)
        run.optimizer.zero_grad(set_to_none=True)
        bar.update(run.tokens_per_step)
        if record is None:
            record_if_due(run, state, replay)
            continue
        if validate:
            state.val_loss = run.family.validation(run.model, run.val)
        layers = record.pop("layers", None) or []
        state.add_row(
            step_row
            | {"val_loss": state.val_loss if validate else math.nan, "validated": validate}
            | {"clip_coef": clip_coef, **record}
            | arm.row(step),
            board,
        )
        state.layer_rows += [{"run_id": spec.run_id, "step": step, **layer} for layer in layers]
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{state.val_loss:.3f}", refresh=False)
        outcome = run.schedule.status(state.val_loss) if validate else None
        if outcome is not None:
            state.status = outcome
            break
        state.wall_time_s = state.wall_before + time.perf_counter() - start
        save_if_due(run, state, resume_path)
        record_if_due(run, state, replay)
    bar.close()
    if board is not None:
        board.close()
    state.wall_time_s = state.wall_before + time.perf_counter() - start
    return run.model, state.result(run)


@dataclass
class LoopState:
    """What the loop has done so far: the rows, the last step, validation and status."""

    rows: list[dict] = field(default_factory=list)
    layer_rows: list[dict] = field(default_factory=list)
    step: int = 0  # the last step taken
    val_loss: float = math.nan  # the last validation loss
    status: str = "token_cap"
    wall_before: float = 0.0  # training seconds before a resume
    wall_time_s: float = 0.0

    def add_row(self, row: dict, board) -> None:
        self.rows.append(row)
        if board is not None:
            board.write(row)

    def result(self, run: RunSetup) -> RunResult:
        return RunResult(
            status=self.status,
            steps=self.step,
            tokens=self.step * run.tokens_per_step,
            final_val_loss=math.nan if self.status == "diverged" else self.val_loss,
            wall_time_s=self.wall_time_s,
            trace=pd.DataFrame(self.rows),
            layers=pd.DataFrame(self.layer_rows),
            noise_control=run.arm.summary(),
        )


def start_state(run: RunSetup, resume_path: Path | None) -> LoopState:
    """A new run's empty state, or the saved one's (model, optimizer, logger and arm
    restored in place). A state saved at the last step leaves no step to take: the
    run is then the saved one."""
    state = LoopState()
    if resume_path is not None and Path(resume_path).exists():
        saved = load_resume_state(
            Path(resume_path), run.spec, run.cfg, run.model, run.optimizer, run.logger
        )
        run.arm.load_state_dict(saved["noise"])
        state.rows, state.layer_rows = saved["rows"], saved["layer_rows"]
        state.step, state.wall_before = saved["step"], saved["wall_time_s"]
        validated = (r["val_loss"] for r in reversed(state.rows) if r["validated"])
        state.val_loss = next(validated, math.nan)
    return state


def save_if_due(run: RunSetup, state: LoopState, resume_path: Path | None) -> None:
    """Save the resume state after every ``train.checkpoint_interval`` logged rows."""
    every = run.train_cfg.checkpoint_interval
    if resume_path is None or run.rank != 0 or len(state.rows) % every:
        return
    save_resume_state(
        Path(resume_path), run.spec, run.cfg, state.step, run.model, run.optimizer, run.logger,
        state.rows, state.layer_rows, state.wall_time_s, run.arm.state_dict(),
    )  # fmt: skip


def record_if_due(run: RunSetup, state: LoopState, replay: ReplayRecording | None) -> None:
    """Save the run's state after every ``replay.every``-th step (rank 0): what a restart
    needs, so that ``training.replay.segment`` can regenerate the steps after it."""
    if replay is None or run.rank != 0 or state.step % replay.every:
        return
    save_resume_state(
        replay.path(state.step), run.spec, run.cfg, state.step, run.model, run.optimizer,
        run.logger, state.rows, state.layer_rows, state.wall_time_s, run.arm.state_dict(),
    )  # fmt: skip


def progress_bar(run: RunSetup, done_steps: int, show: bool) -> tqdm:
    """Tokens trained so far against the token cap (rank 0 only)."""
    return tqdm(
        initial=done_steps * run.tokens_per_step,
        total=run.max_steps * run.tokens_per_step,
        unit="tok",
        unit_scale=True,
        desc=run.spec.run_id,
        disable=not show or run.rank != 0,
        mininterval=2.0,
    )


def set_learning_rate(run: RunSetup, step: int) -> float:
    """The schedule's learning rate at ``step``, set in every parameter group."""
    cfg = run.train_cfg
    lr = lr_at(
        step,
        run.spec.lr_peak,
        cfg.warmup_steps,
        run.max_steps,
        cfg.min_lr_ratio,
    )
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def step_gradient(run: RunSetup, step: int, log_step: bool) -> tuple[float, torch.Tensor]:
    """The step's mean gradient in ``.grad`` (averaged over workers) and its mean loss.

    The K micro-batches run apart only when their gradients are read (logging steps,
    the anisotropic and NAP arms); otherwise the local batch runs in as few passes as
    ``train.micro_batch_max`` allows, with the same mean gradient. Returns the loss
    and the last pass's sequences.
    """
    spec, m_k = run.spec, run.micro * run.n_micro
    batch = batch_indices(
        spec.seed, (step - 1) * spec.global_batch, spec.global_batch, len(run.train)
    )
    local = batch[run.rank * m_k : (run.rank + 1) * m_k]
    by_micro = log_step or run.arm.needs_micro_gradients
    group = run.micro if by_micro else m_k
    loss, seq = accumulate_gradient(
        run.forward, run.net, run.family.loss,
        lambda idx: run.family.batch(run.train, idx).to(run.device), local,
        group=group, chunk=forward_chunk(run.train_cfg, group), autocast=run.autocast,
        sync=not log_step,
        after_group=functools.partial(after_micro, run.logger, run.arm) if by_micro else None,
    )  # fmt: skip
    if run.world > 1 and log_step:
        all_reduce_mean_grads(run.model, run.world)
    if run.world > 1:
        dist.all_reduce(loss)
        loss /= run.world
    return float(loss), seq


def curvature_closure(run: RunSetup, seq: torch.Tensor) -> Callable | None:
    """The logits and targets of the step's last pass at the updated parameters, when
    the logger's curvature needs them."""
    if not run.logger.needs_logits:
        return None

    def closure(seq=seq):
        return run.model(seq[:, :-1]), seq[:, 1:]

    return closure


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
