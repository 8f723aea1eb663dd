"""Numbers rounded for people: the one rule set of every table and summary the analysis writes.

Computations keep full precision and the CSV tables keep it too; only the copies
for people (the Markdown tables of ``analysis.report.study_tables.markdown``, the report's
summary of ``analysis.report.pages``) are rounded, here.
"""

from __future__ import annotations

import numpy as np

# Shown for a number that is missing or not finite (NaN, a test that did not run).
MISSING = "–"


def format_value(value: object, digits: int = 4, small: float = 1e-3) -> str:
    """A value as a table cell for people.

    Parameters
    ----------
    value : object
        The cell's value.
    digits : int
        Significant digits of a float.
    small : float
        A float with 0 < |value| < ``small`` gets one significant digit fewer: its
        leading zeros already make it long. ``small=0`` keeps ``digits`` throughout.

    Returns
    -------
    str
        A bool as ``yes`` / ``no``; a float as ``MISSING`` when it is not finite,
        else with ``digits`` significant digits (``g`` format); anything else
        (strings, integers) as ``str(value)``.

    Examples
    --------
    >>> [format_value(v) for v in (0.123456, 0.000123456, 0.0, float("nan"), True, 12)]
    ['0.1235', '0.000123', '0', '–', 'yes', '12']
    >>> format_value(0.000123456, digits=3, small=0)
    '0.000123'
    """
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return MISSING
        shown = digits - 1 if 0 < abs(value) < small else digits
        return f"{value:.{shown}g}"
    return str(value)


def format_p(value: float) -> str:
    """A p-value for people: two significant digits below 0.001, four decimals below 0.01,
    three above; ``MISSING`` when not finite."""
    if not np.isfinite(value):
        return MISSING
    return f"{value:.1e}" if value < 1e-3 else (f"{value:.4f}" if value < 0.01 else f"{value:.3f}")
