"""The root layer: the pre-registration and the contracts the stages meet through.

Nothing here imports a stage; ``training``, ``analysis`` and ``figures`` import
it (the import-linter contracts in ``pyproject.toml`` check this).

- ``plan``       the plan (``plan.yaml``): load, validate, hash; exclusions and decisions
- ``design``     the design's expansion into run specs (conditions x seeds)
- ``lock``       the lock (``plan.lock.json``) and the study's paths
- ``deviations`` the deviations log (``deviations.yaml``)
- ``plan_doc``   the plan's rendering to Markdown (``plan.md``)
- ``tables``     the exchanged tables (steps, scores, runs, layers): their contracts, the
                 value range of every column; ``read_table`` / ``write_table`` / ``validate``
- ``trace_columns``, ``table_columns`` the columns of those tables: type, unit, meaning
- ``report_tables`` the tables the analysis reports (T1 tests, h1, T2-T4, sensitivity, power)
- ``contracts``  declarations -> pandera schemas; errors naming file, column and rows
- ``scores``     the run-level summaries of a scores table (the runs table's score columns)
- ``lazy_exports`` the lazy ``__all__`` of the subpackages of ``analysis`` and ``training``

Command line: ``python -m preregistration render | check | lock | hash``.
"""
