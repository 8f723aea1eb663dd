"""Job of rule cnr_tables: the Counterfactual Noise Replay's tables and report page
(analysis.report.cnr_page) and its figure (figures.cnr).

    python -m workflow.scripts.cnr_tables --cases DIR [DIR ...] --tables-dir DIR \
        --figures-dir DIR [--plan PLAN] [--report-page HTML] [--seed N] [--n-boot N] [--level L]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.report.cnr_page import cnr_tables, write_cnr_tables
from figures.cnr import FIGURE_STEM, plot_cnr
from preregistration.plan import load_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", required=True,
        help="case directories, each with the replay job's predictions.csv and retrains.csv",
    )  # fmt: skip
    parser.add_argument("--tables-dir", required=True, help="where the three tables go")
    parser.add_argument("--figures-dir", required=True, help="where the figure goes")
    parser.add_argument("--plan", default=None, help="the plan (its replay.metrics)")
    parser.add_argument("--report-page", default=None, help="HTML page of cnr_validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--level", type=float, default=0.9, help="level of the bootstrap CI")
    args = parser.parse_args(argv)
    plan = load_plan(args.plan) if args.plan else None
    predictions, retrains, validation = cnr_tables(
        args.cases, plan, level=args.level, n_boot=args.n_boot, seed=args.seed
    )
    paths = write_cnr_tables(
        predictions, retrains, validation, args.tables_dir, plan, args.report_page
    )
    paths += plot_cnr(predictions, retrains, validation, Path(args.figures_dir) / FIGURE_STEM)
    print("\n".join(map(str, paths)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
