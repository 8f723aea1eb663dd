"""Snakemake script: the estimator-sensitivity table (analysis.sensitivity)."""

import sys

from analysis.report import markdown
from analysis.sensitivity import sensitivity_table
from analysis.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
steps = read_table(snakemake.input.steps, "steps")  # noqa: F821
table = sensitivity_table(steps, runs[~runs["excluded"]])
table.to_csv(snakemake.output.csv, index=False)  # noqa: F821
with open(snakemake.output.md, "w") as fh:  # noqa: F821
    fh.write(
        markdown(
            table,
            "Estimator sensitivity (exploratory)",
            [
                "Curvature proxy (empirical Fisher vs Hutchinson) and eta vs eta^2 exposure.",
            ],
        )
    )
