"""The pre-registration plan: reading, validating, hashing and evaluating it.

The plan (``preregistration/plan.yaml``) holds the design and the registered
analysis; the config only names a scale. ``plan_hash`` is the SHA-256 of the plan
file's bytes: every run records it, and the lock holds it.

Every read validates the plan against ``preregistration/plan.schema.json`` and
then checks what a schema cannot say (columns exist, families agree, predicates
parse); errors name the file and the key. Two parts of the plan are executable
data, evaluated here with pandas ``DataFrame.eval``:

- ``exclusions[i].when``: a predicate over the runs table (``apply_exclusions``);
- ``hypotheses.<H>.decision.supported_if``: a predicate over a row of the
  confirmatory-tests table T1 (``decide``).

Command line: ``python -m preregistration render | check | lock | hash``
(``preregistration/__main__.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from preregistration.tables import SCHEMAS, columns

SCHEMA_PATH = Path(__file__).resolve().parent / "plan.schema.json"
DEFAULT_PLAN = Path("preregistration/plan.yaml")

# The columns of T1 that identify a test as registered (the rest are its results).
REGISTERED_FIELDS = ("label", "test", "outcome", "sidedness", "alpha", "margin", "family")
_DTYPES = {"int": "int64", "float": "float64", "str": "object", "bool": "bool"}


class PlanError(ValueError):
    """The plan file is missing, malformed, or does not match its lock."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last silently."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> object:
    """Parse a YAML file (duplicate keys refused); errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise PlanError(f"{path}: file not found")
    return _parse_yaml(path.read_bytes(), path)


def _parse_yaml(data: bytes, path: Path) -> object:
    try:
        return yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: not valid YAML ({exc})") from exc


def schema_problems(instance: object, schema: dict) -> list[str]:
    """Every violation of ``schema`` as 'key.path: message', in document order."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path]):
        where = key_path(error.absolute_path) or "(top level)"
        hint = error.schema.get("description") if isinstance(error.schema, dict) else None
        problems.append(f"{where}: {error.message}" + (f" (expected: {hint})" if hint else ""))
    return problems


def key_path(parts) -> str:
    """'hypotheses.H1.alpha' / 'exclusions[0].when' from a sequence of keys and indices."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def plan_hash(path: str | Path) -> str:
    """SHA-256 (hex) of the plan file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# Plans validated in this process, by (resolved path, SHA-256 of the bytes): a run's job
# reads its plan four times, and parsing and checking it against the schema is 0.1-0.2 s.
_VALIDATED: dict[tuple[str, str], dict] = {}


def load_plan(path: str | Path) -> dict:
    """Read the plan YAML and validate it; errors name the file and the key.

    A file this process has already validated, byte for byte, is not parsed and checked
    again; every call returns a copy of its own.
    """
    path = Path(path)
    if not path.exists():
        raise PlanError(f"{path}: plan file not found")
    data = path.read_bytes()
    key = (str(path.resolve()), hashlib.sha256(data).hexdigest())
    if key not in _VALIDATED:
        plan = _parse_yaml(data, path)
        if not isinstance(plan, dict):
            raise PlanError(f"{path}: expected a mapping at the top level")
        validate_plan(plan, source=path)
        _VALIDATED[key] = plan
    return copy.deepcopy(_VALIDATED[key])


def validate_plan(plan: dict, source: str | Path = "plan") -> None:
    """Schema and cross-field checks; one ``PlanError`` listing every problem."""
    schema = json.loads(SCHEMA_PATH.read_text())
    problems = schema_problems(plan, schema)
    if not problems:
        problems = _cross_field_problems(plan)
    if problems:
        listed = "\n  ".join(problems)
        raise PlanError(f"{source}: does not satisfy {SCHEMA_PATH.name}:\n  {listed}")


def _registered(plan: dict) -> dict[str, tuple[str, dict]]:
    """Key -> (section, definition) of every registered test, hypotheses first."""
    out = {key: ("hypotheses", spec) for key, spec in plan["hypotheses"].items()}
    out.update({key: ("controls", spec) for key, spec in plan.get("controls", {}).items()})
    return out


def _cross_field_problems(plan: dict) -> list[str]:
    problems = []
    runs_cols = set(columns("runs"))
    arms = set(plan["design"]["arms"])
    correction = plan["correction"]
    for key in correction["family"]:
        if key not in plan["hypotheses"]:
            problems.append(f"correction.family: {key!r} is not a key of hypotheses")
    for key in set(plan["hypotheses"]) & set(plan.get("controls", {})):
        problems.append(f"controls.{key}: the name is also a hypothesis")
    for key, (section, spec) in _registered(plan).items():
        where = f"{section}.{key}"
        if section == "hypotheses":
            if key not in correction["family"] or spec["family"] != correction["name"]:
                problems.append(
                    f"{where}.family: a hypothesis belongs to the correction family "
                    f"{correction['name']!r} and is listed in correction.family"
                )
        used = [("outcome", spec["outcome"])] + [
            (f"covariates[{i}]", c) for i, c in enumerate(spec.get("covariates", []))
        ]
        if "predictor" in spec:
            used.append(("predictor", re.sub(r"^log\((.*)\)$", r"\1", spec["predictor"])))
        for field, col in used:
            if col not in runs_cols:
                problems.append(f"{where}.{field}: {col!r} is not a column of the runs table")
        if (spec["sidedness"] == "equivalence") != ("margin" in spec):
            problems.append(f"{where}.margin: required for, and only for, sidedness 'equivalence'")
        for i, arm in enumerate(spec["arms"]):
            if arm not in arms:
                problems.append(f"{where}.arms[{i}]: {arm!r} is not an arm of design.arms")
        try:
            _predicate(_empty("tests"), spec["decision"]["supported_if"], "")
        except PlanError as exc:
            problems.append(f"{where}.decision.supported_if: {exc}")
    for scale, design in plan["design"]["scales"].items():
        for arm in design["arms"]:
            if arm not in arms:
                problems.append(f"design.scales.{scale}.arms.{arm}: not an arm of design.arms")
    ids = [rule["id"] for rule in plan["exclusions"]]
    for i, rule in enumerate(plan["exclusions"]):
        if ids.count(rule["id"]) > 1:
            problems.append(f"exclusions[{i}].id: {rule['id']!r} is used by more than one rule")
        try:
            _predicate(_empty("runs"), rule["when"], "")
        except PlanError as exc:
            problems.append(f"exclusions[{i}].when: {exc}")
    return problems


def scale_design(plan: dict, scale: str, source: str | Path = "plan") -> dict:
    """The design block of one scale (conditions, seeds, target loss, token cap)."""
    scales = plan.get("design", {}).get("scales", {})
    if scale not in scales:
        raise PlanError(f"{source}: design.scales has no scale {scale!r} (has {sorted(scales)})")
    return scales[scale]


def resolve_margin(margin: float | str | None, design: dict) -> float:
    """A registered margin as a number: a literal, or the scale key it names (NaN if none)."""
    if margin is None:
        return math.nan
    if isinstance(margin, str):
        return float(design[margin])
    return float(margin)


def registered_tests(plan: dict, scale: str) -> pd.DataFrame:
    """The registered tests as T1 would carry them: one row per hypothesis and control.

    Returns
    -------
    DataFrame with columns ``hypothesis`` and ``REGISTERED_FIELDS`` (label, test,
    outcome, sidedness, alpha, margin, family), typed as in preregistration/report_tables.py
    TESTS; ``supported_if`` (the decision criterion) and ``arms`` (comma-separated)
    follow. Margins naming a scale key are resolved for ``scale``.
    """
    design = scale_design(plan, scale)
    rows = []
    for key, (section, spec) in _registered(plan).items():
        confirmatory = section == "hypotheses"
        rows.append(
            {
                "hypothesis": key,
                "label": "confirmatory" if confirmatory else "control",
                "test": spec["test"],
                "outcome": spec["outcome"],
                "sidedness": spec["sidedness"],
                "alpha": float(spec["alpha"]),
                "margin": resolve_margin(spec.get("margin"), design),
                "family": spec["family"] if confirmatory else "",
                "supported_if": spec["decision"]["supported_if"],
                "arms": ",".join(spec["arms"]),
            }
        )
    return pd.DataFrame(rows)


def decide(plan: dict, row: dict | pd.Series) -> str:
    """'supported' or 'not supported': the registered criterion evaluated on a T1 row.

    ``row`` holds the T1 columns of one test (hypothesis, estimate, p, p_holm, alpha,
    margin, ...); its ``hypothesis`` names the registered test whose
    ``decision.supported_if`` is applied.
    """
    key = row["hypothesis"]
    registered = _registered(plan)
    if key not in registered:
        raise PlanError(f"plan: {key!r} is neither a hypothesis nor a control")
    section, spec = registered[key]
    expr = spec["decision"]["supported_if"]
    frame = pd.DataFrame([dict(row)])
    hit = _predicate(frame, expr, f"{section}.{key}.decision.supported_if")
    return "supported" if bool(hit.iloc[0]) else "not supported"


def apply_exclusions(runs: pd.DataFrame, plan: dict) -> pd.DataFrame:
    """Set ``excluded`` and ``exclusion_reason`` of every run by the registered rules.

    Each rule's ``when`` is evaluated over the runs table; a run matching any rule
    is excluded, with the ``id`` of the first matching rule (plan order) as reason;
    other runs get ``excluded = False`` and reason ''. Runs are never dropped.
    Returns a copy; the input is not modified.
    """
    out = runs.copy()
    excluded = pd.Series(False, index=out.index)
    reason = pd.Series("", index=out.index, dtype=object)
    for i, rule in enumerate(plan["exclusions"]):
        hit = _predicate(out, rule["when"], f"exclusions[{i}].when")
        reason[hit & ~excluded] = rule["id"]
        excluded |= hit
    out["excluded"] = excluded.astype(bool)
    out["exclusion_reason"] = reason
    return out


def _empty(table: str) -> pd.DataFrame:
    """An empty frame with the declared columns and dtypes of ``table``."""
    return pd.DataFrame({c.name: pd.Series(dtype=_DTYPES[c.dtype]) for c in SCHEMAS[table]})


def _predicate(frame: pd.DataFrame, expr: str, where: str) -> pd.Series:
    """Evaluate a registered predicate to one bool per row (missing values -> False)."""
    prefix = f"{where}: " if where else ""
    try:
        result = frame.eval(expr, engine="python")
    except Exception as exc:  # pandas raises NameError, SyntaxError, ValueError, TypeError...
        raise PlanError(f"{prefix}cannot evaluate {expr!r} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(result, pd.Series) or result.dtype.kind != "b":
        raise PlanError(f"{prefix}{expr!r} does not give one true/false value per row")
    return result.fillna(False).astype(bool)
