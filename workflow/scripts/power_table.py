"""Snakemake script: simulated power of H1, H2 and H3 from the study's variance components."""

import sys
from pathlib import Path

import pandas as pd

from analysis.power import seeds_needed
from analysis.report import write_csv_and_markdown
from preregistration.design import expand_design
from preregistration.plan import load_plan
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
plan = load_plan(snakemake.input.plan)  # noqa: F821
h1_arms = plan["hypotheses"]["H1"]["arms"]
pilot = runs[~runs["excluded"].astype(bool) & runs["arm"].isin(h1_arms)]
specs = expand_design(plan, snakemake.params.scale)  # noqa: F821
budgets = {s.pne_budget for s in specs if getattr(s, "pne_budget", None) is not None}
n_budgets = max(len(budgets), 2)  # the arms contract registers >= 2 levels
table = pd.concat(
    [seeds_needed(pilot, plan, "H1", max_seeds=12, n_sim=1000, random_state=0)]
    + [
        seeds_needed(pilot, plan, h, max_seeds=40, n_sim=1000, random_state=0,
                     n_budgets=n_budgets, until_sufficient=True)
        for h in ("H2", "H3")
    ],
    ignore_index=True,
)  # fmt: skip
out = Path(snakemake.output.csv)  # noqa: F821
write_csv_and_markdown(table, out.parent, out.stem, "Power of H1-H3 by seeds (exploratory)", [
    f"Variance components (seed intercept SD, residual SD) of the mixed model fitted on this "
    f"study's included runs of arm(s) {', '.join(h1_arms)}, treated as a pilot.",
    "H1: effect = the pilot slope (optimistic).",
    f"H2: late - early contrast = the H3 margin, {n_budgets} budget levels, one-sided.",
    "H3: paired TOST with the plan's margin under no true difference.",
    "H2 and H3 rows stop at the first number of seeds with the target power (max 40).",
    "1000 simulated studies per row (mc_se: Monte-Carlo SE).",
], table="power")  # fmt: skip
