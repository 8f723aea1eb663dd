"""The runs: every registered run's files read, checked and gathered into the tidy tables.

- ``collection``     gather the runs' files into ``runs``, ``steps`` and ``scores`` (rule
                     ``collect_runs``)
- ``files``          read one run's files and check them against its place and each other
- ``ending``         what a run's trace says about how it ended (status, steps, tokens, loss)
- ``measures``       a run's end-of-run evaluation measures (probes, lm-eval) as columns
- ``noise_columns``  a run's registered noise options and its controller's record as columns
- ``table_reader``   the per-run tables of many runs read and validated at once
- ``simulate``       simulated runs tables of the registered design, from a known model

Knows the plan and the table contracts (``preregistration``), no statistics: it is
independent of ``analysis.stats``, and the audit (``analysis.audit``) reads runs with it.
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "collection": (
        "build_runs",
        "collect",
    ),
    "files": (
        "RunFilesError",
        "RunRecord",
        "run_dir",
        "missing_run_files",
        "unregistered_records",
        "read_meta",
        "place_problems",
        "scores_problems",
        "read_run",
        "required_measures",
        "source_file",
        "tested_arms",
        "required_measure_problems",
        "recorded_exclusion_problems",
        "prefetched_reader",
        "derive_runs",
    ),
    "ending": (
        "Ending",
        "other_run_rows",
        "max_steps",
        "trace_problems",
        "derive_ending",
        "meta_problems",
    ),
    "measures": (
        "MEASURE_FILES",
        "probe_columns",
        "lm_eval_columns",
        "read_measures",
    ),
    "noise_columns": (
        "DESIGN_COLUMNS",
        "design_columns",
        "noise_control_columns",
    ),
    "table_reader": (
        "read_tables",
        "TableReader",
    ),
    "simulate": (
        "SimulatedSpec",
        "sweep_specs",
        "causal_arm_specs",
        "simulate_runs",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
