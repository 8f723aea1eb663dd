"""Wall time of the analysis-only entry point on existing traces (`make analysis`).

Runs the analysis-only workflow (collect, tables, sensitivity, figures, audit;
no data, training or scoring job) on the traces of an existing study, A/B
interleaved with a dry run that only builds the DAG, so Snakemake's start-up
cost shows separately. Prints per repeat and, as the last line,
`analysis_wall_s=<median>`. The goal (issues 5, 20) is at most 30 s for the default
study's 106 runs.

Without a finished default study, ``--synthesise DIR`` first writes one into
``--results``: every run the plan registers at the config's scale, its files made
from a finished smoke study's runs (``DIR``, e.g. results/smoke/runs) of the same
arm and condition kind, with the scale's batch, block size and target, and
``--steps`` logged steps (at most the run's token cap; the default study logs
every step, so its traces hold hundreds to thousands of rows). The values are the
smoke runs' tiled, each run reaching its target at its last step: what the analysis
reads is as large and as valid as a real study's, its statistics are not.

    python bench/analysis_time.py [--config config/config.yaml] [--results results] [--repeats 3]
                                  [--synthesise results/smoke/runs --steps 800]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _template(spec, templates: dict[str, Path]) -> Path:
    """The smoke run of the same condition kind (the condition without its batch size)."""
    kind = re.sub(r"bs\d+", "bs", spec.condition)
    if kind not in templates:
        sys.exit(f"no smoke run of condition kind {kind!r} to build {spec.run_id} from")
    return templates[kind]


def _tiled(frame: pd.DataFrame, steps: np.ndarray) -> pd.DataFrame:
    """Rows of a per-step table for ``steps`` (1, 2, ...), cycling through its own steps."""
    order = np.argsort(frame["step"].to_numpy(), kind="stable")  # rows of each step together
    sorted_steps = frame["step"].to_numpy()[order]
    own, first, count = np.unique(sorted_steps, return_index=True, return_counts=True)
    pick = (steps - 1) % len(own)
    rows = np.concatenate([order[first[i] : first[i] + count[i]] for i in pick])
    return frame.iloc[rows].assign(step=np.repeat(steps, count[pick])).reset_index(drop=True)


def synthesise_run(spec, template: Path, out: Path, n_steps: int, block: int, sha: str) -> None:
    """One registered run's files from a smoke run's (module docstring)."""
    from analysis.runs.ending import EXPOSURES, max_steps

    n = min(n_steps, max_steps(spec.token_cap, spec.global_batch, block))
    steps = np.arange(1, n + 1)
    trace = _tiled(pd.read_parquet(template / "trace.parquet"), steps)
    trace = trace.assign(run_id=spec.run_id, global_batch=spec.global_batch)
    trace["tokens"] = trace["step"] * spec.global_batch * block
    for name in [c for c in trace if c.startswith("int_")]:
        values = trace[name].to_numpy(dtype=float)
        trace[name] = np.cumsum(np.abs(np.diff(values, prepend=0.0)))
    target = spec.target_val_loss
    trace["val_loss"] = trace["val_loss"] + target  # above the target; NaN stays NaN
    trace.loc[trace.index[-1], ["val_loss", "validated"]] = [target - 0.01, True]
    out.mkdir(parents=True, exist_ok=True)
    trace.to_parquet(out / "trace.parquet", index=False)
    layers = pd.read_parquet(template / "layers.parquet")
    _tiled(layers, steps).assign(run_id=spec.run_id).to_parquet(out / "layers.parquet", index=False)
    for name in ("scores.parquet", "probes.parquet", "lm_eval.parquet"):
        if (template / name).exists():
            table = pd.read_parquet(template / name).assign(run_id=spec.run_id)
            table.to_parquet(out / name, index=False)
    meta = json.loads((template / "meta.json").read_text())
    meta |= spec.as_dict() | {"status": "reached_target", "steps": n, "plan_hash": sha}
    meta |= {"tokens": n * spec.global_batch * block, "final_val_loss": target - 0.01}
    meta["config"]["model"]["block_size"] = block
    assert set(EXPOSURES) <= set(trace)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def synthesise(config_path: str, results: Path, templates_dir: Path, n_steps: int) -> int:
    """Write every registered run of the config's scale under ``<results>/runs``."""
    from preregistration.design import expand_design
    from preregistration.plan import load_plan, plan_hash

    config = yaml.safe_load((REPO / config_path).read_text())
    plan = load_plan(REPO / config["plan"])
    templates = {}
    for meta in sorted(templates_dir.glob("*/seed*/meta.json")):
        templates.setdefault(re.sub(r"bs\d+", "bs", meta.parent.parent.name), meta.parent)
    sha = plan_hash(REPO / config["plan"])
    specs = expand_design(plan, config["scale"])
    for spec in specs:
        out = results / "runs" / spec.condition / f"seed{spec.seed}"
        block = config["model"]["block_size"]
        synthesise_run(spec, _template(spec, templates), out, n_steps, block, sha)
    return len(specs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--results", default="results")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthesise", type=Path, help="a smoke study's runs directory")
    parser.add_argument("--steps", type=int, default=800, help="logged steps per synthetic run")
    args = parser.parse_args()
    if args.synthesise:
        n = synthesise(args.config, REPO / args.results, args.synthesise, args.steps)
        print(f"synthesised {n} runs under {args.results}/runs from {args.synthesise}")
    elif not (REPO / args.results / "tables/runs.parquet").exists():
        sys.exit(f"{args.results}/tables/runs.parquet not found: run `make reproduce` first")
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    base = [snakemake, "--cores", "2", "--configfile", args.config, "--config",
            f"results={args.results}", "analysis_only=True", "--forceall"]  # fmt: skip
    full, dry = [], []
    for i in range(args.repeats):
        dry.append(timed([*base, "-n"]))
        full.append(timed(base))
        print(f"repeat {i + 1}: analysis {full[-1]:.1f} s, DAG only (dry run) {dry[-1]:.1f} s")
    print(f"dag_only_wall_s={statistics.median(dry):.1f}")
    print(f"analysis_wall_s={statistics.median(full):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
