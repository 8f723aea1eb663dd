"""A run's registered noise options and its noise controller's record, as runs-table columns.

The causal arms (issue 10; DESIGN §3) register per run a noise form, the run it
follows (its ``reference``, same seed), its role (``condition``, or ``reference``
when another arm registers it as a pairing's reference) and, for the phase
schedules, the phase and level of its added P-NE* budget. ``design_columns``
reads them from the run's spec (``preregistration.design.RunSpec``; a spec
without these fields is a run without noise), so the collection and the audit
take one reading. ``noise_control_columns`` reads the trainer's record of how
well the controller met them (``meta.json`` key ``noise_control``).
"""

from __future__ import annotations

import math
from pathlib import Path

from preregistration.tables import NOISE_FORMS

NOISE_CONTROL_KEYS = ("tracking_error_median", "pne_star_ratio_reference", "realised_budget")
DESIGN_COLUMNS = ("role", "noise_form", "phase", "pne_budget", "reference_run")


def design_columns(spec) -> dict:
    """``role``, ``noise_form``, ``phase``, ``pne_budget``, ``reference_run`` of ``spec``.

    ``reference_run`` is the run id ``<reference>_s<seed>`` of the reference
    condition at the spec's own seed ('' when the spec has none).
    """
    noise = getattr(spec, "noise", None) or {}
    reference = getattr(spec, "reference", None)
    budget = getattr(spec, "pne_budget", None)
    return {
        "role": getattr(spec, "role", None) or "condition",
        "noise_form": str(noise.get("form", "none")),
        "phase": getattr(spec, "phase", None) or "",
        "pne_budget": float(budget) if budget is not None else math.nan,
        "reference_run": f"{reference}_s{spec.seed}" if reference else "",
    }


def noise_control_columns(meta: dict, form: str, path: Path) -> tuple[dict, list[str]]:
    """The runs-table columns of ``meta['noise_control']`` (NaN when absent), and problems.

    A problem names ``path`` and the key: a value that is not a number >= 0 or
    null, or a recorded ``form`` other than the registered ``form`` of the run.
    """
    record = meta.get("noise_control")
    out = dict.fromkeys(NOISE_CONTROL_KEYS, math.nan)
    if record is None:
        return out, []
    if not isinstance(record, dict):
        return out, [f"{path}: key 'noise_control' is {record!r}, expected a JSON object"]
    problems = []
    for key in NOISE_CONTROL_KEYS:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            problems.append(
                f"{path}: key 'noise_control.{key}' is {value!r}, expected a number >= 0 or null"
            )
        else:
            out[key] = float(value)
    recorded = record.get("form")
    if recorded is not None and recorded not in NOISE_FORMS:
        problems.append(
            f"{path}: key 'noise_control.form' is {recorded!r}, expected one of {NOISE_FORMS}"
        )
    elif recorded is not None and recorded != form:
        problems.append(
            f"{path}: key 'noise_control.form' is {recorded!r}, but the run is registered "
            f"with noise form {form!r}"
        )
    return out, problems
