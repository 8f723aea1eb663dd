"""Command line for one training run: ``python -m training.run`` (or under ``torchrun``).

Reads the resolved study config (JSON, as Snakemake passes it), picks the run's
spec from the pre-registration plan, trains it, and writes into ``--out``:
``checkpoint.pt``, ``trace.parquet`` (table ``steps``), ``layers.parquet`` (the
per-layer breakdown, when logged) and ``meta.json`` (spec, status, plan hash,
config, package versions, wall time).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from preregistration.design import expand_design
from preregistration.plan import load_plan, plan_hash
from preregistration.tables import columns, read_table, write_table
from training.config import StudyConfig, study_config
from training.data.shards import load_corpus
from training.distributed import init_distributed
from training.regression.task import family_config
from training.replay.plan import replay_plan
from training.train import package_versions, save_checkpoint, train_run


def find_spec(config: StudyConfig, condition: str, seed: int):
    plan = load_plan(config.plan)
    for spec in expand_design(plan, config.scale, config.plan):
        if spec.condition == condition and spec.seed == seed:
            return spec
    raise SystemExit(
        f"{config.plan}: no registered run {condition!r} with seed {seed} at scale {config.scale!r}"
    )


def trace_table(trace: pd.DataFrame) -> pd.DataFrame:
    """The trace with every declared column of the steps table, in order.

    A diverged step's row has no estimate: its per-step columns are absent, hence NaN.
    """
    return trace.reindex(columns=list(dict.fromkeys(columns("steps") + list(trace))))


def reference_trace(spec, path: Path | None) -> pd.DataFrame | None:
    """The reference run's trace when the spec names one (errors name the file or the run)."""
    if spec.reference is None:
        return None
    if path is None:
        raise SystemExit(
            f"run {spec.run_id} follows reference {spec.reference!r}: pass --reference-trace "
            f"(the trace.parquet of {spec.reference} seed {spec.seed})"
        )
    return read_table(path, "steps")


def replay_recording(config: StudyConfig, spec, out: Path, fresh: bool):
    """The run's replay recording when the plan registers it as a replay base (plan
    ``replay``, ``training.replay.plan``); a fresh start clears states of an earlier run."""
    replay = replay_plan(load_plan(config.plan), config.scale, config.plan)
    recording = replay.recording(spec, out) if replay is not None else None
    if recording is not None and fresh and recording.directory.exists():
        shutil.rmtree(recording.directory)
    return recording


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True, help="resolved study config as JSON")
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--condition", required=True)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--reference-trace", type=Path, default=None,
        help="trace.parquet of the run's reference (RunSpec.reference), for noise arms",
    )  # fmt: skip
    args = parser.parse_args(argv)
    config = study_config(json.loads(args.config_json), "--config-json")
    torch.set_num_threads(config.threads_per_run)
    init_distributed()
    spec = find_spec(config, args.condition, args.seed)
    config = family_config(config, load_plan(config.plan), spec.arm, config.plan)
    # A regression run draws its prompts from the registered task (training.regression.task).
    corpus = None if config.is_regression else load_corpus(args.corpus)
    hash_at_start = plan_hash(config.plan)
    resume = args.out / "resume.pt"  # kept across a killed job, removed once the run ends
    reference = reference_trace(spec, args.reference_trace)
    recording = replay_recording(config, spec, args.out, fresh=not resume.exists())
    model, result = train_run(
        spec, config, corpus, resume_path=resume, reference_trace=reference,
        tensorboard_dir=args.out / "tensorboard", replay=recording,
    )  # fmt: skip
    if dist.is_initialized() and dist.get_rank() != 0:
        return 0
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_table(trace_table(result.trace), "steps", out / "trace.parquet")
    write_table(result.layers, "layers", out / "layers.parquet")
    save_checkpoint(out / "checkpoint.pt", model, spec, result)
    meta = spec.as_dict() | {
        "status": result.status,
        "steps": result.steps,
        "tokens": result.tokens,
        "final_val_loss": result.final_val_loss,
        "wall_time_s": result.wall_time_s,
        "noise_control": result.noise_control,
        "plan_hash": hash_at_start,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "config": config.run_record(),
        "packages": package_versions(),
        "python": platform.python_version(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    resume.unlink(missing_ok=True)
    print(
        f"{spec.run_id}: {result.status} after {result.steps} steps, {result.tokens} tokens, "
        f"val loss {result.final_val_loss:.4f}, {result.wall_time_s:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
