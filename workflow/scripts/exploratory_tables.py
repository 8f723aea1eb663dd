"""Job of rule exploratory_tables: the exploratory tables (analysis.report.exploratory_tables).

    python -m workflow.scripts.exploratory_tables --tables-dir DIR --plan PLAN --scale SCALE \
        [--curvature-proxy-arms ARM ...]
"""

from __future__ import annotations

import argparse

from analysis.report.exploratory_tables import write_exploratory_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables-dir", required=True, help="holds runs, steps and scores")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument(
        "--curvature-proxy-arms", nargs="*", default=None,
        help="the arms whose runs log the extra curvature proxies (default: every arm)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    write_exploratory_tables(args.tables_dir, args.plan, args.scale, args.curvature_proxy_arms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
