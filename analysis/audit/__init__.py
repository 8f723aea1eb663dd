"""The audit of a study against its pre-registration (DESIGN §6): ``audit.json``, ``audit.md``.

- ``checks``      the audit's checks, in order, and its command line
                  (``python -m analysis.audit.checks --config <file>``)
- ``runs_table``  the check of the runs table against every registered run's files
- ``findings``    the audit's result (its checks, failures, declared differences, notes)
                  and its two written forms

Reads the runs with ``analysis.runs``; imports no statistics and no report.
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "checks": ("run_audit",),
    "runs_table": (
        "traces_dir",
        "check_trace_files",
        "check_run_files",
    ),
    "findings": (
        "AuditError",
        "Check",
        "AuditResult",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
