"""Snakemake script: ICL accuracy vs shots and memorization per condition."""

import sys
from pathlib import Path

from figures.icl_curves import plot_icl_curves
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
scores = read_table(snakemake.input.scores, "scores")  # noqa: F821
stem = Path(snakemake.output.png).with_suffix("")  # noqa: F821
print("\n".join(map(str, plot_icl_curves(scores, runs, stem))), file=sys.stderr)
