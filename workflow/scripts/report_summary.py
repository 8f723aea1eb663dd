"""Snakemake script: the report's opening text (analysis.report_summary.summary_rst)."""

import sys
from pathlib import Path

from analysis.report_summary import summary_rst

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
text = summary_rst(
    snakemake.input.audit,  # noqa: F821
    snakemake.input.t1,  # noqa: F821
    snakemake.input.t2,  # noqa: F821
    snakemake.input.deviations,  # noqa: F821
)
Path(snakemake.output[0]).write_text(text)  # noqa: F821
print(text, file=sys.stderr)
