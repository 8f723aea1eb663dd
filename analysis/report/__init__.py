"""What the study writes for people: its tables and the pages of its report.

- ``study_tables``        tables H1 and T1-T4 from the runs table and the plan (rule
                          ``analysis_tables``; ``python -m analysis.report.study_tables``)
- ``exploratory_tables``  the exploratory tables (rule ``exploratory_tables``)
- ``precision_tables``    the precision H2 and H3 achieved and their power on the runs
- ``regression_tables``   H1 on the in-context regression family, and its per-shot errors
                          (``python -m analysis.report.regression_tables``)
- ``pages``               the study report's own pages (rule ``report_pages``)
- ``html_render``         their HTML: a table, a Markdown file, a self-contained page
- ``formatting``          numbers rounded for people, the one rule set of tables and pages

The top layer of ``analysis`` with ``analysis.audit``: it reports the tests of
``analysis.hypotheses`` and the analyses of ``analysis.exploratory``.
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

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
        "write_clock",
        "write_exploratory_tables",
    ),
    "precision_tables": (
        "precision_inputs",
        "write_precision",
    ),
    "regression_tables": (
        "regression_arms",
        "h1_regression",
        "per_shot_table",
        "excess_table",
        "half_zero_sentence",
        "write_per_shot_table",
        "write_excess_table",
        "write_h1_regression",
    ),
    "html_render": (
        "html_table",
        "markdown_html",
        "html_page",
    ),
    "pages": (
        "SECTIONS",
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

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
