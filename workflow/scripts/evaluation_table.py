"""Snakemake script: each evaluation measure against P-NE* (analysis.evaluation_slopes)."""

import sys
from pathlib import Path

from analysis.evaluation_slopes import evaluation_slopes
from analysis.report import write_csv_and_markdown
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
table = evaluation_slopes(runs)
out = Path(snakemake.output.csv)  # noqa: F821
notes = [
    "Slope of each measure on log integrated P-NE* in the mixed model of H1 (seed random "
    "intercept) with final validation loss as covariate, two-sided; excluded runs left out.",
    "format_accuracy is the zero-shot skill control at equal loss (answers in the right token "
    "family without context); a slope near 0 says noise did not change general competence.",
    "Exploratory: no test here is registered; p values are uncorrected.",
]
title = "Evaluation measures against P-NE* at matched loss (exploratory)"
write_csv_and_markdown(table, out.parent, out.stem, title, notes, table="evaluation")
print(table.to_string(index=False), file=sys.stderr)
