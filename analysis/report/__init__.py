"""What the study writes for people: its tables and the pages of its report.

- ``study_tables``        tables H1 and T1-T4 from the runs table and the plan (rule
                          ``analysis_tables``; ``python -m analysis.report.study_tables``)
- ``exploratory_tables``  the exploratory tables (rule ``exploratory_tables``)
- ``regression_tables``   H1 on the in-context regression family, and its per-shot errors
                          (``python -m analysis.report.regression_tables``)
- ``pages``               the study report's own pages (rule ``report_pages``)
- ``formatting``          numbers rounded for people, the one rule set of tables and pages

The top layer of ``analysis`` with ``analysis.audit``: it reports the tests of
``analysis.hypotheses`` and the analyses of ``analysis.exploratory``.
"""

from __future__ import annotations

from importlib import import_module

_MODULES: dict[str, tuple[str, ...]] = {
    "study_tables": (
        "INVENTORY_COLUMNS",
        "tests_table",
        "equivalence_table",
        "loss_matching_table",
        "inventory_table",
        "markdown",
        "write_csv_and_markdown",
        "build_tables",
    ),
    "exploratory_tables": (
        "write_sensitivity",
        "write_power",
        "write_noise_control",
        "write_evaluation",
        "write_exploratory_tables",
    ),
    "regression_tables": (
        "regression_arms",
        "h1_regression",
        "per_shot_table",
        "write_per_shot_table",
        "write_h1_regression",
    ),
    "pages": (
        "SECTIONS",
        "html_table",
        "markdown_html",
        "html_page",
        "markdown_page",
        "read_audit",
        "confirmatory_rows",
        "summary_rst",
        "deviations_page",
        "recorded_versions",
        "software_table",
        "software_page",
    ),
    "formatting": (
        "format_value",
        "format_p",
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
