"""Snakemake script: H1 on the regression family (analysis.h1_regression)."""

import sys

from analysis.h1_regression import write_h1_regression

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
paths = write_h1_regression(
    snakemake.input.runs,  # noqa: F821
    snakemake.input.plan,  # noqa: F821
    snakemake.params.out_dir,  # noqa: F821
)
print("\n".join(map(str, paths)), file=sys.stderr)
