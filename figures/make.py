"""Every figure of the study from the runs table, the tables and the plan.

``build_figures`` writes under ``out_dir`` the figures of the hypotheses:
fig1_pne_icl, fig2_phase, fig3_equivalence, fig4_frontier, each as PNG and PDF
(the exploratory figures: ``figures.exploratory``). A figure whose arm has no runs
yet still renders, with a panel that says so.

CLI: ``python -m figures.make --runs R --tables DIR --plan P --out DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from figures.fig1_pne_icl import plot_fig1
from figures.fig2_phase import plot_fig2
from figures.fig3_equivalence import plot_fig3
from figures.fig4_frontier import plot_fig4
from preregistration.plan import load_plan
from preregistration.tables import read_table


def build_figures(
    runs_path: str | Path,
    tables_dir: str | Path,
    plan_path: str | Path,
    out_dir: str | Path,
    random_state: int | None = None,
) -> list[Path]:
    """Write Figures 1-4 (PNG and PDF) under ``out_dir``; return their paths."""
    plan = load_plan(plan_path)
    if random_state is None:
        random_state = int(plan.get("random_seeds", {}).get("analysis", 0))
    runs = read_table(runs_path, "runs")
    tables_dir = Path(tables_dir)
    t1 = read_table(tables_dir / "t1_confirmatory.csv", "tests")
    h1 = read_table(tables_dir / "h1.csv", "h1")
    t3 = read_table(tables_dir / "t3_equivalence.csv", "equivalence")
    t4 = read_table(tables_dir / "t4_loss_matching.csv", "loss_matching")
    hyps = plan["hypotheses"]
    paths = plot_fig1(runs, h1, hyps["H1"], out_dir, random_state=random_state)
    paths += plot_fig2(runs, t1, hyps["H2"], out_dir)
    paths += plot_fig3(t3, t4, hyps["H3"], out_dir)
    paths += plot_fig4(runs, t1, hyps["H4"], out_dir)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="runs table (Parquet or CSV)")
    parser.add_argument("--tables", required=True, help="directory written by analysis.report")
    parser.add_argument("--plan", required=True, help="preregistration/plan.yaml")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    for path in build_figures(args.runs, args.tables, args.plan, args.out):
        print(path)


if __name__ == "__main__":
    main()
