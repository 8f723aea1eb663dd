"""A run's resume state: what a restart needs to continue as if never interrupted.

``save_resume_state`` writes the model, the optimizer, the P-NE logger, the trace so
far and the random states after a step (plain tensors and JSON-like values, no
pickled objects: ``training.checkpoints``); ``load_resume_state`` restores them and
refuses the state of another run or config (``run_fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from gradnoise import NoiseLogger
from preregistration.design import RunSpec
from training.checkpoints import load_plain, save_plain
from training.config import StudyConfig
from training.model import GPT


def run_fingerprint(spec: RunSpec, cfg: StudyConfig) -> str:
    """SHA-256 of the run's spec and config: a resume state is used only by the same run."""
    text = json.dumps(
        {"spec": spec.as_dict(), "config": cfg.as_dict()}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def save_resume_state(
    path: Path, spec: RunSpec, cfg: StudyConfig, step: int, model: GPT, optimizer,
    logger: NoiseLogger, rows: list[dict], layer_rows: list[dict], wall_time_s: float,
    noise: dict | None = None,
) -> None:  # fmt: skip
    """Everything a restart needs after ``step``, written atomically (temp file, rename).

    Model, optimizer (moments and step counts), the logger's sums and windows, the
    trace so far, and the random states (``random_states``). The learning-rate
    schedule and the data position are functions of the step (``lr_at``,
    ``batch_indices``), and the logger draws its sketch and probes from generators
    seeded by (seed, step), so the step restores them. The noise arm's own
    generators are stored with it (``noise``).
    """
    save_plain(
        {"fingerprint": run_fingerprint(spec, cfg), "step": step, "model": model.state_dict(),
         "optimizer": optimizer.state_dict(), "logger": logger.state_dict(),
         "rows": rows, "layer_rows": layer_rows, "wall_time_s": wall_time_s,
         "noise": noise or {}, "random_states": random_states()},
        path, "resume state",
    )  # fmt: skip


def load_resume_state(
    path: Path, spec: RunSpec, cfg: StudyConfig, model: GPT, optimizer, logger
) -> dict:
    """Restore model, optimizer and logger from ``path``; errors name the file."""
    try:
        state = load_plain(path, "resume state")
    except ValueError as exc:  # unreadable, truncated, or holding more than tensors
        raise RuntimeError(str(exc)) from exc
    if state.get("fingerprint") != run_fingerprint(spec, cfg):
        raise RuntimeError(
            f"{path}: resume checkpoint of another run or config than {spec.run_id}; "
            "delete it to start this run afresh"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    logger.load_state_dict(state["logger"])
    if "random_states" not in state:
        raise RuntimeError(f"{path}: resume checkpoint lacks the random states; delete it")
    set_random_states(state["random_states"])
    return state


def random_states() -> dict:
    """Torch's CPU generator and, with GPUs, every CUDA generator (dropout draws from them).

    Under DDP every worker seeds alike and draws alike, so rank 0's states are everyone's.
    """
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict) -> None:
    """Restore what ``random_states`` returned."""
    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
