"""The root layer: the pre-registration and the contracts the stages meet through.

Nothing here imports a stage; ``training``, ``analysis`` and ``figures`` import
it (the import-linter contracts in ``pyproject.toml`` check this).

- ``plan``       the plan (``plan.yaml``): load, validate, hash; exclusions and decisions
- ``design``     the design's expansion into run specs (conditions x seeds)
- ``lock``       the lock (``plan.lock.json``) and the study's paths
- ``deviations`` the deviations log (``deviations.yaml``)
- ``plan_doc``   the plan's rendering to Markdown (``plan.md``)
- ``tables``     every exchanged table's columns: type, unit, meaning, value range
- ``contracts``  those tables as pandera schemas; ``read_table`` / ``write_table``
- ``scores``     the run-level summaries of a scores table (the runs table's score columns)

Command line: ``python -m preregistration render | check | lock | hash``.
"""
