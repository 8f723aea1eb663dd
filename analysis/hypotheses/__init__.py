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

from importlib import import_module

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
