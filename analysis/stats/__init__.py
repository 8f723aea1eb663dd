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

from preregistration.lazy_exports import lazy_exports

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

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
