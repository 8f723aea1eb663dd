"""The audit of a study against its pre-registration (DESIGN §6): ``audit.json``, ``audit.md``.

- ``checks``      the audit's checks, in order, and its command line
                  (``python -m analysis.audit.checks --config <file>``)
- ``runs_table``  the check of the runs table against every registered run's files
- ``findings``    the audit's result (its checks, failures, declared differences, notes)
                  and its two written forms

Reads the runs with ``analysis.runs``; imports no statistics and no report.
"""

from __future__ import annotations

from importlib import import_module

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
