"""The deviations log: ``preregistration/deviations.yaml``.

Every difference between the locked plan and what was executed must be declared
here: what changed, why, when, and which data had been seen when it was decided.
Each entry's ``covers`` names the differences it declares as data, so the audit and
the lock can match a difference to its declaration:

- ``plan_change: {from: <sha256 or null>, to: <sha256>}``: the plan was edited after
  its lock (runs recorded under ``from`` are then accepted);
- ``not_run: [H2, ...]``: registered tests not run;
- ``missing_runs`` / ``extra_runs``: run_ids absent from, or added to, the design;
- ``exclusions: [run_id, ...]``: exclusions that no registered rule explains;
- ``tests: {H1: {alpha: 0.1}}``: a T1 field used instead of the registered value.

The schema is ``preregistration/deviations.schema.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from preregistration.plan import PlanError, read_yaml, schema_problems

SCHEMA_PATH = Path(__file__).resolve().parent / "deviations.schema.json"


@dataclass(frozen=True)
class Deviation:
    id: str  # D1, D2, ...
    what: str  # what changed
    why: str
    when: str  # ISO date or date-time of the decision
    data_seen: str  # which data had been seen when it was decided
    covers: dict  # the declared differences, as data (see module docstring)
    scales: tuple[str, ...] | None = None  # scales it applies to; None: all

    def applies_to(self, scale: str) -> bool:
        return self.scales is None or scale in self.scales

    def summary(self) -> str:
        return (
            f"{self.id} ({self.when}; data seen: {self.data_seen}): {' '.join(self.what.split())}"
        )


@dataclass
class DeviationLog:
    """The declared deviations of one file, with look-ups by kind of difference."""

    path: Path
    entries: list[Deviation] = field(default_factory=list)

    def covering(self, kind: str, item: str, scale: str | None = None) -> Deviation | None:
        """The first entry declaring ``item`` under ``covers.<kind>`` (a list kind)."""
        for dev in self.entries:
            if (scale is None or dev.applies_to(scale)) and item in dev.covers.get(kind, []):
                return dev
        return None

    def covering_test(self, key: str, column: str, used, scale: str) -> Deviation | None:
        """The entry declaring that T1 ``column`` of ``key`` used the value ``used``."""
        for dev in self.entries:
            declared = dev.covers.get("tests", {}).get(key, {})
            if dev.applies_to(scale) and column in declared and _same(declared[column], used):
                return dev
        return None

    def plan_changes(self) -> list[tuple[str | None, str, Deviation]]:
        """(from, to, entry) of every declared plan change, in file order."""
        return [
            (dev.covers["plan_change"]["from"], dev.covers["plan_change"]["to"], dev)
            for dev in self.entries
            if "plan_change" in dev.covers
        ]


def _same(declared, used) -> bool:
    if isinstance(declared, (int, float)) and not isinstance(declared, bool):
        try:
            used = float(used)
        except (TypeError, ValueError):
            return False
        return math.isclose(float(declared), used, rel_tol=1e-9) or (
            math.isnan(float(declared)) and math.isnan(used)
        )
    return str(declared) == str(used)


def _iso(value):
    """YAML reads unquoted dates as date objects; the log stores ISO strings."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def load_deviations(path: str | Path) -> DeviationLog:
    """Read and validate the deviations log; a missing file is an empty log.

    Raises ``PlanError`` naming the file and the key of every problem.
    """
    path = Path(path)
    if not path.exists():
        return DeviationLog(path)
    raw = read_yaml(path)
    if raw is None:
        raw = {"deviations": []}
    if isinstance(raw, dict):
        for entry in raw.get("deviations") or []:
            if isinstance(entry, dict) and "when" in entry:
                entry["when"] = _iso(entry["when"])
    problems = schema_problems(raw, json.loads(SCHEMA_PATH.read_text()))
    if not problems:
        ids = [d["id"] for d in raw["deviations"]]
        problems = [
            f"deviations[{i}].id: {d!r} is used more than once"
            for i, d in enumerate(ids)
            if ids.count(d) > 1
        ]
    if problems:
        listed = "\n  ".join(problems)
        raise PlanError(f"{path}: does not satisfy {SCHEMA_PATH.name}:\n  {listed}")
    entries = [
        Deviation(
            id=d["id"],
            what=d["what"],
            why=d["why"],
            when=d["when"],
            data_seen=d["data_seen"],
            covers=d["covers"],
            scales=tuple(d["scales"]) if "scales" in d else None,
        )
        for d in raw["deviations"]
    ]
    return DeviationLog(path, entries)
