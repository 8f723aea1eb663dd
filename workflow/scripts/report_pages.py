"""Snakemake script: the report's table pages, deviations and software versions
(analysis.report_summary)."""

import sys

from analysis.report_summary import deviations_page, markdown_page, software_page

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
inp, out = snakemake.input, snakemake.output  # noqa: F821
pages = ("audit", "t1", "h1", "t3", "t4", "sensitivity", "power", "noise_control")
pages += ("evaluation", "h1_regression", "regression_shots", "t2")
for name in pages:
    print(markdown_page(inp[name], out[name]), file=sys.stderr)
print(deviations_page(inp.deviations, out.deviations), file=sys.stderr)
print(software_page(inp.plan, list(inp.meta), out.software), file=sys.stderr)
