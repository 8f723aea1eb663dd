"""The registered tests of H1-H4 and the causal arms' tests (DESIGN §5; plan ``hypotheses``).

- ``h1_monotonicity``  H1: ICL rises with integrated P-NE* at matched loss (mixed-model
                       slope; isotonic, trend and rank companions)
- ``h2_phase``         H2: late- vs early-phase noise (two-way ANOVA, late - early contrast)
- ``h3_equivalence``   H3: source equivalence by paired TOST; loss matching by TOST
- ``h4_tradeoff``      H4: memorization falls with P-NE* (mixed-model slope; Pareto frontier)
- ``arm_tests``        which runs each registered test uses, and H2 and H3 on the causal arms

Built on ``analysis.stats``; the tables that report these tests are ``analysis.report``'s.
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "h1_monotonicity": (
        "H1_COLUMNS",
        "spearman_bootstrap",
        "h1_summary",
    ),
    "h2_phase": (
        "phase_anova",
        "late_minus_early",
    ),
    "h3_equivalence": (
        "EQUIVALENCE_COLUMNS",
        "paired_tost",
        "tost_against_target",
    ),
    "h4_tradeoff": (
        "memorization_slope",
        "pareto_frontier",
    ),
    "arm_tests": (
        "arm_runs",
        "confirmatory_form",
        "h3_pairs",
        "h3_tests",
        "h3_result",
        "h2_result",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
