"""Snakemake script: the exploratory tables (analysis.report.exploratory_tables)."""

import sys
from pathlib import Path

from analysis.report.exploratory_tables import write_exploratory_tables

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
write_exploratory_tables(
    Path(snakemake.input.runs).parent,  # noqa: F821
    snakemake.input.plan,  # noqa: F821
    snakemake.params.scale,  # noqa: F821
    snakemake.params.curvature_proxy_arms,  # noqa: F821
)
