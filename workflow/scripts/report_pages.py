"""Snakemake script: the report's opening text, its table pages, deviations and software
versions (analysis.report.pages). The replay's table page and figure are written by its own
job (rule cnr_tables); the opening text words its table when there is one."""

import sys
from pathlib import Path

from analysis.report.pages import deviations_page, markdown_page, software_page, summary_rst

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
inp, out = snakemake.input, snakemake.output  # noqa: F821
# cnr_validation_csv: an input only when the plan registers a replay (report.smk)
cnr = inp.cnr_validation_csv if "cnr_validation_csv" in inp.keys() else None
text = summary_rst(
    inp.audit_json, inp.t1_csv, inp.t2_csv, inp.deviations, inp.clock_summary_csv,
    inp.precision_csv, cnr,
)  # fmt: skip
Path(out.summary).write_text(text)
print(text, file=sys.stderr)
pages = ("audit", "t1", "precision", "h1", "clock_summary", "clock_runs", "t3", "t4")
pages += ("sensitivity", "power", "noise_control", "evaluation", "h1_regression")
pages += ("regression_shots", "regression_excess", "t2")
for name in pages:
    print(markdown_page(inp[name], out[name]), file=sys.stderr)
print(deviations_page(inp.deviations, out.deviations), file=sys.stderr)
print(software_page(inp.plan, list(inp.meta), out.software), file=sys.stderr)
