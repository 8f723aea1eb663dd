"""Checks shared by the statistical functions: the tidy inputs they accept.

Every test of ``analysis/hypotheses/h*.py`` takes a long-format DataFrame (one row per run)
plus column names, in the manner of pingouin. These helpers check the input at the
top of each function and raise ``ValueError`` with a message that names the
function, the column and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

ALTERNATIVES = ("greater", "less", "two-sided")


def require_frame(data: object, func: str) -> pd.DataFrame:
    """``data`` must be a non-empty DataFrame."""
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"{func}: data must be a pandas DataFrame, got {type(data).__name__}")
    if data.empty:
        raise ValueError(f"{func}: data has no rows")
    return data


def require_columns(data: pd.DataFrame, cols: Iterable[str], func: str) -> None:
    """Every column of ``cols`` is present."""
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise ValueError(f"{func}: data lacks column(s) {missing}; has {list(data.columns)}")


def require_numeric(data: pd.DataFrame, cols: Iterable[str], func: str) -> None:
    """Every column of ``cols`` holds numbers."""
    for c in cols:
        if data[c].dtype.kind not in "fiub":
            raise ValueError(f"{func}: column {c!r} must be numeric, found {data[c].dtype}")


def require_alternative(alternative: str, func: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"{func}: alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def require_probability(value: float, name: str, func: str) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < float(value) < 1.0):
        raise ValueError(f"{func}: {name} must be a number in (0, 1), got {value!r}")


def complete_rows(data: pd.DataFrame, cols: list[str], func: str) -> tuple[pd.DataFrame, int]:
    """Rows with a finite value in every column of ``cols``, and how many were left out.

    The count is returned so that callers can report it: nothing is dropped silently.
    """
    require_columns(data, cols, func)
    require_numeric(data, [c for c in cols if data[c].dtype.kind != "O"], func)
    values = data[cols].apply(pd.to_numeric, errors="coerce")
    keep = np.isfinite(values.to_numpy(dtype=float)).all(axis=1)
    return data.loc[keep], int((~keep).sum())


def log_positive(
    values: pd.Series, name: str, func: str, ids: pd.Series | None = None
) -> np.ndarray:
    """Natural log of a strictly positive column; names the offending rows otherwise."""
    arr = values.to_numpy(dtype=float)
    bad = ~(arr > 0)
    if bad.any():
        where = list((ids if ids is not None else values.index.to_series())[bad][:5])
        raise ValueError(f"{func}: {name} must be > 0 to take its log; not so at {where}")
    return np.log(arr)
