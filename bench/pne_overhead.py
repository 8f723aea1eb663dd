"""Cost grid of ``gradnoise.tap.attach``'s tiers: wall-time ratio and memory, per K and N.

For each K (micro-batches per step) identical copies of the study's CPU model
(``config/config.yaml``'s ``model`` block, AdamW and clipping from its ``train``
block) train on the same random token batches, the global batch fixed: one arm
without a tap, one per tier (``economy``, ``standard``, ``full``). Each arm logs
at every step (N = 1) or at every N-th step (``--intervals``); the economy tier
always logs every step, so it is timed once per K and shown at every N (``rows``,
not run by default, is attach before the tiers: the manual logger's K + 1 rows;
``floor``, an empty tensor hook on every parameter: the cost of any per-parameter
hook, which no tier can go below; ``norm_floor``, a hook that computes one squared
norm |d_j|^2 per parameter and micro-batch and keeps the 0-d result: the least work
of any statistic read from each increment, one tensor operation per parameter and
pass, whose fixed cost (about 4 us a call on one CPU core) no hook-based tier avoids;
the economy tier needs two such statistics, |d_j|^2 and |P d_j|^2). The arms'
steps alternate in A/B order, ABCD DCBA step by step, for ``--rounds`` rounds of
``max(N, --block)`` steps (whole blocks of N: each holds its share of logging
steps), after an untimed warm-up: N steps for a tapped arm (past the logger's
dense early ladder 1, 2, 4, ... below N), a few for the others. The ratio is the arm's time over
the no-tap arm's time on the same steps; two identical arms without a tap differ
by about 0.5 % on a busy 2-core machine, so read ratios below 1.01 as "at most
the noise".

Memory is counted in gradient copies (bytes / 4 D), by ``LiveBytes``
(``gradnoise.estimation.memory``) around every hook call of the tap, attach
included (the forward and backward passes are outside it): ``held``, the most
gradient-sized memory (buffers of at least half the gradient) the tap holds at
once over two logging steps, its held estimate included; ``extra``, what the
second logging step adds over what was held before it (tests/gradnoise/test_pne_stream.py's
measure of the streaming mode). Under 1 means parameter-sized temporaries only.

Usage::

    .venv/bin/python bench/pne_overhead.py [--rounds 3] [--block 40] [--n-micro 2,8,32]
        [--intervals 1,100] [--global-batch 32] [--tiers economy,standard,full]

It ends with the grid, one row per (tier, N, K), and the goals it is read against:
economy <= 1.01x at every step; standard <= 1.01x at N = 100 and <= 1.10x at N = 1.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch
import yaml

from gradnoise.estimation.memory import LiveBytes
from gradnoise.tap import attach
from gradnoise.tap.economy import EconomyTap
from gradnoise.tap.tap import NoiseTap
from gradnoise.tap.welford_tap import WelfordTap
from training.data.corpus import vocab_from_config
from training.model import GPT, GPTConfig, lm_loss

ARMS = {  # arm: (tier, options it is attached with); log_interval is added per N
    "economy": ("economy", {}),
    "standard": ("standard", {}),
    "full": ("full", {}),
    "rows": ("standard", {"streaming": False}),  # attach before the tiers: K + 1 rows
    "floor": (None, {}),  # an empty tensor hook on every parameter: what any hook costs
    "norm_floor": (None, {}),  # one squared norm per parameter and pass: the least statistic
}
GOALS = {("economy", 1): 1.01, ("standard", 100): 1.01, ("standard", 1): 1.10}
HOOKS = ("_on_grad", "_end_backward", "_after_step")
WARMUP = 5  # untimed steps of an arm that has no logging ladder to pass


class Arm:
    """A model, its optimizer and (optionally) a tap of one tier, stepped as the trainer does."""

    def __init__(self, cfg: dict, n_micro: int, micro: int, tier: str | None, log_interval: int):
        torch.manual_seed(0)
        vocab = vocab_from_config(cfg["data"]).size
        self.model = GPT(GPTConfig(vocab_size=vocab, **cfg["model"]))
        train = cfg["train"]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-3, betas=(train["beta1"], train["beta2"]),
            eps=train["adam_eps"], weight_decay=train["weight_decay"],
        )  # fmt: skip
        self.max_norm = float(train["grad_clip"])
        self.n_micro, self.micro, self.step = n_micro, micro, 0
        self.tap = None
        if tier == "floor":  # the cost of a Python tensor hook per parameter and pass alone
            self.hooks = [p.register_hook(_no_op) for p in self.model.parameters()]
        elif tier == "norm_floor":  # one tensor operation per parameter and pass, kept
            self.kept: list[torch.Tensor] = []
            hook = functools.partial(_squared_norm, self.kept)
            self.hooks = [p.register_hook(hook) for p in self.model.parameters()]
        elif tier is not None:
            tier, options = ARMS[tier]
            if tier != "economy":
                options = options | {"log_interval": log_interval}
            self.tap = attach(self.model, self.optimizer, n_micro=n_micro, micro_batch_size=micro,
                              tier=tier, **options)  # fmt: skip

    def train_step(self, batch: torch.Tensor) -> None:
        self.step += 1
        for j in range(self.n_micro):
            seq = batch[j * self.micro : (j + 1) * self.micro]
            (lm_loss(self.model(seq[:, :-1]), seq[:, 1:]) / self.n_micro).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self, "kept"):
            self.kept.clear()


def _no_op(grad: torch.Tensor) -> None:
    return None


def _squared_norm(kept: list, grad: torch.Tensor) -> None:
    flat = grad.reshape(-1)
    kept.append(torch.dot(flat, flat))


def time_ratios(cfg, n_micro, micro, tiers, log_interval, rounds, block, data) -> dict:
    """{tier: time with the tap / time without} over ``rounds`` A/B rounds of whole N-blocks."""
    arms = {"off": Arm(cfg, n_micro, micro, None, log_interval)}
    arms |= {tier: Arm(cfg, n_micro, micro, tier, log_interval) for tier in tiers}
    steps = max(log_interval, block)

    def timed_step(arm: Arm) -> float:
        start = time.perf_counter()
        arm.train_step(data[arm.step % len(data)])
        return time.perf_counter() - start

    for name, arm in arms.items():  # warm-up, untimed: the tapped arms past the early ladder
        for _ in range(WARMUP if name == "off" or log_interval == 1 else log_interval):
            timed_step(arm)
    times, order = dict.fromkeys(arms, 0.0), list(arms)
    for i in range(rounds * steps):
        for name in order if i % 2 == 0 else order[::-1]:  # ABCD DCBA, step by step
            times[name] += timed_step(arms[name])
    ratios = {tier: times[tier] / times["off"] for tier in tiers}
    return ratios | {"ms_per_step": 1e3 * times["off"] / (rounds * steps)}


def tap_memory(cfg: dict, n_micro: int, micro: int, tier: str) -> tuple[float, float]:
    """(held, extra) gradient copies of the tap over two logging steps (module docstring)."""
    if tier in ("floor", "norm_floor"):
        return 0.0, 0.0  # hooks that keep no gradient-sized buffer
    vocab = vocab_from_config(cfg["data"]).size
    n_coords = sum(p.numel() for p in GPT(GPTConfig(vocab_size=vocab, **cfg["model"])).parameters())
    memory = LiveBytes(large=2 * n_coords)  # half a gradient or more
    patch = _Patch()
    for cls in (NoiseTap, EconomyTap, WelfordTap):
        for name in HOOKS:
            if name in vars(cls):
                patch.set(cls, name, _counted(vars(cls)[name], memory))
    try:
        with memory:
            arm = Arm(cfg, n_micro, micro, tier, log_interval=1)
        block = arm.model.cfg.block_size
        batches = torch.randint(0, vocab, (2, n_micro * micro, block + 1))
        arm.train_step(batches[0])
        first, before = memory.peak_large, memory.live_large
        memory.reset_peak()
        arm.train_step(batches[1])
    finally:
        patch.undo()
    held = max(first, memory.peak_large) / (4 * n_coords)
    return held, (memory.peak_large - before) / (4 * n_coords)


class _Patch:
    def __init__(self):
        self._undo = []

    def set(self, cls, name, value) -> None:
        self._undo.append((cls, name, vars(cls)[name]))
        setattr(cls, name, value)

    def undo(self) -> None:
        for cls, name, value in reversed(self._undo):
            setattr(cls, name, value)


def _counted(method, memory: LiveBytes):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with memory:
            return method(self, *args, **kwargs)

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds of max(N, block) steps")
    parser.add_argument("--block", type=int, default=40, help="steps per round at least")
    parser.add_argument("--n-micro", default="2,8,32", help="K values")
    parser.add_argument("--intervals", default="1,100", help="N values (log every N-th step)")
    parser.add_argument("--global-batch", type=int, default=32, help="B = m * K sequences")
    parser.add_argument(
        "--tiers",
        default="economy,standard,full,floor",
        help="among economy, standard, full, rows, floor, norm_floor",
    )
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    torch.set_num_threads(int(cfg.get("threads_per_run", 1)))
    tiers = [t for t in args.tiers.split(",") if t]
    ks = [int(k) for k in args.n_micro.split(",") if k]
    intervals = [int(n) for n in args.intervals.split(",") if n]
    block = int(cfg["model"]["block_size"])
    vocab = vocab_from_config(cfg["data"]).size
    data = torch.randint(0, vocab, (16, args.global_batch, block + 1))
    grid = []
    for n_micro in ks:
        micro = args.global_batch // n_micro
        economy = None
        for log_interval in intervals:
            timed = [t for t in tiers if t != "economy" or economy is None]
            ratios = time_ratios(cfg, n_micro, micro, timed, log_interval, args.rounds,
                                 args.block, data)  # fmt: skip
            if "economy" in timed:
                economy = ratios["economy"]
            print(f"K={n_micro} m={micro} N={log_interval}: {ratios['ms_per_step']:.1f} ms/step "
                  "without a tap; " + " ".join(f"{t}={ratios.get(t, economy):.4f}" for t in tiers),
                  flush=True)  # fmt: skip
            for tier in tiers:
                grid.append((tier, log_interval, n_micro, ratios.get(tier, economy)))
        memory = {tier: tap_memory(cfg, n_micro, micro, tier) for tier in tiers}
        grid = [row + memory[row[0]] if row[2] == n_micro else row for row in grid]
    print_grid(grid)


def print_grid(grid: list[tuple]) -> None:
    """The cost grid: one row per (tier, N, K); goals marked where the issue set one."""
    print("\ntier      N    K   time ratio  held copies  extra copies  goal")
    for tier, log_interval, n_micro, ratio, held, extra in sorted(
        grid, key=lambda r: (list(ARMS).index(r[0]), r[1], r[2])
    ):
        goal = GOALS.get((tier, log_interval))
        mark = "" if goal is None else f"<= {goal:.2f}x {'met' if ratio <= goal else 'NOT met'}"
        note = " (logs every step)" if tier == "economy" and log_interval != 1 else ""
        print(f"{tier:<9} {log_interval:>3} {n_micro:>4}   {ratio:>8.4f}x  {held:>11.2f}  "
              f"{extra:>12.2f}  {mark}{note}")  # fmt: skip


if __name__ == "__main__":
    main()
