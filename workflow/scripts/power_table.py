"""Snakemake script: simulation-based power of H1 and H3 from the study's variance components."""

import sys
from pathlib import Path

import pandas as pd

from analysis.power import seeds_needed
from analysis.report import write_csv_and_markdown
from preregistration.plan import load_plan
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
plan = load_plan(snakemake.input.plan)  # noqa: F821
pilot = runs[~runs["excluded"].astype(bool)]
table = pd.concat(
    [seeds_needed(pilot, plan, h, max_seeds=12, n_sim=1000, random_state=0) for h in ("H1", "H3")],
    ignore_index=True,
)
out = Path(snakemake.output.csv)  # noqa: F821
write_csv_and_markdown(table, out.parent, out.stem, "Power of H1 and H3 by seeds (exploratory)", [
    "Variance components (seed intercept SD, residual SD) of the mixed model fitted",
    "on this study's included runs, treated as a pilot. H1: effect = the pilot slope",
    "(optimistic). H3: paired TOST with the plan's margin under no true difference.",
    "1000 simulated studies per row (mc_se: Monte-Carlo SE).",
], table="power")  # fmt: skip
