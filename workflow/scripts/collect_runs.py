"""Snakemake script: gather per-run files into runs, steps and scores tables."""

import sys

from analysis.collect import collect

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = collect(
    snakemake.params.traces,  # noqa: F821
    snakemake.input.plan,  # noqa: F821
    [tuple(k) for k in snakemake.params.run_keys],  # noqa: F821
    snakemake.output.runs,  # noqa: F821
    snakemake.output.steps,  # noqa: F821
    snakemake.output.scores,  # noqa: F821
)
print(runs.to_string(index=False), file=sys.stderr)
