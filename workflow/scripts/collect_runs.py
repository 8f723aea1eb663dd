"""Job of rule collect_runs: gather the per-run files into the runs, steps and scores tables.

    python -m workflow.scripts.collect_runs --traces DIR --plan PLAN --scale SCALE \
        --runs OUT --steps OUT --scores OUT
"""

from __future__ import annotations

import argparse
import sys

from analysis.runs.collection import collect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", required=True, help="<traces>/<condition>/seed<seed>/...")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--scale", required=True)
    for table in ("runs", "steps", "scores"):
        parser.add_argument(f"--{table}", required=True, help=f"the {table} table to write")
    args = parser.parse_args(argv)
    runs, unregistered = collect(
        args.traces, args.plan, args.scale, args.runs, args.steps, args.scores
    )
    print(runs.to_string(index=False), file=sys.stderr)
    for directory in unregistered:
        print(f"not read (no registered run; the audit fails on it): {directory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
