"""What the registered design needs, printed before anything is submitted.

``python -m training.scale.compute_estimate --config config/gpu.yaml`` (``make estimate``).

Training FLOPs of one run (Kaplan et al. 2020, eq. 2.1; PaLM, Chowdhery et al. 2022,
appendix B, for the attention term):

    C = D * (6 N + 12 L H Q T)

N: the model's parameters (training/model.py's GPT at the config's shape, tied
embeddings counted once); L layers, H heads, Q head width, T context; 6 N is the
forward (2 N) and backward (4 N) matrix products per token, 12 L H Q T those of the
attention scores and their weighted sum (2 * 2 L T H Q forward, times 3). D: the
tokens the run may train, floor(token_cap / (B T)) * B T for global batch B (the
trainer's step limit); runs that reach the target loss stop earlier, so the totals
are an upper bound. Validation, scoring and the P-NE logger's curvature probes are
not counted (the logger adds no backward pass).

GPU-hours = C / (3600 * per-GPU FLOP/s), with the per-GPU rate a measured tokens per
second times (6 N + 12 L H Q T), or else the config's ``throughput``: the GPU model's
bf16 peak times an assumed utilisation (MFU). The measured rate is ``--tokens-per-second``
or, when the preflight (``make preflight``, ``training.scale.preflight``) has written its JSON
at :func:`preflight_path`, its tokens/s at the config's size, shape and compile setting,
with the logger's overhead spread over ``log_interval`` steps; the report says which.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from preregistration.design import RunSpec, arm_family, expand_design
from preregistration.plan import load_plan
from training.batches import forward_chunk
from training.config import ModelConfig, StudyConfig, read_config, study_config
from training.model import GPT, GPTConfig
from training.scale.paper_scale import corpus_vocab_size, job_resources, resolve_model


@dataclass(frozen=True)
class RunCost:
    run_id: str
    tokens: int  # D: tokens trained at most (the token cap rounded down to whole steps)
    flops: float  # D * (6 N + 12 L H Q T)


def model_params(config: StudyConfig) -> int:
    """N of the config's model, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=corpus_vocab_size(config), **asdict(config.model)))
    return model.n_params()


def flops_per_token(n_params: int, model_cfg: ModelConfig) -> float:
    """6 N + 12 L H Q T: training FLOPs per token (forward and backward)."""
    n_layer, n_head = model_cfg.n_layer, model_cfg.n_head
    head_dim = model_cfg.n_embd // n_head
    return 6.0 * n_params + 12.0 * n_layer * n_head * head_dim * model_cfg.block_size


def run_tokens(spec: RunSpec, block_size: int) -> int:
    """D: the tokens of the trainer's last allowed step (training/train.py's max_steps)."""
    per_step = spec.global_batch * block_size
    return max(1, spec.token_cap // per_step) * per_step


def run_costs(config: StudyConfig, specs: list[RunSpec]) -> list[RunCost]:
    per_token = flops_per_token(model_params(config), config.model)
    block = config.model.block_size
    return [
        RunCost(s.run_id, run_tokens(s, block), run_tokens(s, block) * per_token) for s in specs
    ]


def train_pass(config: StudyConfig) -> tuple[int, int]:
    """(m, pass): a train job's micro-batch at the largest registered language-model batch,
    m = max(B) / (K W) with W the job's GPUs, and the sequences of one of its forward
    passes, m capped by ``train.micro_batch_max`` (``training.batches.forward_chunk``)."""
    plan = load_plan(config.plan)
    largest = max(
        s.global_batch
        for s in expand_design(plan, config.scale, config.plan)
        if arm_family(plan, s.arm) == "language"
    )
    gpus = int(job_resources(config.as_dict(), "train").get("gpu", 1))
    micro = max(1, largest // (config.train.n_micro * gpus))
    return micro, forward_chunk(config.train, micro)


def flops_per_gpu(config: StudyConfig, tokens_per_second: float | None, per_token: float) -> float:
    """Sustained model FLOP/s of one GPU: measured, or the table's peak times its MFU."""
    if tokens_per_second is not None:
        return tokens_per_second * per_token
    table = config.throughput
    gpu = job_resources(config.as_dict(), "train").get("gpu_model")
    if not table or gpu not in table["peak_flops"]:
        raise SystemExit(
            f"no throughput for GPU model {gpu!r}: give --tokens-per-second (measured by "
            "bench/throughput.py) or add it to throughput.peak_flops in the config"
        )
    return float(table["peak_flops"][gpu]) * float(table["mfu"])


def preflight_path(config: StudyConfig) -> Path:
    """Where ``training.scale.preflight`` writes its JSON:
    ``<results>/preflight/preflight.json``."""
    return Path(config.results) / "preflight" / "preflight.json"


def preflight_throughput(config: StudyConfig, path: Path) -> tuple[float | None, str]:
    """Tokens/s of one GPU measured by a preflight, or None and why not.

    The entry used is the one at the config's ``model_size``, its shape and vocabulary
    (a CPU preflight's shrunken shape never counts), its ``train.compile`` setting and the
    sequences per pass its train jobs run (:func:`train_pass`; a preflight may measure
    several, ``--micro-batch-max``).
    Its rate is that of a run logging one step in ``log_interval``:
    tokens/s / (1 + (overhead ratio - 1) / log_interval).
    """
    if not path.exists():
        return None, f"no preflight JSON at {path}"
    report = json.loads(path.read_text())
    shape = {k: getattr(config.model, k) for k in ("n_layer", "n_head", "n_embd", "block_size")}
    wanted = shape | {"vocab_size": corpus_vocab_size(config)}
    compiled = config.train.compile
    _, pass_sequences = train_pass(config)
    for entry in report["sizes"]:
        model = entry.get("model", {})
        if (
            "error" not in entry
            and entry["compile"] == compiled
            and entry.get("pass_sequences") == pass_sequences
            and {k: model.get(k) for k in wanted} == wanted
        ):
            excess = (entry["logger_overhead_ratio"] - 1.0) / config.train.log_interval
            return float(entry["tokens_per_second"]) / (1.0 + excess), (
                f"throughput: measured by preflight on {report['device']} ({path})"
            )
    return None, (
        f"the preflight JSON at {path} has no measurement of {wanted}, compile {compiled}, "
        f"passes of {pass_sequences} sequences"
    )


def submitted_jobs(config: StudyConfig, n_runs: int, n_language: int) -> dict[str, int]:
    """The design's cluster jobs by rule (the workflow's rules without ``localrule``): a
    train job per run, an evaluate job per language-model run, a score job per run of
    another task family, the synthetic corpus, and the text shards when the config names
    a text corpus."""
    return {
        "train": n_runs,
        "evaluate": n_language,
        "score": n_runs - n_language,
        "corpus": 1,
        "text_shards": 1 if config.text else 0,
    }


def report(
    config: StudyConfig, tokens_per_second: float | None = None, preflight: Path | None = None
) -> str:
    """The printed estimate: model, per-run and total FLOPs, GPU-hours and job counts.

    The per-GPU rate is ``tokens_per_second`` when given, else the preflight JSON's at
    ``preflight`` when it has a measurement of this model, else the config's peak x MFU.
    """
    plan = load_plan(config.plan)
    registered = expand_design(plan, config.scale, config.plan)
    # The language model's runs; another task family (regression) has its own smaller model.
    specs = [s for s in registered if arm_family(plan, s.arm) == "language"]
    n_params = model_params(config)
    per_token = flops_per_token(n_params, config.model)
    costs = run_costs(config, specs)
    total = sum(c.flops for c in costs)
    resources = job_resources(config.as_dict(), "train")
    gpus = int(resources.get("gpu", 1))
    why, source = "no preflight JSON consulted", "throughput: given (--tokens-per-second)"
    if tokens_per_second is None and preflight is not None:
        tokens_per_second, why = preflight_throughput(config, preflight)
        source = why
    rate = flops_per_gpu(config, tokens_per_second, per_token)
    if tokens_per_second is None:
        source = f"assumed: {rate:.4e} FLOP/s per GPU, peak x MFU from the config ({why})"
    gpu_hours = total / rate / 3600.0
    m = config.model
    lines = [
        f"scale {config.scale}, model {config.model_size or '(config model)'}: "
        f"L={m.n_layer} H={m.n_head} d={m.n_embd} T={m.block_size}, "
        f"N={n_params:,} parameters",
        f"FLOPs per token = 6N + 12LHQT = {per_token:.4e}",
        f"runs: {len(specs)}; tokens per run at most {max(c.tokens for c in costs):,} "
        f"(token cap {specs[0].token_cap:,})",
        f"training FLOPs, all runs (upper bound): {total:.4e}",
        f"per-GPU rate: {rate:.4e} FLOP/s = {rate / per_token:,.0f} tokens/s",
        source,
        f"GPU-hours: {gpu_hours:,.4g} ({resources.get('gpu_model', 'GPU')}), "
        f"{gpus} GPUs per run: {gpu_hours / gpus / len(specs):,.4g} h wall per run at most",
    ]
    jobs = submitted_jobs(config, len(registered), len(specs))
    lines.append(
        f"jobs submitted: {jobs['train']} train + {jobs['evaluate']} evaluate + "
        f"{jobs['score']} score + {jobs['corpus'] + jobs['text_shards']} data = "
        f"{sum(jobs.values())} (lm-eval data, statistics, figures, audit and report run locally)"
    )
    if len(registered) > len(specs):
        lines.append(
            f"not in the FLOPs and GPU-hours: {len(registered) - len(specs)} runs of another "
            "task family (regression_sweep), with their own smaller model and token cap"
        )
    return "\n".join(lines)


def load_sized_config(path: Path, model_size: str | None) -> StudyConfig:
    """The typed config of ``path`` at ``model_size`` (default: the file's), its model
    block holding that size's shape (``paper_scale.resolve_model``)."""
    config = read_config(path)
    if model_size is not None:
        config["model_size"] = model_size
    return study_config(resolve_model(config, str(path)), str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/gpu.yaml"))
    parser.add_argument("--model-size", help="a key of the config's models (default model_size)")
    parser.add_argument(
        "--tokens-per-second", type=float, help="measured training tokens/s of one GPU"
    )
    parser.add_argument(
        "--preflight", type=Path, help="preflight JSON (default <results>/preflight/preflight.json)"
    )
    args = parser.parse_args(argv)
    rate = args.tokens_per_second
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        parser.error(f"--tokens-per-second must be a positive number, got {rate}")
    config = load_sized_config(args.config, args.model_size)
    preflight = args.preflight or preflight_path(config)
    print(report(config, args.tokens_per_second, preflight))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
