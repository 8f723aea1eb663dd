"""General statistics: the tests and fits the analysis uses, with no knowledge of the hypotheses.

Every function takes a tidy DataFrame (or arrays) plus column names and returns numbers or
a small table; none reads the plan or names a hypothesis, arm or table of the study.

- ``inputs``            the checks of the tidy inputs every statistical function makes
- ``mixed_model``       the random-intercept mixed-model slope test (H1, H4, power, evaluation)
- ``isotonic``          the isotonic fit, its bootstrap band and its permutation test
- ``trend``             Page's L and the Jonckheere-Terpstra test of an ordered trend
- ``rank_correlation``  Spearman's rho with a paired bootstrap CI
- ``multiplicity``      the Holm correction over a family of tests
- ``monte_carlo``       the Monte Carlo steps of a power simulation (studies, rejections, rate)

Imports nothing of the study (no plan, no table contract, no other part of ``analysis``):
the import-linter contracts of ``pyproject.toml`` check it.
"""

from __future__ import annotations

from importlib import import_module

_MODULES: dict[str, tuple[str, ...]] = {
    "inputs": (
        "ALTERNATIVES",
        "require_frame",
        "require_columns",
        "require_numeric",
        "require_alternative",
        "require_probability",
        "complete_rows",
        "log_positive",
    ),
    "mixed_model": ("mixed_slope",),
    "isotonic": (
        "isotonic_fit",
        "isotonic_permutation_test",
    ),
    "trend": (
        "condition_order",
        "page_trend",
        "jonckheere_terpstra",
    ),
    "rank_correlation": ("spearman_with_ci",),
    "multiplicity": ("holm",),
    "monte_carlo": (
        "simulate_studies",
        "rejections",
        "rejection_rate",
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
