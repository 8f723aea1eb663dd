"""Snakemake script: Figure 5, induction-head score and sharpness against integrated P-NE*."""

import sys
from pathlib import Path

from figures.fig5_induction_sharpness import plot_fig5
from preregistration.tables import read_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
runs = read_table(snakemake.input.runs, "runs")  # noqa: F821
uniform = None
for path in map(Path, snakemake.params.probes):  # noqa: F821
    if path.exists():
        probes = read_table(path, "scores")
        uniform = float(probes.set_index("measure").loc["induction_head_score", "chance"])
        print(f"uniform-attention prefix matching {uniform:.4f} (from {path})", file=sys.stderr)
        break
stem = Path(snakemake.output.png).with_suffix("")  # noqa: F821
print("\n".join(map(str, plot_fig5(runs, stem, uniform))), file=sys.stderr)
