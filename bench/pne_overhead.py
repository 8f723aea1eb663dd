"""Overhead of the P-NE logger on the default-study model: wall time and peak memory, on vs off.

Two identical copies of the study's GPT (``config/config.yaml``'s ``model`` block)
train on the same random token batches with K micro-batches per step, one with
a ``NoiseLogger`` (log interval N), one without. Their steps alternate in the
order ABBA, so drifts of the machine's speed fall on both arms alike; the timed
steps span whole blocks of N, each with exactly one logging step. The
peak memory of one logging step and of one ordinary step is read from PyTorch's
memory profiler (CUDA: the allocator's peak).

By default the logger estimates no extra curvature proxy (the registered
empirical Fisher is free); ``--proxies config`` adds those of the config
(``train.curvature_proxies``), or name them, e.g. ``--proxies ggn,hessian``: they
are estimated on logging steps from the step's last micro-batch, as
``training/train.py`` does. The cost of each proxy per logging step is printed
beside the cost of one ordinary training step either way.

Besides the wall-clock ratio it prints the time spent inside the logger's calls,
a lower bound of the overhead that does not carry the machine's timing noise
(two identical arms without a logger differ by about 0.5 % on a busy 2-core
machine).

Usage::

    .venv/bin/python bench/pne_overhead.py [--blocks 4] [--global-batch 32] [--n-micro 8]
        [--proxies config | ggn,true_fisher,hessian]

The last line printed is ``overhead_ratio=<time with logging / time without>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from training.data import vocab_from_config
from training.model import GPT, GPTConfig, lm_loss
from training.pne import NoiseLogger
from training.pne_curvature import PROXIES, logit_curvature
from training.pne_formulas import preconditioner


class Arm:
    """A model, its optimizer and (optionally) a logger, stepped as ``training/train.py`` does."""

    def __init__(
        self, cfg: dict, n_micro: int, micro: int, log_interval: int | None, proxies: tuple = ()
    ):
        torch.manual_seed(0)
        vocab = vocab_from_config(cfg["data"]).size
        self.model = GPT(GPTConfig(vocab_size=vocab, **cfg["model"]))
        train = cfg["train"]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=1e-3,
            betas=(train["beta1"], train["beta2"]),
            eps=train["adam_eps"],
            weight_decay=train["weight_decay"],
        )
        self.max_norm = float(train["grad_clip"])
        self.n_micro, self.micro, self.step = n_micro, micro, 0
        self.logger_seconds = 0.0  # time spent inside the logger's calls
        self.logger = None
        if log_interval is not None:
            self.logger = NoiseLogger(
                self.model, self.optimizer, n_micro=n_micro, micro_batch_size=micro,
                log_interval=log_interval, curvature=train.get("curvature", "fisher"),
                proxies=proxies,
            )  # fmt: skip

    def train_step(self, batch: torch.Tensor) -> None:
        self.step += 1
        self._logger_call("begin_step", self.step)
        for j in range(self.n_micro):
            seq = batch[j * self.micro : (j + 1) * self.micro]
            (lm_loss(self.model(seq[:, :-1]), seq[:, 1:]) / self.n_micro).backward()
            self._logger_call("after_micro_backward")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm))
        clip_coef = min(1.0, self.max_norm / (grad_norm + 1e-6))
        self.optimizer.step()
        closure = None
        if self.logger is not None and self.logger.logging and self.logger.needs_logits:

            def closure(seq=seq):
                return self.model(seq[:, :-1]), seq[:, 1:]

        self._logger_call("after_update", 1e-3, grad_norm, clip_coef, closure)
        self.optimizer.zero_grad(set_to_none=True)

    def _logger_call(self, method: str, *args) -> None:
        """Call the logger (if any), adding the time spent inside it to ``logger_seconds``."""
        if self.logger is None:
            return
        start = time.perf_counter()
        getattr(self.logger, method)(*args)
        self.logger_seconds += time.perf_counter() - start


def peak_memory(arm: Arm, batch: torch.Tensor) -> float:
    """Peak bytes of live tensors during one training step of ``arm`` (its next step)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        arm.train_step(batch)
        return float(torch.cuda.max_memory_allocated())
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        arm.train_step(batch)
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    return float(np.asarray(sizes).sum(1).max())


def proxy_seconds(arm: Arm, batch: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Seconds of one estimate of each curvature proxy alone, and of all in one call (one
    forward pass shared), with one probe on one micro-batch."""
    params = arm.logger.params
    parts = preconditioner(arm.optimizer, params)
    seq = batch[: arm.micro]
    out = {}
    for names in [(name,) for name in PROXIES] + [PROXIES]:
        gens = {name: torch.Generator().manual_seed(0) for name in names}
        start = time.perf_counter()
        for _ in range(repeats):
            logit_curvature(
                lambda: (arm.model(seq[:, :-1]), seq[:, 1:]), params, parts, names, 1, gens
            )
        out["+".join(names)] = (time.perf_counter() - start) / repeats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks of N steps per arm")
    parser.add_argument("--log-interval", type=int, default=100, help="N")
    parser.add_argument("--n-micro", type=int, default=8, help="K")
    parser.add_argument("--global-batch", type=int, default=32, help="B = m * K sequences")
    parser.add_argument("--proxies", default="", help="comma-separated, or 'config'")
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    if args.proxies == "config":
        proxies = tuple(cfg["train"].get("curvature_proxies", ()))
    else:
        proxies = tuple(p for p in args.proxies.split(",") if p)
    torch.set_num_threads(int(cfg.get("threads_per_run", 1)))
    micro = args.global_batch // args.n_micro
    block = int(cfg["model"]["block_size"])
    on = Arm(cfg, args.n_micro, micro, args.log_interval, proxies)
    off = Arm(cfg, args.n_micro, micro, None)
    vocab = on.model.cfg.vocab_size
    data = torch.randint(0, vocab, (64, args.global_batch, block + 1))
    n_params = sum(p.numel() for p in on.model.parameters())
    print(
        f"model: {n_params} parameters; K={args.n_micro}, m={micro}, N={args.log_interval}, "
        f"proxies={list(proxies)}"
    )

    def timed_step(arm: Arm) -> float:
        start = time.perf_counter()
        arm.train_step(data[arm.step % len(data)])
        return time.perf_counter() - start

    for _ in range(args.log_interval):  # warm-up: steps 1..N of both arms, untimed
        timed_step(on), timed_step(off)
    times = {"on": 0.0, "off": 0.0}
    on.logger_seconds = 0.0
    for i in range(args.blocks * args.log_interval):
        for name in ("on", "off") if i % 2 == 0 else ("off", "on"):  # ABBA, step by step
            times[name] += timed_step(on if name == "on" else off)
    n_timed = args.blocks * args.log_interval
    print(
        f"ms/step over {n_timed} steps ({args.blocks} logging steps): "
        f"on={1e3 * times['on'] / n_timed:.2f} off={1e3 * times['off'] / n_timed:.2f}"
    )

    print(
        f"time inside the logger: {1e3 * on.logger_seconds / args.blocks:.1f} ms per block of "
        f"{args.log_interval} steps, {on.logger_seconds / times['off']:.2%} of the off arm's time "
        "(a low-noise lower bound of the overhead; the wall-clock ratio below also carries "
        "the machine's noise)"
    )

    step_seconds = times["off"] / n_timed
    for name, seconds in proxy_seconds(on, data[0]).items():
        print(
            f"proxy {name}: {1e3 * seconds:.1f} ms per logging step "
            f"({seconds / step_seconds:.2f} ordinary steps)"
        )

    on.step = off.step = args.log_interval * (args.blocks + 1) - 1  # next step logs in `on`
    batch = data[0]
    memory_on, memory_off = peak_memory(on, batch), peak_memory(off, batch)
    print(
        f"peak tensor memory: logging step {memory_on / 2**20:.1f} MiB, ordinary step "
        f"{memory_off / 2**20:.1f} MiB, peak_memory_ratio={memory_on / memory_off:.3f}"
    )
    print(f"overhead_ratio={times['on'] / times['off']:.4f}")


if __name__ == "__main__":
    main()
