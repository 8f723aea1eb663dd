"""Ways to damage a run's files, for tests/analysis/test_damaged_inputs.py and
tests/analysis/test_tampered_tables.py: each returns a change applied to a run's directory.

``clean_study`` builds the clean smoke-scale study they copy (``run_factory``: every
registered run's files, one run diverged, one stopped at its token cap, collected
once, so its runs table plays the table of an earlier collection).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from run_factory import Study

DIVERGED, CAPPED, RUN = "bs4_fixed_s0", "bs8_fixed_s1", "bs8_sqrt_s1"
STATUSES = {DIVERGED: "diverged", CAPPED: "token_cap"}


def clean_study(root: Path) -> Study:
    """The clean study under ``root``, collected, with its T1 table."""
    study = Study.create(root, STATUSES)
    study.collect()
    study.write_t1()
    return study


def copy_study(clean: Study, root: Path) -> Study:
    """A copy of ``clean`` under ``root``, its runs table that of an earlier collection."""
    shutil.copytree(clean.root, root / "study")
    return Study(root / "study")


def failures(result, name: str) -> str:
    return "\n".join(next(c for c in result.checks if c.name == name).failures)


# --- ways to damage a file ------------------------------------------------------------


def edit_meta(**changes) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        path = directory / "meta.json"
        meta = json.loads(path.read_text())
        for key, value in changes.items():
            if value is DELETE:
                del meta[key]
            else:
                meta[key] = value
        path.write_text(json.dumps(meta))

    return change


DELETE = object()


def edit_table(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]):
    """Rewrite ``name`` through ``change`` without validation (damage may break the schema)."""

    def edit(directory: Path) -> None:
        path = directory / name
        change(pd.read_parquet(path)).to_parquet(path, index=False)

    return edit


def set_cell(column: str, row: int, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({column: object}) if isinstance(value, str) else df
        df.loc[df.index[row], column] = value
        return df

    return change


def remove(name: str):
    return lambda directory: (directory / name).unlink()


def overwrite(name: str, data: bytes):
    return lambda directory: (directory / name).write_bytes(data)


def truncate(name: str):
    def change(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: len(data) // 2])

    return change


def meta_block_size(value):
    def change(directory: Path) -> None:
        path = directory / "meta.json"
        meta = json.loads(path.read_text())
        meta["config"]["model"]["block_size"] = value
        path.write_text(json.dumps(meta))

    return change


def both(*changes):
    def change(directory: Path) -> None:
        for c in changes:
            c(directory)

    return change


@dataclass(frozen=True)
class Damage:
    file: str  # the file the error must name
    change: Callable[[Path], None]
    expect: str  # what the error must say
    run: str = RUN


def scaled(column: str, factor: float):
    return lambda df: df.assign(**{column: df[column] * factor})


def last_validation_above_target(df):  # the last validation no longer reaches the target (3.8)
    return df.assign(val_loss=df["val_loss"].where(df.index < len(df) - 1, 3.9))


TRACE, META, SCORES = "trace.parquet", "meta.json", "scores.parquet"
