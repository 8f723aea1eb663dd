"""Wall time and values of the end-of-run probes (``training.evaluation.probes``) on trained runs.

Loads each run's ``checkpoint.pt`` (``training.train.save_checkpoint``) and the
study's corpus, runs ``probe_scores`` with one thread (the study's
``threads_per_run``), and prints the seconds of each probe group and the measures
side by side.

Usage::

    .venv/bin/python bench/probe_cost.py --corpus results/data/corpus.pt \\
        results/runs/bs8_fixed/seed0 results/runs/bs64_fixed/seed0 [--out probes.csv]

The last line printed is ``probe_seconds_per_run=<mean total seconds>``.

With ``--hessian`` it times only the Hessian probe on each run's probe batch: the
registered Lanczos iteration (``training.evaluation.curvature.hessian_top_eigenvalue``)
against the power iteration it replaced (:func:`power_iteration`, kept here as the
baseline), both at the registered ``hessian_iters`` and ``hessian_tol``, and a
reference eigenvalue from Lanczos run to ``rel_tol`` 1e-10; the last line is
``hessian_seconds_ratio=<Lanczos / power, summed over runs>``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.checkpoints import load_plain  # noqa: E402
from training.data.shards import load_corpus  # noqa: E402
from training.evaluation.curvature import hessian_top_eigenvalue  # noqa: E402
from training.evaluation.probes import probe_scores  # noqa: E402
from training.model import GPT, GPTConfig, lm_loss  # noqa: E402

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


def power_iteration(loss_closure, params, n_iter: int, rel_tol: float, generator) -> dict:
    """The Hessian probe before issue 20: power iteration v <- H v / |H v| with the
    Rayleigh quotient as estimate, stopped at a relative change below ``rel_tol`` or
    after ``n_iter`` Hessian-vector products (the baseline of ``--hessian``)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def dot(xs, ys) -> float:
        return float(sum((x * y).sum() for x, y in zip(xs, ys, strict=True)))

    with sdpa_kernel(SDPBackend.MATH):
        loss = loss_closure()
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
    norm = math.sqrt(dot(v, v))
    v = [x / norm for x in v]
    eigenvalue, used = math.nan, 0
    for used in range(1, n_iter + 1):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        new = dot(v, hv)
        rel_change = abs(new - eigenvalue) / max(abs(new), 1e-30) if used > 1 else math.inf
        eigenvalue, norm = new, math.sqrt(dot(hv, hv))
        if norm == 0.0 or rel_change < rel_tol:
            break
        v = [x.detach() / norm for x in hv]
    return {"eigenvalue": eigenvalue, "n_iter": float(used)}


def compare_hessian(model: GPT, corpus: dict, run_id: str) -> tuple[float, float]:
    """Print both probes' seconds, products and values on the run's probe batch (the
    first ``probe_batch`` validation sequences, seed as in ``training.evaluation.probes``)."""
    batch = corpus["val"][: PROBE_CFG["probe_batch"]].long()
    params = [p for p in model.parameters() if p.requires_grad]

    def loss():
        return lm_loss(model(batch[:, :-1]), batch[:, 1:])

    n_iter, tol = PROBE_CFG["hessian_iters"], PROBE_CFG["hessian_tol"]
    out = {}
    for name, probe, iters, rel_tol in [
        ("power", power_iteration, n_iter, tol),
        ("lanczos", hessian_top_eigenvalue, n_iter, tol),
        ("reference", hessian_top_eigenvalue, 300, 1e-10),
    ]:
        start = time.perf_counter()
        result = probe(loss, params, iters, rel_tol, torch.Generator().manual_seed(0))
        out[name] = (time.perf_counter() - start, result["n_iter"], result["eigenvalue"])
    ref = out["reference"][2]
    for name, (seconds, used, value) in out.items():
        print(
            f"{run_id} {name:>9}: {seconds:6.2f} s, {used:3.0f} Hessian-vector products, "
            f"eigenvalue {value:.6g} (relative error {value / ref - 1:+.2e})"
        )
    return out["power"][0], out["lanczos"][0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with checkpoint.pt")
    parser.add_argument("--out", type=Path, help="also write the long table here (CSV)")
    parser.add_argument(
        "--hessian", action="store_true", help="only Lanczos against power iteration"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    corpus = load_corpus(args.corpus)
    tables, times, hessian = [], [], []
    for run in args.runs:
        ckpt = load_plain(run / "checkpoint.pt")
        model = GPT(GPTConfig(**ckpt["gpt_config"]))
        model.load_state_dict(ckpt["model"])
        timings: dict[str, float] = {}
        run_id = f"{run.parent.name}/{run.name}"
        if args.hessian:
            hessian.append(compare_hessian(model, corpus, run_id))
            continue
        tables.append(probe_scores(model, corpus, PROBE_CFG, run_id, timings))
        times.append(timings)
        print(f"{run_id}: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    if args.hessian:
        power, lanczos = (sum(column) for column in zip(*hessian, strict=True))
        print(f"hessian_seconds_ratio={lanczos / power:.3f}")
        return 0
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
