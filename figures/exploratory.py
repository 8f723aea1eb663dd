"""The exploratory figures, from the gathered tables alone (no analysis table).

``build_exploratory_figures`` writes under ``out_dir`` fig5_induction_sharpness
(``figures.fig5_induction_sharpness``), fig6_clipping (``figures.fig6_clipping``),
icl_curves (``figures.icl_curves``) and clock_decomposition (``figures.clock``:
integrated P-NE* against the step-size clock per run), each as PNG and PDF. They need only the
``runs``, ``steps`` and ``scores`` tables, so the workflow draws them beside the
analysis tables (rule ``exploratory_figures``), without the statistics that
Figures 1-4 import.
"""

from __future__ import annotations

from pathlib import Path

from figures.clock import plot_clock
from figures.fig5_induction_sharpness import plot_fig5
from figures.fig6_clipping import plot_fig6
from figures.icl_curves import plot_icl_curves
from preregistration.tables import read_table


def uniform_prefix_matching(probe_paths: list[str | Path]) -> float | None:
    """The chance level of ``induction_head_score`` (uniform attention), from the first
    probes table of ``probe_paths`` that exists; None when none does."""
    for path in map(Path, probe_paths):
        if path.exists():
            probes = read_table(path, "scores")
            return float(probes.set_index("measure").loc["induction_head_score", "chance"])
    return None


def build_exploratory_figures(
    tables_dir: str | Path, out_dir: str | Path, probe_paths: list[str | Path] = ()
) -> list[Path]:
    """Write Figures 5 and 6, the ICL curves and the clock decomposition (PNG and PDF) under
    ``out_dir`` from the
    ``runs``, ``steps`` and ``scores`` tables of ``tables_dir``; return their paths.

    Figure 5's reference line is the uniform-attention level of the first of
    ``probe_paths`` (per-run probe tables) that exists (``uniform_prefix_matching``).
    """
    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    runs = read_table(tables_dir / "runs.parquet", "runs")
    steps = read_table(tables_dir / "steps.parquet", "steps")
    scores = read_table(tables_dir / "scores.parquet", "scores")
    uniform = uniform_prefix_matching(probe_paths)
    paths = plot_fig5(runs, out_dir / "fig5_induction_sharpness", uniform)
    paths += plot_fig6(steps, runs, out_dir / "fig6_clipping")
    paths += plot_icl_curves(scores, runs, out_dir / "icl_curves")
    paths += plot_clock(steps, runs, out_dir / "clock_decomposition")
    return paths
