"""Job of rule exploratory_figures: Figures 5 and 6, the ICL curves and the clock decomposition
(figures.exploratory).

    python -m workflow.scripts.exploratory_figures --tables-dir DIR --out-dir DIR \
        [--probes PROBES ...]
"""

from __future__ import annotations

import argparse
import sys

from figures.exploratory import build_exploratory_figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables-dir", required=True, help="holds runs, steps and scores")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument(
        "--probes", nargs="*", default=[],
        help="the language runs' probes.parquet (Figure 5's uniform-attention level)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    paths = build_exploratory_figures(args.tables_dir, args.out_dir, args.probes)
    print("\n".join(map(str, paths)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
