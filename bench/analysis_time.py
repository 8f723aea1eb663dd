"""Wall time of the analysis-only entry point on existing traces (`make analysis`).

Runs the analysis-only workflow (collect, tables, sensitivity, figures, audit;
no data, training or scoring job) on the traces of an existing study, A/B
interleaved with a dry run that only builds the DAG, so Snakemake's start-up
cost shows separately. Prints per repeat and, as the last line,
`analysis_wall_s=<median>`. The goal (issue 5) is at most 30 s.

    python bench/analysis_time.py [--config config/config.yaml] [--results results] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--results", default="results")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (REPO / args.results / "tables/runs.parquet").exists():
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
