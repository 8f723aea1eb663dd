"""Wall time and values of the end-of-run probes (``training.probe_scores``) on trained runs.

Loads each run's ``checkpoint.pt`` (``training.train.save_checkpoint``) and the
study's corpus, runs ``probe_scores`` with one thread (the study's
``threads_per_run``), and prints the seconds of each probe group and the measures
side by side.

Usage::

    .venv/bin/python bench/probe_cost.py --corpus results/data/corpus.pt \\
        results/runs/bs8_fixed/seed0 results/runs/bs64_fixed/seed0 [--out probes.csv]

The last line printed is ``probe_seconds_per_run=<mean total seconds>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.model import GPT, GPTConfig  # noqa: E402
from training.probe_scores import probe_scores  # noqa: E402

PROBE_CFG = {
    "probe_batch": 64,
    "hessian_iters": 20,
    "hessian_tol": 1e-3,
    "sam_rho": 0.05,
    "head_sequences": 64,
    "segment_len": 12,
    "icl_shots": 8,
    "icl_episodes": 16,
    "icl_orders": 10,
    "finetune_steps": 10,
    "lr_gd": 0.1,
    "lr_adam": 1e-3,
    "top_k": 3,
    "format_queries": 400,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with checkpoint.pt")
    parser.add_argument("--out", type=Path, help="also write the long table here (CSV)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    corpus = torch.load(args.corpus, weights_only=False)
    tables, times = [], []
    for run in args.runs:
        ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
        model = GPT(GPTConfig(**ckpt["gpt_config"]))
        model.load_state_dict(ckpt["model"])
        timings: dict[str, float] = {}
        run_id = f"{run.parent.name}/{run.name}"
        tables.append(probe_scores(model, corpus, PROBE_CFG, run_id, timings))
        times.append(timings)
        print(f"{run_id}: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    if args.out is not None:
        pd.concat(tables).to_csv(args.out, index=False)
    wide = pd.concat(tables).pivot_table(
        index="measure", columns="run_id", values="value", sort=False
    )
    chance = tables[0].set_index("measure")["chance"]
    print(wide.assign(chance=chance).to_string(float_format=lambda x: f"{x:.4g}"))
    total = sum(sum(t.values()) for t in times) / len(times)
    print(f"probe_seconds_per_run={total:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
