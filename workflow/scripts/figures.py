"""Job of rule figures: Figures 1-4, of the hypotheses (figures.make.build_figures).

python -m workflow.scripts.figures --runs RUNS --tables-dir DIR --plan PLAN --out-dir DIR
"""

from __future__ import annotations

import argparse
import sys

from figures.make import build_figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="the runs table (rule collect_runs)")
    parser.add_argument("--tables-dir", required=True, help="the analysis tables' folder")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    paths = build_figures(args.runs, args.tables_dir, args.plan, args.out_dir)
    print("\n".join(map(str, paths)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
