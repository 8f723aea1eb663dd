"""What Counterfactual Noise Replay costs: recording (time and disk per run) and the replay
of the registered candidates against retraining them (issue 21 items 1 and 5).

Builds the config's corpus, trains the reference of the plan's first replay base and then
the base itself for ``--steps`` steps (its target set to 0 so that it runs them all),
``--repeats`` times with recording and without it, interleaved (A/B, one process): the
ratio of their wall times is the recording's time cost, and the replay directory's size
its disk cost (per state and per run, also scaled to the run lengths given by
``--run-steps``). Then one replay case at the plan's first switch point on that run
(``training.replay.case.run_case``): the seconds of the segment's regeneration, of each
Jacobian's predictions (the forward replay and its reverse pass, all candidates, metrics
and horizons at once) and of each retrain, and the ratio of CNR's cost (regeneration and
the adamw predictions) to the retraining of the registered candidates it stands in for.

    python bench/cnr_cost.py [--config config/config.yaml] [--steps 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from preregistration.design import expand_design
from preregistration.plan import load_plan
from training.config import study_config
from training.data.corpus import build_corpus
from training.recording import ReplayRecording
from training.replay.case import run_case
from training.replay.plan import replay_plan
from training.train import train_run

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config/config.yaml"))
    parser.add_argument("--steps", type=int, default=96, help="steps of the bench's base run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run-steps", type=int, nargs="*", default=[178, 184, 195],
                        help="run lengths to scale the disk figure to")  # fmt: skip
    args = parser.parse_args()
    cfg = study_config(yaml.safe_load(Path(args.config).read_text()), args.config)
    torch.set_num_threads(cfg.threads_per_run)
    plan = load_plan(REPO / cfg.plan)
    replay = replay_plan(plan, cfg.scale, cfg.plan)
    if replay is None:
        raise SystemExit(f"{cfg.plan}: no replay registered at scale {cfg.scale!r}")
    specs = {(s.condition, s.seed): s for s in expand_design(plan, cfg.scale, cfg.plan)}
    base = specs[(replay.base_condition, replay.base_seeds[0])]
    t0 = time.perf_counter()
    corpus = build_corpus(cfg.data, cfg.model.block_size)
    print(f"corpus built in {time.perf_counter() - t0:.1f} s")
    tokens = args.steps * base.global_batch * cfg.model.block_size
    base = replace(base, target_val_loss=0.0, token_cap=tokens)
    ref = replace(specs[(base.reference, base.seed)], target_val_loss=0.0, token_cap=tokens)
    t0 = time.perf_counter()
    reference = train_run(ref, cfg, corpus, show_progress=False)[1].trace
    print(f"reference {ref.run_id}: {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / base.condition / f"seed{base.seed}"
        recording = ReplayRecording(run_dir / "replay", replay.record_every)
        seconds: dict[str, list[float]] = {"plain": [], "recording": []}
        for _ in range(args.repeats):
            for arm in ("plain", "recording"):
                t0 = time.perf_counter()
                train_run(
                    base, cfg, corpus, show_progress=False, reference_trace=reference,
                    replay=recording if arm == "recording" else None,
                )  # fmt: skip
                seconds[arm].append(time.perf_counter() - t0)
        files = sorted(recording.directory.glob("step*.pt"))
        size = sum(f.stat().st_size for f in files)
        plain, recorded = (statistics.median(seconds[k]) for k in ("plain", "recording"))
        print(f"\nrecording: {args.steps} steps of {base.run_id}, every {replay.record_every}")
        print(f"  wall (median of {args.repeats}): plain {plain:.2f} s, recording "
              f"{recorded:.2f} s, ratio {recorded / plain:.3f}")  # fmt: skip
        print(f"  all times: {json.dumps(seconds)}")
        print(f"  disk: {len(files)} states, {size / 1e6:.2f} MB ({size / len(files) / 1e6:.2f} "
              "MB a state)")  # fmt: skip
        for n in args.run_steps:
            k = n // replay.record_every
            print(f"  a {n}-step run: {k} states, about {k * size / len(files) / 1e6:.1f} MB")

        (run_dir / "meta.json").write_text(json.dumps({"steps": args.steps}))
        fraction = replay.switch_points[0]
        t0 = time.perf_counter()
        predictions, retrains = run_case(base, cfg, corpus, reference, run_dir, replay, fraction)
        total = time.perf_counter() - t0
    methods = predictions[predictions.method != "no_change"].groupby("method").cost_s.first()
    once = retrains.drop_duplicates("candidate").set_index("candidate")
    candidates = once[once.role == "candidate"].cost_s
    shape = f"{len(candidates)} candidates, {len(replay.metrics)} metrics"
    print(f"\nreplay case at {fraction} of the run ({shape}, horizons {list(replay.horizons)}): "
          f"{total:.1f} s")  # fmt: skip
    for method, s in methods.items():
        print(f"  predictions, {method}: {s:.1f} s (regeneration included)")
    print(f"  retrains: {candidates.sum():.1f} s for the candidates ({candidates.mean():.2f} s "
          f"each), {once.cost_s.sum():.1f} s with recorded and floor")  # fmt: skip
    print(f"  cost ratio CNR (adamw) / retraining the candidates: "
          f"{methods['adamw'] / candidates.sum():.2f}")  # fmt: skip
    print(f"  all three Jacobians / retraining: {methods.sum() / candidates.sum():.2f}")


if __name__ == "__main__":
    main()
