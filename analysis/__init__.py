"""The analysis of the study: the runs gathered and checked, the registered tests, the
exploratory analyses, the tables and report pages, and the audit.

Subpackages, each a layer that imports only the layers below it (the import-linter
contracts in ``pyproject.toml`` check this):

- ``analysis.report``       the tables (H1, T1-T4, the exploratory tables) and the report's
                            pages, for people
- ``analysis.audit``        the audit of the study against its pre-registration
- ``analysis.hypotheses``   the registered tests of H1-H4 and of the causal arms
- ``analysis.exploratory``  the exploratory analyses (sensitivity, power, noise control,
                            evaluation measures)
- ``analysis.stats``        general statistics, with no knowledge of the study
- ``analysis.runs``         every run's files read, checked and gathered into the tidy tables

``report`` and ``audit`` sit on top and are independent; ``hypotheses`` and
``exploratory`` sit on ``stats`` and are independent; ``stats`` and ``runs`` are
independent of each other. Each subpackage lists its public names in ``__all__`` and
imports a module only when one of its names is first used.
"""
