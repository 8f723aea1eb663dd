"""Snakemake script: per run of the causal arms, how the noise controller met its registration."""

import sys
from pathlib import Path

from analysis.noise_control import noise_control_table, summary_notes
from analysis.report import write_csv_and_markdown
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
table = noise_control_table(runs)
out = Path(snakemake.output.csv)  # noqa: F821
write_csv_and_markdown(
    table, out.parent, out.stem, "Noise control: tracking and realised budgets per run",
    summary_notes(table), table="noise_control",
)  # fmt: skip
