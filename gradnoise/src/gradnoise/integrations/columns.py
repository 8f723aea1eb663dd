"""The scalar P-NE columns of a tap record, the part a framework's logger can take."""

from __future__ import annotations

import numbers


def scalar_columns(record: dict, prefix: str = "") -> dict[str, float]:
    """Every numeric entry of ``record`` as a float, keys prefixed with ``prefix``.

    A record (``gradnoise.tap.NoiseTap.records``) is one row of the steps table's P-NE
    columns plus ``layers``, a list of per-module rows; metric loggers take flat
    name-to-number maps, so ``layers`` and any other non-numeric entry are left out.
    Booleans are left out too (they are flags, not measurements).
    """
    return {
        f"{prefix}{key}": float(value)
        for key, value in record.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool)
    }
