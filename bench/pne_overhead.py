"""Overhead of the P-NE logger on the default-study model: wall time and peak memory, on vs off.

Three identical copies of the study's GPT (``config/config.yaml``'s ``model`` block)
train on the same random token batches with K micro-batches per step: one with a
``NoiseLogger`` (log interval N) in its default mode (K + 1 gradient copies on a
logging step), one with a logger in its streaming mode (``streaming=True``), one
without. Their steps alternate in the order ABC CBA, so drifts of the machine's
speed fall on all arms alike; the timed steps span whole blocks of N, each with
exactly one logging step. The peak memory of one logging step and of one
ordinary step is read from PyTorch's memory profiler (CUDA: the allocator's peak).

The logger's own peak extra memory on a logging step is printed in gradient
copies (bytes / 4 D), for both modes and K = 8 and 32 (``--memory-k``): the live
bytes of the tensors the logger's calls allocate (``gradnoise.estimation.memory.LiveBytes``),
at their peak during a logging step, minus those held before it (the held
diagonals, P and P^2 of the previous estimate). Two numbers: the buffers of at
least half the gradient's size ("gradient-sized"), and all extra bytes less the
fixed-size sketch rows and tail sample (chunk temporaries included).

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
        [--log-interval 100] [--proxies config | ggn,true_fisher,hessian] [--memory-k 8,32]

The last line printed is ``overhead_ratio=<time with logging / time without>`` of
the default mode; the streaming mode's ratio is the line before it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gradnoise.estimation.curvature import PROXIES, logit_curvature
from gradnoise.estimation.formulas import preconditioner
from gradnoise.estimation.logger import NoiseLogger
from gradnoise.estimation.memory import LiveBytes
from training.data import vocab_from_config
from training.model import GPT, GPTConfig, lm_loss


class Arm:
    """A model, its optimizer and (optionally) a logger, stepped as ``training/train.py`` does."""

    def __init__(
        self,
        cfg: dict,
        n_micro: int,
        micro: int,
        log_interval: int | None,
        proxies: tuple = (),
        streaming: bool = False,
        **settings,
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
        self.memory: LiveBytes | None = None  # when set, counts what the logger's calls hold
        self.logger = None
        if log_interval is not None:
            self.logger = NoiseLogger(
                self.model, self.optimizer, n_micro=n_micro, micro_batch_size=micro,
                log_interval=log_interval, curvature=train.get("curvature", "fisher"),
                proxies=proxies, streaming=streaming, **settings,
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
        if self.memory is None:
            getattr(self.logger, method)(*args)
        else:
            with self.memory:
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


COUNT_SETTINGS = {"sketch_width": 512, "hill_max_samples": 2**12}  # small fixed-size parts


def logger_memory(cfg: dict, n_micro: int, micro: int, streaming: bool) -> dict[str, float]:
    """The logger's peak extra memory on a logging step, in gradient copies (bytes / 4 D).

    Steps 1 .. 7 run with the logger's calls counted (N = 4: steps 1, 2 and 4
    log); the peak during step 8 (a logging step with the estimate of step 4
    held) minus what the logger held before it is the extra. The logger runs
    with ``COUNT_SETTINGS``, so that the parts whose size does not depend on D
    (K x width sketch rows, at most ``hill_max_samples`` tail values) stay small
    next to D: ``gradient_sized`` counts the buffers of at least half the
    gradient; ``total`` all extra bytes less ``fixed``, those fixed-size parts
    (streaming mode; in the default mode they are part of ``total``).
    """
    arm = Arm(cfg, n_micro, micro, log_interval=4, streaming=streaming, **COUNT_SETTINGS)
    logger = arm.logger
    n_coords = sum(logger.sizes)
    arm.memory = LiveBytes(large=2 * n_coords)
    vocab, block = arm.model.cfg.vocab_size, arm.model.cfg.block_size
    generator = torch.Generator().manual_seed(1)
    batches = torch.randint(0, vocab, (8, n_micro * micro, block + 1), generator=generator)
    for step in range(7):
        arm.train_step(batches[step])
    before, before_large = arm.memory.live, arm.memory.live_large
    arm.memory.reset_peak()
    arm.train_step(batches[7])
    fixed = 0.0
    if streaming:
        width = min(n_coords, logger.sketch_width)
        stride = max(1, -(-n_micro * n_coords // logger.hill_max_samples))
        # sketch rows with their float64 copy (the Gram matrix) and tail sample, in D floats
        fixed = n_micro * (3 * width + -(-n_coords // stride)) / n_coords
    return {
        "gradient_sized": (arm.memory.peak_large - before_large) / (4 * n_coords),
        "total": (arm.memory.peak - before) / (4 * n_coords) - fixed,
        "fixed": fixed,
        "n_coords": n_coords,
    }


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
    parser.add_argument(
        "--memory-k", default="8,32", help="K values of the memory count ('': none)"
    )
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
    arms = {
        "on": on,
        "streaming": Arm(cfg, args.n_micro, micro, args.log_interval, proxies, streaming=True),
        "off": Arm(cfg, args.n_micro, micro, None),
    }
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

    for _ in range(args.log_interval):  # warm-up: steps 1..N of every arm, untimed
        for arm in arms.values():
            timed_step(arm)
    times = dict.fromkeys(arms, 0.0)
    for arm in arms.values():
        arm.logger_seconds = 0.0
    order = list(arms)
    for i in range(args.blocks * args.log_interval):
        for name in order if i % 2 == 0 else order[::-1]:  # ABC CBA, step by step
            times[name] += timed_step(arms[name])
    n_timed = args.blocks * args.log_interval
    print(
        f"ms/step over {n_timed} steps ({args.blocks} logging steps): "
        + " ".join(f"{name}={1e3 * t / n_timed:.2f}" for name, t in times.items())
        + " (on: default mode, K + 1 copies; streaming: streaming=True)"
    )
    for name in ("on", "streaming"):
        seconds = arms[name].logger_seconds
        print(
            f"time inside the logger ({name}): {1e3 * seconds / args.blocks:.1f} ms per block "
            f"of {args.log_interval} steps, {seconds / times['off']:.2%} of the off arm's time "
            "(a low-noise lower bound of the overhead; the wall-clock ratio below also "
            "carries the machine's noise)"
        )

    step_seconds = times["off"] / n_timed
    for name, seconds in proxy_seconds(on, data[0]).items():
        print(
            f"proxy {name}: {1e3 * seconds:.1f} ms per logging step "
            f"({seconds / step_seconds:.2f} ordinary steps)"
        )

    batch = data[0]
    for arm in arms.values():  # the next step logs in the arms with a logger
        arm.step = args.log_interval * (args.blocks + 1) - 1
    memory = {name: peak_memory(arm, batch) for name, arm in arms.items()}
    for name in ("on", "streaming"):
        print(
            f"peak tensor memory ({name}): logging step {memory[name] / 2**20:.1f} MiB, "
            f"ordinary step {memory['off'] / 2**20:.1f} MiB, "
            f"peak_memory_ratio={memory[name] / memory['off']:.3f}"
        )
    wide = {**cfg, "model": {**cfg["model"], "n_layer": 4, "n_embd": 256, "n_head": 4}}
    for label, shape in (("config model", cfg), ("4 x 256 model", wide)):
        for n_micro in [int(k) for k in args.memory_k.split(",") if k]:
            for streaming in (False, True):
                count = logger_memory(shape, n_micro, 1, streaming)
                print(
                    f"logger peak extra memory, {label} (D={count['n_coords']}), K={n_micro}, "
                    f"{'streaming' if streaming else 'default'} mode: "
                    f"{count['gradient_sized']:.2f} gradient-sized buffers, "
                    f"{count['total']:.2f} gradient copies in all "
                    f"(+ {count['fixed']:.2f} in the fixed-size sketch rows and tail sample; "
                    f"sketch_width={COUNT_SETTINGS['sketch_width']}, "
                    f"hill_max_samples={COUNT_SETTINGS['hill_max_samples']})"
                )
    print(f"overhead_ratio_streaming={times['streaming'] / times['off']:.4f}")
    print(f"overhead_ratio={times['on'] / times['off']:.4f}")


if __name__ == "__main__":
    main()
