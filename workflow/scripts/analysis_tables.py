"""Snakemake script: tables H1 and T1-T4 (analysis.report.study_tables.build_tables)."""

import sys

from analysis.report.study_tables import build_tables

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
paths = build_tables(
    snakemake.input.runs,  # noqa: F821
    snakemake.input.plan,  # noqa: F821
    snakemake.params.scale,  # noqa: F821
    snakemake.params.out_dir,  # noqa: F821
)
print("\n".join(map(str, paths)), file=sys.stderr)
