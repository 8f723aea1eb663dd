"""The exploratory analyses: what the study shows beside its registered tests (DESIGN §5).

None is a registered test and none enters the Holm family. Each builds the table of the
same name that ``analysis.report.exploratory_tables`` writes:

- ``sensitivity``    does a choice inside P-NE* change the ranking of the runs?
- ``power``          simulation-based power and seeds needed for H1 and H3 (and H2, through
                     ``power_phase``) from pilot variance components
- ``power_phase``    the power of H2's late - early contrast
- ``noise_control``  how well each run of the causal arms met its registered noise
- ``evaluation``     each end-of-run evaluation measure against integrated P-NE*

Built on ``analysis.stats``; independent of ``analysis.hypotheses``.
"""

from __future__ import annotations

from importlib import import_module

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
}

# Each public name and the module that defines it. A name is imported from its module
# when it is first asked for (PEP 562), so importing one module of the package does not
# import the others (nor their statistics libraries). ``__getattr__`` imports it.
_OWNER = {name: module for module, names in _MODULES.items() for name in names}
__all__ = [name for names in _MODULES.values() for name in names]


def __getattr__(name: str):
    if name in _OWNER:
        return getattr(import_module(f"{__name__}.{_OWNER[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
