"""Table contracts as pandera schemas, and the errors they raise.

A table is declared once (``preregistration.tables``): each column's name, type,
unit, meaning and nullability (a ``Column``) and the values it may hold (a
``Domain``). ``dataframe_schema`` turns a declaration into a
``pandera.DataFrameSchema`` (unit and meaning travel as column metadata);
``check_frame`` validates a DataFrame lazily, so that every failing column is
reported at once, and raises ``TableError`` naming the file, the column, the check
and the offending rows.

Types are checked by the kind of the stored values, not coerced: ``int`` accepts
integer dtypes (and, for a nullable column, floats whose non-missing values are
whole numbers, which is how pandas stores an integer column with NaN); ``float``
accepts integer and float dtypes; ``str`` requires every present value to be a
Python string; ``bool`` requires a boolean dtype (or, nullable, booleans beside
missing values). Missing values are the nullability check's business, and in a
nullable text column '' counts as missing (that is how CSV stores it). Nothing is
converted, so validating a table never changes a written number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import yaml
from pandera.errors import SchemaError, SchemaErrors

# At most this many offending rows (and values) are listed per failing check.
_MAX_ROWS_SHOWN = 10


class TableError(ValueError):
    """A table file is missing, unreadable, or does not match its contract."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "int", "float", "str" or "bool"
    unit: str
    meaning: str
    nullable: bool = False


@dataclass(frozen=True)
class Domain:
    """The values a column may hold (missing values are the nullability's business).

    ``low``/``high``: inclusive bounds (None: unbounded); ``finite``: +-inf refused;
    ``allowed``: the admissible strings; ``plan_key``: the admissible strings are the
    list at this key path of the plan (resolved when a table is validated);
    ``pattern``: a regular expression every string matches in full.
    """

    description: str
    low: float | None = None
    high: float | None = None
    finite: bool = True
    allowed: tuple[str, ...] = ()
    plan_key: tuple[str, ...] = ()
    pattern: str | None = None

    def checks(self, plan: dict | None, nullable: bool = False) -> list[pa.Check]:
        """The pandera check; in a nullable text column '' counts as missing (CSV)."""
        if not (self.plan_key or self.allowed or self.pattern is not None):
            return [pa.Check(_numeric_test(self), name=self.description)]
        name = self.description
        if self.plan_key:
            values = plan_values(plan, self.plan_key)
            name = f"one of {', '.join(values)}"
        else:
            values = list(self.allowed)
        pattern = self.pattern

        def test(series: pd.Series) -> pd.Series:
            if pattern is not None:
                ok = series.astype(str).str.fullmatch(pattern).fillna(False).astype(bool)
            else:
                ok = series.isin(values)
            return ok | (series == "") if nullable else ok

        return [pa.Check(test, name=name)]


def _numeric_test(domain: Domain) -> Callable[[pd.Series], pd.Series]:
    """Element-wise bounds (missing values are dropped before a check runs)."""

    def test(series: pd.Series) -> pd.Series:
        values = series.astype(float)
        ok = np.isfinite(values) if domain.finite else ~np.isnan(values)
        if domain.low is not None:
            ok &= values >= domain.low
        if domain.high is not None:
            ok &= values <= domain.high
        return ok

    return test


# The value domains of the contracts (DESIGN §8: accuracies in [0, 1]; losses,
# exposures and traces finite and non-negative; counts non-negative).
PROBABILITY = Domain("a share or accuracy in [0, 1]", low=0.0, high=1.0)
NONNEGATIVE = Domain("finite and >= 0", low=0.0)
COUNT = Domain("a count >= 0", low=0.0)
POSITIVE_COUNT = Domain("a count >= 1", low=1.0)
FINITE = Domain("finite")
NONNEGATIVE_OR_INF = Domain(">= 0 (+inf allowed)", low=0.0, finite=False)


def one_of(*values: str) -> Domain:
    return Domain(f"one of {', '.join(values)}", allowed=tuple(values))


def from_plan(*key: str) -> Domain:
    return Domain(f"a value of the plan's {'.'.join(key)}", plan_key=tuple(key))


def matching(pattern: str, description: str) -> Domain:
    return Domain(description, pattern=pattern)


# The plan every config names by default, for contracts that refer to it when the
# caller has not passed the plan it works under.
DEFAULT_PLAN = Path(__file__).resolve().parent / "plan.yaml"


@functools.cache
def _default_plan() -> dict:
    # Only read here; preregistration.plan validates the plan wherever it is loaded.
    return yaml.safe_load(DEFAULT_PLAN.read_text())


def plan_values(plan: dict | None, key: Sequence[str]) -> list[str]:
    """The list at ``key`` of ``plan`` (default: ``preregistration/plan.yaml``)."""
    node = _default_plan() if plan is None else plan
    for part in key:
        if not isinstance(node, dict) or part not in node:
            raise TableError(f"plan: no key {'.'.join(key)!r} (a table contract refers to it)")
        node = node[part]
    return [str(v) for v in node]


def _dtype_check(col: Column) -> pa.Check:
    """The declared type, by the kind of the stored values (see the module docstring)."""

    def test(series: pd.Series) -> bool | pd.Series:
        if len(series) == 0:
            return True  # a header-only CSV reads every column as text
        if col.dtype == "str":  # missing values are the nullability check's business
            return series.map(lambda v: isinstance(v, str) or v is None or v != v)
        kind = series.dtype.kind
        present = series.dropna() if col.nullable else series
        if col.nullable and len(present) == 0:
            return True  # a column of missing values only (a test that did not run)
        if col.dtype == "bool":
            return kind == "b" or bool(present.map(lambda v: isinstance(v, bool | np.bool_)).all())
        if col.dtype == "float":
            return kind in "fiu"
        if kind in "iu":
            return True
        return col.nullable and kind == "f" and bool((present == np.round(present)).all())

    expected = {"int": "integer", "float": "float or integer", "str": "text", "bool": "boolean"}
    return pa.Check(test, name=f"dtype {expected[col.dtype]}", ignore_na=False)


def dataframe_schema(
    table: str,
    columns: Sequence[Column],
    domains: dict[str, Domain],
    plan: dict | None = None,
) -> pa.DataFrameSchema:
    """The pandera schema of ``table``: declared columns, types, nullability and values.

    Extra columns are allowed (a later stage may add measures); the declared ones
    must all be present. Unit and meaning are each column's ``metadata``.
    """
    unknown = sorted(set(domains) - {c.name for c in columns})
    if unknown:
        raise KeyError(f"table {table!r}: value domains for undeclared column(s) {unknown}")
    schema_columns = {}
    for col in columns:
        checks = [_dtype_check(col)]
        if col.name in domains:
            checks += domains[col.name].checks(plan, col.nullable)
        schema_columns[col.name] = pa.Column(
            dtype=None,
            checks=checks,
            nullable=col.nullable,
            required=True,
            description=col.meaning,
            metadata={"unit": col.unit, "dtype": col.dtype, "meaning": col.meaning},
        )
    return pa.DataFrameSchema(schema_columns, name=table, strict=False, ordered=False)


def check_frame(df: pd.DataFrame, schema: pa.DataFrameSchema, source: str | Path) -> None:
    """Validate ``df`` against ``schema``; ``TableError`` names source, columns and rows."""
    try:
        schema.validate(df, lazy=True)
    except SchemaErrors as exc:
        raise TableError(_message(exc.failure_cases, df, schema.name, source)) from None
    except SchemaError as exc:  # raised eagerly by a few pandera checks even when lazy
        problem = f"{source}: table '{schema.name}' does not match its contract: {exc}"
        raise TableError(problem) from None


def _message(cases: pd.DataFrame, df: pd.DataFrame, table: str, source: str | Path) -> str:
    """One line per (column, check): the rows and their values.

    Rows are the frame's index labels: for a table read from a file, 0-based data rows
    (CSV line = row + 2).
    """
    lines = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        if check == "column_in_dataframe":
            missing = sorted(str(v) for v in group["failure_case"])
            lines.append(f"missing column(s) {missing}")
            continue
        if column is None or (isinstance(column, float) and np.isnan(column)):
            lines.append(f"{check}: {list(group['failure_case'])[:_MAX_ROWS_SHOWN]}")
            continue
        rows = [_label(i) for i in group["index"].dropna()]
        values = list(group["failure_case"])
        what = "missing values" if check == "not_nullable" else f"expected {check}"
        shown = ", ".join(str(r) for r in rows[:_MAX_ROWS_SHOWN])
        more = f" and {len(rows) - _MAX_ROWS_SHOWN} more" if len(rows) > _MAX_ROWS_SHOWN else ""
        if rows:
            found = "" if check == "not_nullable" else f"; found {values[:_MAX_ROWS_SHOWN]}"
            lines.append(f"column '{column}': {what}; row(s) {shown}{more}{found}")
        else:
            lines.append(f"column '{column}': {what}, found dtype {df[column].dtype}")
    listed = "\n  ".join(lines)
    return f"{source}: table '{table}' does not match its contract:\n  {listed}"


def _label(index: object) -> object:
    """A row label as written in messages: 3, not 3.0 (pandera mixes None into them)."""
    return int(index) if isinstance(index, int | float | np.number) else index


def empty_frame(columns: Sequence[Column]) -> pd.DataFrame:
    """No rows, every column typed as declared."""
    kinds = {"int": "int64", "float": "float64", "str": "object", "bool": "bool"}
    return pd.DataFrame({c.name: pd.Series(dtype=kinds[c.dtype]) for c in columns})


def read_frame(path: str | Path, table: str, columns: Sequence[Column]) -> pd.DataFrame:
    """Read a Parquet or CSV file; a missing or unreadable file is a ``TableError``.

    CSV: empty text is kept as '' in text columns and read as missing elsewhere.
    """
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: file not found (expected table '{table}')")
    try:
        if path.suffix != ".csv":
            return pd.read_parquet(path)
        return pd.read_csv(
            path,
            dtype={c.name: str for c in columns if c.dtype == "str"},
            keep_default_na=False,
            na_values={c.name: ["", "NaN", "nan", "NA"] for c in columns if c.dtype != "str"},
        )
    except Exception as exc:  # pyarrow raises several types for truncated or corrupt files
        raise TableError(f"{path}: cannot be read as table '{table}' ({exc})") from exc


def describe_columns(columns: Sequence[Column], domains: dict[str, Domain]) -> str:
    """A Markdown table of the columns: type, unit, meaning and admissible values."""
    lines = ["| column | type | unit | meaning | values |", "|---|---|---|---|---|"]
    for c in columns:
        values = domains[c.name].description if c.name in domains else ""
        if c.nullable:
            values = f"{values}; may be missing" if values else "may be missing"
        cells = [f"`{c.name}`", c.dtype, c.unit, c.meaning, values]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
