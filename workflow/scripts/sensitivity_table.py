"""Snakemake script: the estimator-sensitivity table (analysis.sensitivity)."""

import sys
from pathlib import Path

from analysis.report import write_csv_and_markdown
from analysis.sensitivity import sensitivity_table
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
steps = read_table(snakemake.input.steps, "steps")  # noqa: F821
table = sensitivity_table(steps, runs)  # leaves excluded runs out, and says so in `note`
out = Path(snakemake.output.csv)  # noqa: F821
write_csv_and_markdown(table, out.parent, out.stem, "Estimator sensitivity (exploratory)", [
    "Curvature proxy (empirical Fisher vs Hutchinson), eta vs eta^2, clipping.",
], table="sensitivity")  # fmt: skip
