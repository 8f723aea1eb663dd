"""Snakemake script: the estimator-sensitivity table (analysis.sensitivity)."""

import sys
from pathlib import Path

from analysis.report import write_csv_and_markdown
from analysis.sensitivity import sensitivity_table
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
steps = read_table(snakemake.input.steps, "steps")  # noqa: F821
# the runs that log the extra curvature proxies (config train.curvature_proxy_arms; all
# runs when unset); excluded runs are left out, and `note` says both
arms = snakemake.config["train"].get("curvature_proxy_arms")  # noqa: F821
table = sensitivity_table(steps, runs, arms=arms)
out = Path(snakemake.output.csv)  # noqa: F821
write_csv_and_markdown(table, out.parent, out.stem, "Estimator sensitivity (exploratory)", [
    "Curvature proxy: empirical Fisher (registered) vs generalized Gauss-Newton and true "
    "Fisher (both positive semi-definite): per run B / A; across runs the median ratio (scale) "
    "with bootstrap CI, its range (ci_low/ci_high = min/max) and Spearman rank agreement.",
    "hessian_trace: the raw Hessian is indefinite; its share of logging steps with "
    "Tr(PHP) <= 0 and its median ratio to the GGN trace (never a denominator).",
    "Also eta vs eta^2, effective vs potential (clipping), P-NE* vs P-NE.",
    "Runs compared: " + (", ".join(arms) if arms else "every arm") + " (config "
    "train.curvature_proxy_arms); 'all runs' in scope means all of those.",
], table="sensitivity")  # fmt: skip
