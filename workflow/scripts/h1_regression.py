"""Snakemake script: H1 on the regression family and its errors per shot
(analysis.h1_regression)."""

import sys

from analysis.h1_regression import write_h1_regression, write_per_shot_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
inputs, out_dir = snakemake.input, snakemake.params.out_dir  # noqa: F821
paths = write_h1_regression(inputs.runs, inputs.plan, out_dir)
paths += write_per_shot_table(inputs.scores, inputs.runs, inputs.plan, out_dir)
print("\n".join(map(str, paths)), file=sys.stderr)
