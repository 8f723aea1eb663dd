"""Snakemake script: Figures 1-4, of the hypotheses (figures.make.build_figures)."""

import sys

from figures.make import build_figures

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
paths = build_figures(
    snakemake.input.runs,  # noqa: F821
    snakemake.params.tables_dir,  # noqa: F821
    snakemake.input.plan,  # noqa: F821
    snakemake.params.out_dir,  # noqa: F821
)
print("\n".join(map(str, paths)), file=sys.stderr)
