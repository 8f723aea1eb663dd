"""Snakemake script: audit the study against its pre-registration (analysis.audit.checks)."""

import sys

from analysis.audit.checks import run_audit

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
result = run_audit(dict(snakemake.config))  # noqa: F821
for failure in result.failures:
    print(failure, file=sys.stderr)
result.raise_if_failed()
