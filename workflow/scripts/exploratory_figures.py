"""Snakemake script: Figures 5 and 6 and the ICL curves (figures.exploratory)."""

import sys

from figures.exploratory import build_exploratory_figures

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
paths = build_exploratory_figures(
    snakemake.params.tables_dir,  # noqa: F821
    snakemake.params.out_dir,  # noqa: F821
    snakemake.params.probes,  # noqa: F821
)
print("\n".join(map(str, paths)), file=sys.stderr)
