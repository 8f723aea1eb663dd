"""Read the per-run tables of many runs at once, each validated as ``read_table`` does.

Validating a table against its contract (``preregistration.tables.validate``) costs
a fixed few tenths of a second per call, nearly all of it pandera's per-check
overhead, so 106 runs' five tables cost a minute one file at a time. Every check
of the contracts is either element-wise (value domains, nullability, the
divergence rows of a trace) or depends only on a column's dtype: files with the
same columns of the same dtypes are therefore valid exactly when their
concatenation is. ``read_tables`` validates each such group in one call; a group
that fails, and a file whose columns or dtypes differ from the others', is
validated alone, so every error is the one ``read_table`` gives, naming the file,
the column and the rows.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from preregistration.contracts import read_frame
from preregistration.tables import SCHEMAS, TableError, columns, validate


def _signature(frame: pd.DataFrame) -> tuple:
    return tuple((str(name), str(dtype)) for name, dtype in frame.dtypes.items())


def _ordered(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The frame with the declared columns first, as ``validate`` returns it."""
    declared = columns(table)
    return frame[declared + [c for c in frame.columns if c not in set(declared)]]


def read_tables(
    paths: list[Path], table: str, plan: dict | None = None
) -> dict[Path, pd.DataFrame | TableError]:
    """Each file of ``paths`` read and validated as ``table``: its frame, or the
    ``TableError`` that ``read_table(path, table, plan)`` raises for it."""
    out: dict[Path, pd.DataFrame | TableError] = {}
    frames: dict[Path, pd.DataFrame] = {}
    for path in paths:
        try:
            frames[path] = read_frame(path, table, SCHEMAS[table])
        except TableError as exc:
            out[path] = exc
    groups: dict[tuple, list[Path]] = defaultdict(list)
    for path, frame in frames.items():
        groups[_signature(frame)].append(path)
    for group in groups.values():
        if len(group) > 1:
            batch = pd.concat([frames[p] for p in group], ignore_index=True)
            try:
                validate(batch, table, source=f"{len(group)} files", plan=plan)
            except TableError:
                pass  # validated one by one below, for messages that name the file
            else:
                out |= {p: _ordered(frames[p], table) for p in group}
                continue
        for path in group:
            try:
                out[path] = validate(frames[path], table, source=path, plan=plan)
            except TableError as exc:
                out[path] = exc
    return out


class TableReader:
    """``read_table`` of files read beforehand by ``read_tables``; other files are read
    when asked for. Call it as ``read_table``: ``reader(path, table)``."""

    def __init__(self, plan: dict | None = None):
        self.plan = plan
        self.read: dict[tuple[Path, str], pd.DataFrame | TableError] = {}

    def prefetch(self, paths: list[Path], table: str) -> None:
        found = read_tables([p for p in paths if p.exists()], table, self.plan)
        self.read |= {(path, table): value for path, value in found.items()}

    def __call__(self, path: str | Path, table: str) -> pd.DataFrame:
        key = (Path(path), table)
        if key not in self.read:
            self.prefetch([Path(path)], table)
        value = self.read.get(key)
        if value is None:  # absent: read_frame names the file
            read_frame(path, table, SCHEMAS[table])
        if isinstance(value, TableError):
            raise value
        return value
