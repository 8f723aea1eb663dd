"""Audit a study against its pre-registration (DESIGN §6).

Checks, in order: the plan is valid and plan.md agrees with it; the plan matches
its lock; the trace files are readable; every run recorded the locked plan hash;
the executed design (condition x seed set and each run's settings) equals the
registered one for the scale; every exclusion follows a registered rule (the
predicates are evaluated again); every registered run's files are present and
consistent, each row of the runs table is what they give (status and exclusion
derived from the trace and the rules, ``analysis.audit.runs_table``) and no directory
holds records of an unregistered run; every registered test ran exactly as registered
(test, outcome, sidedness, alpha, margin, family, label, decision criterion) and
nothing unregistered is labelled confirmatory. A difference passes only when an
entry of ``deviations.yaml`` declares it; otherwise the audit fails and the message
names the file and the mismatch.

Command line (writes ``<results>/audit.md`` and ``<results>/audit.json``; exits 1 on
failure, listing the problems on stderr)::

    python -m analysis.audit.checks --config config/config.yaml
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd

from analysis.audit.findings import AuditResult, Check
from analysis.audit.runs_table import check_run_files, check_trace_files, traces_dir
from analysis.runs.noise_columns import DESIGN_COLUMNS, design_columns
from preregistration.design import expand_design
from preregistration.deviations import Deviation, DeviationLog, load_deviations
from preregistration.lock import StudyPaths, read_config, read_lock, study_paths
from preregistration.plan import (
    REGISTERED_FIELDS,
    PlanError,
    apply_exclusions,
    decide,
    load_plan,
    plan_hash,
    registered_tests,
    scale_design,
)
from preregistration.plan_doc import check_markdown
from preregistration.tables import TableError, read_table

_DECIDED = ("supported", "not supported")


def _py(value):
    """A NumPy scalar as the Python value it holds (for readable messages)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _ids(items) -> str:
    items = sorted(items)
    return ", ".join(items[:12]) + (f" and {len(items) - 12} more" if len(items) > 12 else "")


@dataclass(frozen=True)
class _Hashes:
    """The plan hashes a run may record: the locked one, or one a plan change declares."""

    locked: str
    earlier: dict[str, Deviation]  # hash before a declared plan change -> its entry

    def check(self, value: str, what: str, check: Check) -> None:
        if value == self.locked:
            return
        if value in self.earlier:
            check.declare(f"{what} plan_hash {value} (an earlier plan)", self.earlier[value].id)
        else:
            check.fail(f"{what} plan_hash {value}, not the locked {self.locked}")


def _check_lock(paths: StudyPaths, result: AuditResult, check: Check) -> None:
    try:
        lock = read_lock(paths.lock)
    except PlanError as exc:
        check.fail(str(exc))
        return
    result.lock_sha256, result.locked_at = lock["sha256"], lock["locked_at"]
    if lock["sha256"] != result.plan_sha256:
        check.fail(
            f"{paths.plan}: sha256 {result.plan_sha256} does not match the lock {paths.lock} "
            f"(sha256 {lock['sha256']}, locked at {lock['locked_at']}): the plan was edited "
            f"after its lock. Restore it, or declare the change in {paths.deviations} and run "
            "`python -m preregistration lock`"
        )


def _check_hashes(runs: pd.DataFrame, path: Path, hashes: _Hashes, check: Check) -> None:
    for value, group in runs.groupby("plan_hash", sort=True):
        hashes.check(value, f"{path}: run(s) {_ids(group['run_id'])}", check)


def _same_number(used, registered: float) -> bool:
    """Equal to 1e-9 relative, or both missing (a run without a registered budget)."""
    used, registered = float(used), float(registered)
    if math.isnan(used) or math.isnan(registered):
        return math.isnan(used) and math.isnan(registered)
    return math.isclose(used, registered, rel_tol=1e-9)


def _check_design(
    runs: pd.DataFrame, plan: dict, paths: StudyPaths, log: DeviationLog, check: Check
) -> None:
    where = paths.runs_table
    specs = {(s.condition, s.seed): s for s in expand_design(plan, paths.scale, str(paths.plan))}
    keys = list(zip(runs["condition"], runs["seed"].astype(int), strict=True))
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        check.fail(f"{where}: condition x seed recorded more than once: {sorted(dupes)}")
    missing, extra = [], []
    for (condition, seed), spec in specs.items():
        if (condition, seed) not in keys:
            dev = log.covering("missing_runs", spec.run_id, paths.scale)
            if dev:
                check.declare(f"registered run {spec.run_id} is missing", dev.id)
            else:
                missing.append(spec)
    if missing:
        absent_seeds = {s.seed for s in missing} - {seed for _, seed in keys}
        detail = f" (seed(s) {sorted(absent_seeds)} have no run at all)" if absent_seeds else ""
        check.fail(
            f"{where}: {len(missing)} registered run(s) of design.scales.{paths.scale} are "
            f"missing{detail}: {_ids(s.run_id for s in missing)}"
        )
    fields = ("run_id", "arm", "global_batch", "lr_rule", "lr_peak", *DESIGN_COLUMNS)
    for row in runs.itertuples(index=False):
        spec = specs.get((row.condition, int(row.seed)))
        if spec is None:
            dev = log.covering("extra_runs", row.run_id, paths.scale)
            if dev:
                check.declare(f"run {row.run_id} is not in the registered design", dev.id)
            else:
                extra.append(row.run_id)
            continue
        design = design_columns(spec)
        for name in fields:
            used = _py(getattr(row, name))
            registered = design[name] if name in design else getattr(spec, name)
            same = (
                _same_number(used, registered)
                if name in ("lr_peak", "pne_budget")
                else used == registered or (registered == "" and pd.isna(used))
            )
            if not same:
                check.fail(
                    f"{where}: run {row.run_id}: {name} is {used!r}, registered {registered!r}"
                )
    if extra:
        check.fail(
            f"{where}: {len(extra)} run(s) not in design.scales.{paths.scale} "
            f"(condition x seed not registered): {_ids(extra)}"
        )
    statuses = set(plan["stopping"]["statuses"])
    for status in sorted(set(runs["status"]) - statuses):
        check.fail(f"{where}: status {status!r} is not a registered status ({sorted(statuses)})")
    check.notes.append(f"{len(runs)} run(s) recorded, {len(specs)} registered")


def _check_exclusions(
    runs: pd.DataFrame, plan: dict, paths: StudyPaths, log: DeviationLog, check: Check
) -> None:
    expected = apply_exclusions(runs, plan)
    rules = {r["id"]: r["when"] for r in plan["exclusions"]}
    for got, want in zip(
        runs.itertuples(index=False), expected.itertuples(index=False), strict=True
    ):
        if (
            bool(got.excluded) == bool(want.excluded)
            and got.exclusion_reason == want.exclusion_reason
        ):
            continue
        run = f"{paths.runs_table}: run {got.run_id}"
        if not want.excluded:
            message = (
                f"{run} is excluded (reason {got.exclusion_reason!r}) but no registered "
                f"exclusion rule matches it (rules: {rules})"
            )
        elif not got.excluded:
            message = (
                f"{run} matches exclusion rule {want.exclusion_reason!r} "
                f"({rules[want.exclusion_reason]}) but is not excluded"
            )
        else:
            message = (
                f"{run} is excluded as {got.exclusion_reason!r} but the first registered rule "
                f"it matches is {want.exclusion_reason!r}"
            )
        dev = log.covering("exclusions", got.run_id, paths.scale)
        if dev:
            check.declare(message, dev.id)
        else:
            check.fail(message)
    counts = expected.loc[expected["excluded"], "exclusion_reason"].value_counts()
    counts = {reason: int(n) for reason, n in counts.items()}
    check.notes.append(f"excluded by registered rules: {counts or 'none'}")


def _check_tests(
    tests: pd.DataFrame, plan: dict, paths: StudyPaths, log: DeviationLog, check: Check
) -> None:
    where = paths.tests_table
    design_arms = set(scale_design(plan, paths.scale)["arms"])
    registered = registered_tests(plan, paths.scale)
    for reg in registered.itertuples(index=False):
        key = reg.hypothesis
        section = "hypotheses" if reg.label == "confirmatory" else "controls"
        rows = tests[(tests["hypothesis"] == key) & (tests["label"] != "exploratory")]
        if len(rows) != 1:
            check.fail(
                f"{where}: registered test {key} has {len(rows)} non-exploratory row(s), "
                f"expected exactly 1 (labelled {reg.label})"
            )
            continue
        row = rows.iloc[0]
        for name in REGISTERED_FIELDS:
            used, want = _py(row[name]), _py(getattr(reg, name))
            if isinstance(want, float):
                same = (math.isnan(want) and pd.isna(used)) or (
                    not pd.isna(used) and math.isclose(float(used), want, rel_tol=1e-9)
                )
            else:
                same = (used if isinstance(used, str) else "") == want
            if same:
                continue
            message = f"{where}: {key} {name} is {used!r}, registered {want!r} ({section}.{key})"
            dev = log.covering_test(key, name, used, paths.scale)
            if dev:
                check.declare(message, dev.id)
            else:
                check.fail(message)
        decision = str(row["decision"])
        declared_not_run = log.covering("not_run", key, paths.scale)
        missing_arms = sorted(set(reg.arms.split(",")) - design_arms)
        if decision.startswith("not run"):
            if declared_not_run:
                check.declare(f"{key} is reported {decision!r}", declared_not_run.id)
            else:
                check.fail(
                    f"{where}: registered test {key} is {decision!r}, and no deviation declares it"
                )
            continue
        if declared_not_run:
            check.notes.append(f"{key} ran although {declared_not_run.id} declares it not run")
        if missing_arms:
            check.fail(
                f"{where}: {key} has decision {decision!r} but its arm(s) {missing_arms} are "
                f"not in design.scales.{paths.scale}"
            )
        elif decision not in _DECIDED:
            check.fail(
                f"{where}: {key} decision {decision!r} is not 'supported', 'not supported' "
                "or 'not run (reason)'"
            )
        else:
            criterion = decide(plan, row)
            if criterion != decision:
                check.fail(
                    f"{where}: {key} decision is {decision!r} but the registered criterion "
                    f"`{reg.supported_if}` gives {criterion!r}"
                )
    known = set(registered["hypothesis"])
    for row in tests.itertuples(index=False):
        if row.hypothesis in known and row.label != "exploratory":
            continue
        if row.label != "exploratory":
            check.fail(
                f"{where}: row {row.hypothesis!r} ({row.test}) is labelled {row.label!r} but "
                f"is not registered in {paths.plan} (hypotheses or controls); only registered "
                "tests may be confirmatory or control, everything else is 'exploratory'"
            )
    n_expl = int((tests["label"] == "exploratory").sum())
    check.notes.append(f"{len(registered)} registered test(s), {n_expl} exploratory row(s)")


def _check_software(plan: dict, check: Check) -> None:
    for name, pinned in plan["software"]["pins"].items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            check.notes.append(f"warning: {name} {pinned} pinned but not installed here")
            continue
        if installed.split("+")[0] != pinned:
            check.notes.append(f"warning: {name} {pinned} pinned, {installed} installed here")


def run_audit(config: dict, write: bool = True, source: str | Path = "config") -> AuditResult:
    """Audit the study a config names (keys ``scale``, ``plan``, ``lock``, ``results``).

    Returns the ``AuditResult`` (``.passed``, ``.failures``, ``.raise_if_failed()``);
    with ``write`` it is also written to ``<results>/audit.md`` and ``audit.json``.
    Raises ``PlanError`` only when the config itself lacks these keys.
    """
    paths = study_paths(config, source)
    result = AuditResult(paths.scale, str(paths.plan), str(paths.deviations))
    check = result.add("plan", "plan is valid and plan.md agrees")
    try:
        plan = load_plan(paths.plan)
        result.plan_sha256 = plan_hash(paths.plan)
        scale_design(plan, paths.scale, paths.plan)
        for problem in check_markdown(paths.plan):
            check.fail(problem)
    except PlanError as exc:
        check.fail(str(exc))
        plan = None
    if plan is not None:
        _audit_study(plan, paths, traces_dir(config, paths), result)
    if write:
        result.write(paths.results)
    return result


def _audit_study(plan: dict, paths: StudyPaths, traces: Path, result: AuditResult) -> None:
    _check_lock(paths, result, result.add("lock", "plan matches its lock"))
    check = result.add("deviations", "deviations log is valid")
    try:
        log = load_deviations(paths.deviations)
    except PlanError as exc:
        check.fail(str(exc))
        log = DeviationLog(paths.deviations)
    result.deviations = [dev.summary() for dev in log.entries]
    if result.lock_sha256 is None:
        return
    earlier = {frm: dev for frm, _, dev in log.plan_changes() if frm and frm != result.lock_sha256}
    hashes = _Hashes(result.lock_sha256, earlier)
    check_trace_files(traces, hashes, result.add("traces", "trace files are readable"))

    runs_check = result.add("runs", "runs table is readable and recorded the locked plan hash")
    design = result.add("design", f"executed design equals design.scales.{paths.scale}")
    exclusions = result.add("exclusions", "every exclusion follows a registered rule")
    files = result.add(
        "files", "the runs table is what every registered run's files give; no unregistered run"
    )
    runs = None
    try:
        runs = read_table(paths.runs_table, "runs")
    except TableError as exc:
        runs_check.fail(str(exc))
        for skipped in (design, exclusions):
            skipped.fail(f"not checked: {paths.runs_table} could not be read")
    else:
        _check_hashes(runs, paths.runs_table, hashes, runs_check)
        _check_design(runs, plan, paths, log, design)
        _check_exclusions(runs, plan, paths, log, exclusions)
    check_run_files(runs, plan, paths, traces, log, files)

    tests = result.add(
        "tests", "every registered test ran as registered, nothing else confirmatory"
    )
    try:
        table = read_table(paths.tests_table, "tests")
    except TableError as exc:
        tests.fail(str(exc))
    else:
        _check_tests(table, plan, paths, log, tests)
    _check_software(plan, result.add("software", "installed versions match the pins (warnings)"))


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.audit.checks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config", default="config/config.yaml", help="config YAML (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        result = run_audit(read_config(args.config), source=args.config)
    except PlanError as exc:
        print(f"audit: error: {exc}", file=sys.stderr)
        return 2
    results = study_paths(read_config(args.config), args.config).results
    if result.passed:
        print(f"audit passed: {results / 'audit.md'}")
        return 0
    print(
        f"audit FAILED ({len(result.failures)} problem(s)); see {results / 'audit.md'}",
        file=sys.stderr,
    )
    for failure in result.failures:
        print(f"  {failure}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    from analysis.audit.checks import _main as main

    sys.exit(main())
