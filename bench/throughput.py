"""Training throughput of the study's model: tokens per second and model FLOPs utilisation.

Three arms train on the same random token batches, one optimizer step at a time
(forward, next-token loss, backward, AdamW): the study's GPT with its
architecture options on (RoPE, smeared keys), the same GPT with them off
(learned absolute positions), and Hugging Face transformers' GPT-2 at the same
shape (layers, width, heads, context, vocabulary; no dropout, attention through
scaled-dot-product attention), the model a user would otherwise pick. The arms
run in interleaved rounds, the order reversed every other round (ABC, CBA, ...),
so that drifts of a busy machine's speed fall on all arms alike; each ratio is
the median of its per-round ratios. On a CPU the ratios use the process's CPU
time (on a machine shared with other work, wall time also counts the waits for
a core); tokens per second and MFU use wall time.

Model FLOPs per token (PaLM, Chowdhery et al. 2022, App. B): 6 N + 12 L H Q T,
N the parameters that multiply activations (all but a learned position table),
L layers, H heads, Q head width, T context. MFU = FLOPs per token x tokens per
second / peak FLOP/s, the peak read from a table of devices (dense bf16 or
fp32 tensor throughput); on a CPU the table has no entry, so the peak is a large
fp32 matrix product timed on the same threads, and the MFU is relative to it.

Usage::

    .venv/bin/python bench/throughput.py [--config config/config.yaml]
        [--n-layer 4 --n-embd 128 --n-head 4] [--batch 16] [--rounds 30] [--steps 5]
        [--dtype float32|bfloat16]

Needs ``transformers`` (a pin of requirements.txt). The last line printed is
``throughput_ratio=<ours / theirs>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from training.data.corpus import vocab_from_config
from training.model import GPT, GPTConfig, lm_loss

# Dense peak FLOP/s per device (vendor data sheets, without sparsity), by dtype.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L40S": {"bfloat16": 362e12, "float32": 91.6e12},
    "A10": {"bfloat16": 125e12, "float32": 31.2e12},
    "V100": {"bfloat16": 125e12, "float32": 15.7e12},  # fp16 tensor cores; no bf16
}


class Arm:
    """One model with its optimizer, stepped on given batches; counts its own seconds."""

    def __init__(self, name: str, model: torch.nn.Module, loss_fn, n_flop_params: int):
        self.name, self.model, self.loss_fn = name, model, loss_fn
        self.n_flop_params = n_flop_params
        fused = next(model.parameters()).is_cuda
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        self.seconds, self.tokens = 0.0, 0
        self.round_rates: list[float] = []  # tokens per second of CPU (CPU) or wall (GPU) time

    def run(self, batches: torch.Tensor, autocast) -> None:
        """Train one step per batch; add the time and tokens to the arm's totals."""
        synchronize(batches.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in batches:
            with autocast:
                loss = self.loss_fn(self.model, batch)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        synchronize(batches.device)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        tokens = batches.shape[0] * batches.shape[1] * (batches.shape[2] - 1)
        self.seconds += seconds
        self.tokens += tokens
        self.round_rates.append(tokens / (cpu_seconds if batches.device.type == "cpu" else seconds))

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, block: int) -> int:
    """6 N + 12 L H Q T: forward and backward matrix products of a decoder-only transformer."""
    return 6 * n_params + 12 * n_layer * n_head * head_dim * block


def peak_flops(device: torch.device, dtype: str) -> tuple[float, str]:
    """Peak FLOP/s of ``device`` from ``PEAK_FLOPS``, or a timed fp32 matmul on a CPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAK_FLOPS.items():
            if key in name:
                return peaks[dtype], f"{name} data sheet, {dtype}"
        raise SystemExit(f"bench/throughput.py: no peak FLOP/s of '{name}' in PEAK_FLOPS")
    size = 1024
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    rate = 10 * 2 * size**3 / (time.perf_counter() - start)
    return rate, f"timed {size}^3 fp32 matmul on {torch.get_num_threads()} CPU thread(s)"


def study_arm(name: str, gpt_cfg: GPTConfig, device: torch.device) -> Arm:
    torch.manual_seed(0)
    model = GPT(gpt_cfg).to(device)
    positions = model.pos_emb.weight.numel() if model.pos_emb is not None else 0

    def loss_fn(model, batch):
        return lm_loss(model(batch[:, :-1]), batch[:, 1:])

    return Arm(name, model, loss_fn, model.n_params() - positions)


def gpt2_arm(gpt_cfg: GPTConfig, device: torch.device) -> Arm:
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as exc:
        raise SystemExit(
            f"bench/throughput.py needs transformers (requirements.txt; `make venv`): {exc}"
        ) from exc
    config = GPT2Config(
        vocab_size=gpt_cfg.vocab_size, n_positions=gpt_cfg.block_size, n_embd=gpt_cfg.n_embd,
        n_layer=gpt_cfg.n_layer, n_head=gpt_cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, attn_implementation="sdpa", bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()

    def loss_fn(model, batch):
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        return lm_loss(logits, batch[:, 1:])

    return Arm("hf_gpt2", model, loss_fn, n_params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--n-layer", type=int, help="override the config's model shape")
    parser.add_argument("--n-embd", type=int)
    parser.add_argument("--n-head", type=int)
    parser.add_argument("--block-size", type=int)
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--steps", type=int, default=5, help="steps per arm and round")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(int(cfg.get("threads_per_run", 1)))
    dtype = args.dtype or cfg.get("dtype", "float32")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    shape = {k: v for k, v in cfg["model"].items()}
    for key in ("n_layer", "n_embd", "n_head", "block_size"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    vocab = vocab_from_config(cfg["data"]).size
    on = GPTConfig(vocab_size=vocab, **(shape | {"rope": True, "smeared_keys": True}))
    off = GPTConfig(vocab_size=vocab, **(shape | {"rope": False, "smeared_keys": False}))
    arms = [study_arm("ours", on, device), study_arm("ours_plain", off, device)]
    arms.append(gpt2_arm(on, device))
    generator = torch.Generator().manual_seed(0)
    size = (args.steps, args.batch, on.block_size + 1)
    batches = torch.randint(0, vocab, size, generator=generator).to(device)
    for arm in arms:  # warm-up round, untimed
        arm.run(batches[:2], autocast)
        arm.seconds, arm.tokens, arm.round_rates = 0.0, 0, []
    for r in range(args.rounds):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            arm.run(batches, autocast)

    peak, source = peak_flops(device, dtype)
    head_dim = on.n_embd // on.n_head
    print(
        f"shape: {on.n_layer} layers x {on.n_embd} wide, {on.n_head} heads, context "
        f"{on.block_size}, vocabulary {vocab}; batch {args.batch}; {device.type}, {dtype}; "
        f"{args.rounds} rounds x {args.steps} steps per arm"
    )
    print(f"peak: {peak / 1e12:.3f} TFLOP/s ({source})")
    for arm in arms:
        flops = flops_per_token(arm.n_flop_params, on.n_layer, on.n_head, head_dim, on.block_size)
        rate = arm.tokens_per_second
        print(
            f"{arm.name:>10}: {rate:10.0f} tokens/s  {arm.n_flop_params:>11d} params  "
            f"MFU {flops * rate / peak:6.1%}"
        )

    def ratio(a: Arm, b: Arm) -> tuple[float, str]:
        """Median of the per-round ratios a / b, and their quartiles (the round-to-round spread)."""
        per_round = [x / y for x, y in zip(a.round_rates, b.round_rates, strict=True)]
        if len(per_round) < 2:
            return per_round[0], "one round"
        low, _, high = statistics.quantiles(per_round, n=4)
        return statistics.median(per_round), f"rounds' quartiles {low:.3f}-{high:.3f}"

    ours, plain, theirs = arms
    value, spread = ratio(ours, plain)
    print(f"options_cost_ratio={value:.3f} (RoPE + smeared keys on / off; {spread})")
    value, spread = ratio(plain, theirs)
    print(f"plain_ratio={value:.3f} (ours with the options off / GPT-2; {spread})")
    print(f"throughput_ratio={ratio(ours, theirs)[0]:.3f}")


if __name__ == "__main__":
    main()
