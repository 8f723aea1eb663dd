"""The lock of the pre-registration: ``preregistration/plan.lock.json``.

The lock holds the SHA-256 of plan.yaml's bytes and the time it was written, with
the history of earlier locks. Locking is free while no confirmatory trace exists.
Once one does (any ``<results>/runs/*/*/meta.json`` or ``<results>/tables/runs.parquet``)
a changed plan is locked again only when ``deviations.yaml`` declares the change
(``covers.plan_change`` from the locked hash to the new one), saying what changed,
why, when, and which data had been seen.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

from preregistration.deviations import load_deviations
from preregistration.plan import PlanError, load_plan, plan_hash, read_yaml
from preregistration.plan_doc import check_markdown

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study, as a config names them."""

    scale: str
    plan: Path
    lock: Path
    results: Path
    deviations: Path  # config key ``deviations``; default: beside the plan

    @property
    def runs_table(self) -> Path:
        return self.results / "tables" / "runs.parquet"

    @property
    def tests_table(self) -> Path:
        """Table T1, the confirmatory (and control, exploratory) tests."""
        return self.results / "tables" / "t1_confirmatory.csv"


def study_paths(config: dict, source: str | Path = "config") -> StudyPaths:
    """The study's paths from a config mapping (keys scale, plan, lock, results)."""
    if not isinstance(config, dict):
        raise PlanError(f"{source}: expected a mapping at the top level")
    missing = [k for k in ("scale", "plan", "lock", "results") if not config.get(k)]
    if missing:
        raise PlanError(f"{source}: missing key(s) {missing}")
    plan = Path(config["plan"])
    deviations = config.get("deviations") or plan.parent / "deviations.yaml"
    return StudyPaths(
        scale=str(config["scale"]),
        plan=plan,
        lock=Path(config["lock"]),
        results=Path(config["results"]),
        deviations=Path(deviations),
    )


def read_config(path: str | Path) -> dict:
    """The config YAML as a mapping; errors name the file."""
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise PlanError(f"{path}: expected a mapping at the top level")
    return config


def read_lock(path: str | Path) -> dict:
    """The lock record; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise PlanError(f"{path}: lock file not found; run `python -m preregistration lock`")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or not _SHA256.match(str(record.get("sha256", ""))):
        raise PlanError(f"{path}: key 'sha256' must hold a 64-digit hex SHA-256")
    if not isinstance(record.get("locked_at"), str):
        raise PlanError(f"{path}: key 'locked_at' must hold an ISO time")
    return record


def confirmatory_traces(paths: StudyPaths) -> list[Path]:
    """Trace files of the study: run metadata under ``<results>/runs`` and the runs table."""
    found = sorted(paths.results.glob("runs/*/*/meta.json"))
    return found + ([paths.runs_table] if paths.runs_table.exists() else [])


def lock_plan(paths: StudyPaths, now: dt.datetime | None = None) -> str:
    """Write the lock for ``paths.plan``; return what was done.

    Refuses (``PlanError``) when the plan is invalid, when plan.md disagrees with it,
    or when confirmatory traces exist and no deviation declares the change.
    """
    load_plan(paths.plan)
    problems = check_markdown(paths.plan)
    if problems:
        raise PlanError("; ".join(problems) + " before locking")
    new = plan_hash(paths.plan)
    old = read_lock(paths.lock) if paths.lock.exists() else None
    if old is not None and old["sha256"] == new:
        return f"{paths.lock}: already locks {paths.plan} (sha256 {new}), unchanged"
    traces = confirmatory_traces(paths)
    declared = None
    if traces:
        before = old["sha256"] if old else None
        log = load_deviations(paths.deviations)
        declared = next(
            (dev for frm, to, dev in log.plan_changes() if frm == before and to == new), None
        )
        if declared is None:
            what = f"was locked at sha256 {before}" if before else "was never locked"
            more = f" and {len(traces) - 1} more" if len(traces) > 1 else ""
            raise PlanError(
                f"{paths.lock}: refusing to lock {paths.plan} again: confirmatory traces exist "
                f"({traces[0]}{more}). The plan {what} and now has sha256 {new}. Declare the "
                f"change in {paths.deviations} (what, why, when, data_seen, and "
                f"covers: {{plan_change: {{from: {before or 'null'}, to: {new}}}}}) first."
            )
    now = now or dt.datetime.now(dt.UTC)
    history = []
    if old is not None:
        history = old.get("history", []) + [{k: v for k, v in old.items() if k != "history"}]
    record = {
        "plan": str(paths.plan),
        "sha256": new,
        "locked_at": now.isoformat(timespec="seconds"),
        "deviation": declared.id if declared else None,
        "history": history,
    }
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    paths.lock.write_text(json.dumps(record, indent=2) + "\n")
    by = f" under deviation {declared.id}" if declared else ""
    return f"{paths.lock}: locked {paths.plan} at sha256 {new}{by}"


def lock_from_config(config_path: str | Path) -> str:
    """``python -m preregistration lock --config ...``: lock the plan the config names."""
    return lock_plan(study_paths(read_config(config_path), config_path))
