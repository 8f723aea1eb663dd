"""The exploratory analyses: what the study shows beside its registered tests (DESIGN §5).

None is a registered test and none enters the Holm family. Each builds the table of the
same name that ``analysis.report.exploratory_tables`` writes:

- ``sensitivity``    does a choice inside P-NE* change the ranking of the runs?
- ``power``          simulation-based power and seeds needed for H1 and H3 (and H2, through
                     ``power_phase``) from pilot variance components
- ``power_phase``    the power of H2's late - early contrast
- ``noise_control``  how well each run of the causal arms met its registered noise
- ``evaluation``     each end-of-run evaluation measure against integrated P-NE*
- ``clock``          what P-NE* is made of: the step-size clock sum eta_t / B_t and the
                     noise fraction, per run and arm, and H1's slope with the clock
- ``precision``      H2's and H3's CI width against the registered margin and their power
                     at the registered seeds with the runs' SD

Built on ``analysis.stats``; independent of ``analysis.hypotheses``.
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "sensitivity": (
        "final_exposure",
        "sensitivity_table",
    ),
    "power": (
        "variance_components",
        "simulate_slope_tests",
        "power_h1",
        "simulate_tost",
        "power_h3",
        "seeds_needed",
    ),
    "power_phase": (
        "simulate_phase_contrasts",
        "power_h2",
    ),
    "noise_control": (
        "budget_vs_other_phases",
        "noise_control_table",
        "summary_notes",
    ),
    "evaluation": (
        "ROLES",
        "evaluation_slopes",
    ),
    "clock": (
        "POOLED_ARMS",
        "clock_runs",
        "clock_summary",
        "clock_notes",
    ),
    "precision": (
        "precision_table",
        "precision_sentence",
        "precision_sentences",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
