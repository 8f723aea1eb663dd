"""Snakemake script: Figure 6, potential vs effective P-NE* under clipping."""

import sys
from pathlib import Path

from figures.fig6_clipping import plot_fig6
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
steps = read_table(snakemake.input.steps, "steps")  # noqa: F821
stem = Path(snakemake.output.png).with_suffix("")  # noqa: F821
print("\n".join(map(str, plot_fig6(steps, runs, stem))), file=sys.stderr)
