"""Snakemake script: gather per-run files into runs, steps and scores tables."""

import sys

from analysis.runs.collection import collect

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs, unregistered = collect(
    snakemake.params.traces,  # noqa: F821
    snakemake.input.plan,  # noqa: F821
    snakemake.params.scale,  # noqa: F821
    snakemake.output.runs,  # noqa: F821
    snakemake.output.steps,  # noqa: F821
    snakemake.output.scores,  # noqa: F821
)
print(runs.to_string(index=False), file=sys.stderr)
for directory in unregistered:
    print(f"not read (no registered run; the audit fails on it): {directory}", file=sys.stderr)
