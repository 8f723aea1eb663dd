"""Preflight: each registered model size trained for a few dozen steps, as a train job would.

``python -m training.scale.preflight --config config/gpu.yaml`` (``make preflight``) builds
every size of the config's ``models`` the way ``training.train.train_run`` does (the
GPT at its shape and the corpus vocabulary, bf16 autocast when the config's dtype is
bfloat16, AdamW from ``make_optimizer``, fused on GPUs, ``torch.compile`` off and on,
activation checkpointing when ``train.activation_checkpointing`` is set, the P-NE
logger as the config sets it, ``pne_streaming`` included) and runs steps of K
micro-batches of the largest registered forward pass: the largest batch's micro-batch
m = max(B) / (K W), W the train job's GPUs, capped by ``train.micro_batch_max``.

Per size and compile setting it measures, on the first visible device:

- tokens/s of a step without logging (K passes of that size; no all-reduce);
- MFU = tokens/s x (6 N + 12 L H Q T) / the device's bf16 peak, from the config's
  ``throughput.peak_flops`` (the key found in the device's name); null where none
  applies (a CPU);
- peak memory of those steps (``torch.cuda.max_memory_allocated``; on a CPU the
  process's peak resident set, VmHWM, reset between phases);
- the logger's overhead: seconds of a step that logs over one that does not (every
  step logs here; a run logs one step in ``log_interval``), and the extra peak memory
  of the logging steps.

With more than one visible GPU it then times an NCCL all-reduce of each size's
gradient (fp32, N values) under ``torchrun`` with every GPU, as bus bandwidth
2 (W - 1) / W x bytes / seconds (the NCCL tests' convention); on a CPU, gloo with one
process (the code path only). It writes ``<results>/preflight/preflight.json``
(``training.scale.compute_estimate.preflight_path``), which ``make estimate`` reads, and
prints a table.

On a machine without CUDA every size of ``models`` runs at a shrunken copy of its shape
(:data:`CPU_DIVISORS`: same options, tied embeddings, heads of width 16), in float32,
compiled with the ``aot_eager`` backend (Dynamo and AOTAutograd without Inductor's C++
build), so the whole script runs in seconds and its test keeps it from rotting.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from gradnoise import NoiseLogger
from training.config import StudyConfig
from training.model import GPT, GPTConfig, lm_loss
from training.model_setup import checkpoint_activations, make_optimizer
from training.run_setup import logged_proxies
from training.scale.compute_estimate import (
    flops_per_token,
    load_sized_config,
    preflight_path,
    train_pass,
)
from training.scale.paper_scale import corpus_vocab_size
from training.scale.preflight_devices import (
    allreduce,
    allreduce_worker,
    peak_memory,
    reset_peak_memory,
    synchronize,
)

# The CPU shape of a size: its n_layer, n_head, n_embd, block_size and vocabulary divided
# by these (at least 1 each); 350M becomes 2 layers x 2 heads x 32 wide, 1.3B 2 x 4 x 64.
CPU_DIVISORS = {"n_layer": 12, "n_head": 8, "n_embd": 32, "block_size": 16, "vocab_size": 32}


def size_setup(
    config_path: Path, size: str | None, cpu: bool, micro_batch_max: int | None = None
) -> dict:
    """What a train job of ``size`` builds: model config, vocabulary, K, m and the pass size
    (``micro_batch_max``, when given, in place of the config's ``train.micro_batch_max``)."""
    sized = load_sized_config(config_path, size)
    model_cfg = sized.model
    vocab = corpus_vocab_size(sized)
    train_cfg = sized.train
    if micro_batch_max is not None:
        train_cfg = dataclasses.replace(train_cfg, micro_batch_max=micro_batch_max)
        sized = dataclasses.replace(sized, train=train_cfg)
    micro, pass_sequences = train_pass(sized)
    if cpu:
        shrunk = {
            key: max(1, getattr(model_cfg, key) // CPU_DIVISORS[key])
            for key in ("n_layer", "n_head", "n_embd", "block_size")
        }
        model_cfg = dataclasses.replace(model_cfg, **shrunk)
        vocab = max(2, vocab // CPU_DIVISORS["vocab_size"])
    return {
        "size": size or "(config model)",
        "model_cfg": model_cfg,
        "vocab_size": vocab,
        "n_micro": train_cfg.n_micro,
        "micro_batch": micro,
        "pass_sequences": pass_sequences,
        "train_cfg": train_cfg,
    }


def device_peak_flops(config: StudyConfig, device_name: str) -> float | None:
    """bf16 dense peak FLOP/s of the device: the config's ``throughput.peak_flops`` entry whose
    key occurs in the device's name (``a100`` in "NVIDIA A100-SXM4-80GB"); None if none does."""
    table = (config.throughput or {}).get("peak_flops") or {}
    name = device_name.lower()
    hits = [float(v) for k, v in table.items() if str(k).lower() in name]
    return max(hits) if hits else None


def build(setup: dict, device: torch.device, compiled: bool, streaming: bool):
    """Model, compiled or plain forward, optimizer and logger, as ``train_run`` builds them."""
    train_cfg = setup["train_cfg"]
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=setup["vocab_size"], **dataclasses.asdict(setup["model_cfg"]))
    ).to(device)
    if train_cfg.activation_checkpointing:
        checkpoint_activations(model)
    backend = "inductor" if device.type == "cuda" else "aot_eager"
    if compiled:
        torch._dynamo.reset()  # a fresh cache per model: no recompilation limit across sizes
    forward = torch.compile(model, backend=backend) if compiled else model
    optimizer = make_optimizer(model, 0.0, train_cfg)  # lr 0: the same kernels, fixed weights
    logger = NoiseLogger(
        model,
        optimizer,
        n_micro=setup["n_micro"],
        micro_batch_size=setup["pass_sequences"],
        log_interval=train_cfg.log_interval,
        curvature=train_cfg.curvature,
        proxies=logged_proxies(train_cfg, "batch_sweep"),
        curvature_probes=train_cfg.curvature_probes,
        streaming=streaming,
    )
    return model, forward, optimizer, logger


def train_step(step, log, model, forward, optimizer, logger, batches, autocast, grad_clip):
    """One optimizer step of ``train_run``'s loop: K passes, clipping, AdamW, the logger."""
    logger.begin_step(step, log=log)
    for seq in batches:
        with autocast:
            loss = lm_loss(forward(seq[:, :-1]), seq[:, 1:]) / len(batches)
        loss.backward()
        logger.after_micro_backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    optimizer.step()
    closure = None
    if log and logger.needs_logits:

        def closure(seq=seq):
            return model(seq[:, :-1]), seq[:, 1:]

    clip_coef = min(1.0, grad_clip / (grad_norm + 1e-6))
    logger.after_update(0.0, grad_norm, clip_coef, logits_closure=closure)
    optimizer.zero_grad(set_to_none=True)


def measure(setup: dict, device: torch.device, compiled: bool, dtype: str, steps: int, warmup: int):
    """Seconds and peak memory of ``steps`` steps without logging, then ``steps`` with."""
    train_cfg = setup["train_cfg"]
    streaming = train_cfg.pne_streaming
    model, forward, optimizer, logger = build(setup, device, compiled, streaming)
    block = setup["model_cfg"].block_size
    gen = torch.Generator().manual_seed(0)
    shape = (setup["pass_sequences"], block + 1)
    batches = [
        torch.randint(0, setup["vocab_size"], shape, generator=gen).to(device)
        for _ in range(setup["n_micro"])
    ]
    enabled = dtype == "bfloat16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()
    grad_clip = train_cfg.grad_clip
    args = (model, forward, optimizer, logger, batches, autocast, grad_clip)
    start = time.perf_counter()
    for step in range(1, warmup + 1):  # step 1 logs: the logger's integral starts there
        train_step(step, step == 1, *args)
    synchronize(device)
    warmup_s = time.perf_counter() - start
    phases = {}
    for name, log in (("plain", False), ("logged", True)):
        reset_peak_memory(device)
        synchronize(device)
        start = time.perf_counter()
        for i in range(steps):
            train_step(warmup + len(phases) * steps + i + 1, log, *args)
        synchronize(device)
        phases[name] = ((time.perf_counter() - start) / steps, peak_memory(device))
    tokens = setup["n_micro"] * setup["pass_sequences"] * block
    (plain_s, plain_mem), (logged_s, logged_mem) = phases["plain"], phases["logged"]
    return {
        "n_params": model.n_params(),
        "tokens_per_step": tokens,
        "step_seconds": plain_s,
        "tokens_per_second": tokens / plain_s,
        "peak_memory_bytes": max(plain_mem, logged_mem),
        "logged_step_seconds": logged_s,
        "logger_overhead_ratio": logged_s / plain_s,
        "logger_memory_bytes": logged_mem - plain_mem,
        "warmup_seconds": warmup_s,  # includes compilation when compiled
        "streaming": streaming,
    }


def size_record(setup, config, device, device_name, compiled, dtype, steps, warmup) -> dict:
    """The JSON entry of one size and compile setting: the measurement, MFU, the shape."""
    record = {
        "size": setup["size"],
        "compile": compiled,
        "compile_backend": (
            None if not compiled else "inductor" if device.type == "cuda" else "aot_eager"
        ),
        "autocast": dtype if dtype == "bfloat16" else "off",
        "activation_checkpointing": setup["train_cfg"].activation_checkpointing,
        "model": dataclasses.asdict(setup["model_cfg"]) | {"vocab_size": setup["vocab_size"]},
        "n_micro": setup["n_micro"],
        "micro_batch": setup["micro_batch"],
        "micro_batch_max": setup["train_cfg"].micro_batch_max,
        "pass_sequences": setup["pass_sequences"],
    }
    try:
        result = measure(setup, device, compiled, dtype, steps, warmup)
    except torch.cuda.OutOfMemoryError as err:  # the preflight's answer, not a crash
        return record | {"error": f"out of memory: {err}".splitlines()[0]}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next size starts from an empty cache
    per_token = flops_per_token(result["n_params"], setup["model_cfg"])
    peak = device_peak_flops(config, device_name)
    mfu = None if peak is None else result["tokens_per_second"] * per_token / peak
    return record | result | {"flops_per_token": per_token, "peak_flops": peak, "mfu": mfu}


def table(report: dict) -> str:
    """The printed summary: one line per size and compile setting."""
    head = (
        f"{'size':>8} {'compile':>7} {'pass':>4} {'tokens/s':>10} {'MFU':>6} {'peak GB':>8} "
        f"{'log x':>6} {'log MB':>7} {'warmup s':>8}"
    )
    lines = [f"preflight on {report['device_count']} x {report['device']}", head]
    for r in report["sizes"]:
        if "error" in r:
            pass_ = r.get("pass_sequences", "")
            lines.append(f"{r['size']:>8} {str(r['compile']):>7} {pass_:>4} {r['error']}")
            continue
        mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
        lines.append(
            f"{r['size']:>8} {str(r['compile']):>7} {r['pass_sequences']:>4} "
            f"{r['tokens_per_second']:>10,.0f} "
            f"{mfu:>6} {r['peak_memory_bytes'] / 1e9:>8.2f} "
            f"{r['logger_overhead_ratio']:>6.2f} {r['logger_memory_bytes'] / 1e6:>7.1f} "
            f"{r['warmup_seconds']:>8.1f}"
        )
    for s in report["allreduce"].get("sizes", []):
        lines.append(
            f"all-reduce ({report['allreduce']['backend']}, {report['allreduce']['world_size']} "
            f"processes) of {s['numel']:,} fp32: {s['seconds'] * 1e3:.2f} ms, "
            f"bus {s['bus_bandwidth_bytes_per_s'] / 1e9:.2f} GB/s"
        )
    if "sizes" not in report["allreduce"]:
        lines.append(f"all-reduce: {next(iter(report['allreduce'].values()))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/gpu.yaml"))
    parser.add_argument("--out", type=Path, help="default: <results>/preflight/preflight.json")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiles)")
    parser.add_argument("--compile", default="off,on", help="off, on, or off,on")
    parser.add_argument(
        "--micro-batch-max",
        help="sequences per pass to measure, comma-separated (default: the config's "
        "train.micro_batch_max, per size): the largest that fits is the one to configure",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default threads_per_run)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip sizes past this")
    parser.add_argument("--iters", type=int, default=10, help="timed all-reduces per size")
    parser.add_argument("--allreduce-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--numels", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.allreduce_worker is not None:
        allreduce_worker(
            args.allreduce_worker, [int(n) for n in args.numels.split(",")], args.iters
        )
        return 0
    settings = {"off": [False], "on": [True], "off,on": [False, True], "on,off": [True, False]}
    if args.compile not in settings or args.steps < 1 or args.warmup < 1:
        parser.error("--compile is off, on or off,on; --steps and --warmup at least 1")
    caps: list[int | None] = [None]  # None: each size's configured pass
    if args.micro_batch_max:
        try:
            caps = [int(n) for n in args.micro_batch_max.split(",")]
        except ValueError:
            caps = []
        if not caps or min(caps) < 1:
            parser.error(f"--micro-batch-max takes positive integers, got {args.micro_batch_max!r}")
    config = load_sized_config(args.config, None)
    torch.set_num_threads(args.threads or config.threads_per_run)
    gpus = torch.cuda.device_count()
    device = torch.device("cuda", 0) if gpus else torch.device("cpu")
    name = torch.cuda.get_device_name(0) if gpus else f"CPU ({os.cpu_count()} cores)"
    dtype = config.dtype if gpus else "float32"
    sizes = list(config.models or [None])
    shrink = not gpus and bool(config.models)  # a CPU config's model runs as it is
    started, records = time.perf_counter(), []
    for size, cap in itertools.product(sizes, caps):
        setup = size_setup(args.config, size, cpu=shrink, micro_batch_max=cap)
        for compiled in settings[args.compile]:
            if time.perf_counter() - started > args.budget_s:
                skipped = f"skipped: past the {args.budget_s:.0f} s budget"
                records.append(
                    {
                        "size": setup["size"],
                        "compile": compiled,
                        "pass_sequences": setup["pass_sequences"],
                        "error": skipped,
                    }
                )
                continue
            records.append(
                size_record(setup, config, device, name, compiled, dtype, args.steps, args.warmup)
            )
            print(
                f"{setup['size']} pass={setup['pass_sequences']} compile={compiled}: done",
                file=sys.stderr,
                flush=True,
            )
    numels = sorted({r["n_params"] for r in records if "n_params" in r})
    report = {
        "config": str(args.config),
        "device": name,
        "device_count": max(gpus, 1),
        "device_type": device.type,
        "shape": "cpu (shrunken: training.scale.preflight.CPU_DIVISORS)"
        if shrink
        else "registered",
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "sizes": records,
        "allreduce": allreduce(numels, gpus, args.iters) if numels else {"skipped": "no size ran"},
        "wall_seconds": time.perf_counter() - started,
    }
    out = args.out or preflight_path(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, allow_nan=False))
    print(table(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
