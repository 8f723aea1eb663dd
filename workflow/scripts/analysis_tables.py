"""Job of rule analysis_tables: tables H1 and T1-T4 (analysis.report.study_tables).

python -m workflow.scripts.analysis_tables --runs RUNS --plan PLAN --scale SCALE --out-dir DIR
"""

from __future__ import annotations

import argparse
import sys

from analysis.report.study_tables import build_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="the runs table (rule collect_runs)")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    paths = build_tables(args.runs, args.plan, args.scale, args.out_dir)
    print("\n".join(map(str, paths)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
