"""The audit passes a clean study and fails every undeclared difference, by name.

A small smoke-scale study is built on disk from the repository's plan
(``run_factory.Study``): per-run files for every run of ``expand_design(plan,
'smoke')`` (one of them diverged), the runs table collected from them, a T1 table
from the registered tests (schema TESTS) with H2/H3 "not run" as deviation D1
declares, and a lock. Each tamper case changes one thing and the audit must fail
with a message that names the file and what is wrong.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from run_factory import D1, Study

from analysis.audit.checks import _main as audit_main
from analysis.audit.findings import AuditError
from preregistration.lock import lock_plan, study_paths
from preregistration.plan import plan_hash
from preregistration.plan_doc import write_markdown
from preregistration.tables import read_table, write_table

DIVERGED = "bs4_fixed_s0"  # the run that diverges: the registered rule must exclude it


class AuditStudy(Study):
    def edit_runs(self, change) -> None:
        runs = read_table(self.runs, "runs")
        write_table(change(runs), "runs", self.runs)

    def edit_t1(self, change) -> None:
        write_table(change(read_table(self.t1, "tests")), "tests", self.t1)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> AuditStudy:
    s = AuditStudy.create(tmp_path_factory.mktemp("clean"), {DIVERGED: "diverged"})
    s.collect()
    s.write_t1()
    return s


@pytest.fixture
def study(clean: AuditStudy, tmp_path) -> AuditStudy:
    """A copy of the clean study for one test to change (built once per module)."""
    shutil.copytree(clean.root, tmp_path / "study")
    return AuditStudy(tmp_path / "study")


def _failures(result, name: str) -> str:
    return "\n".join(_check(result, name).failures)


def _check(result, name: str):
    return next(c for c in result.checks if c.name == name)


def test_clean_study_passes_and_writes_report(study):
    result = study.audit()
    assert result.passed, result.failures
    declared = "\n".join(_check(result, "tests").declared)
    assert "H2 is reported 'not run" in declared and "H3 is reported 'not run" in declared
    assert "[declared: D1]" in declared
    assert "excluded by registered rules: {'diverged': 1}" in _check(result, "exclusions").notes
    report = json.loads((study.results / "audit.json").read_text())
    assert report["passed"] is True
    assert "**Result: PASSED**" in (study.results / "audit.md").read_text()


def test_edited_plan_fails_against_lock(study):
    study.plan.write_text(study.plan.read_text().replace("alpha: 0.05", "alpha: 0.1", 1))
    result = study.audit()
    message = _failures(result, "lock")
    assert str(study.plan) in message and "does not match the lock" in message
    with pytest.raises(AuditError, match="does not match the lock"):
        result.raise_if_failed()


def test_changed_alpha_in_t1_fails(study):
    study.edit_t1(lambda t: t.assign(alpha=np.where(t.hypothesis == "H1", 0.1, t.alpha)))
    message = _failures(study.audit(), "tests")
    assert str(study.t1) in message and "H1 alpha is 0.1, registered 0.05" in message


def test_declared_alpha_change_passes(study):
    study.edit_t1(lambda t: t.assign(alpha=np.where(t.hypothesis == "H1", 0.1, t.alpha)))
    d2 = D1 | {"id": "D2", "what": "H1 at alpha 0.1", "covers": {"tests": {"H1": {"alpha": 0.1}}}}
    study.write_deviations(D1, d2)
    result = study.audit()
    assert result.passed, result.failures
    assert any("[declared: D2]" in d for d in _check(result, "tests").declared)


def test_dropped_seed_fails(study):
    study.edit_runs(lambda r: r[r.seed != 1])
    message = _failures(study.audit(), "design")
    assert str(study.runs) in message and "missing" in message
    assert "seed(s) [1] have no run at all" in message and "bs4_fixed_s1" in message


def test_extra_run_fails(study):
    extra = lambda r: pd.concat([r, r.iloc[[1]].assign(seed=7, run_id="bs4_sqrt_s7")])  # noqa: E731
    study.edit_runs(extra)
    message = _failures(study.audit(), "design")
    assert "not in design.scales.smoke" in message and "bs4_sqrt_s7" in message


def test_extra_test_labelled_confirmatory_fails(study):
    extra = {
        "hypothesis": "H5",
        "label": "confirmatory",
        "test": "spearman",
        "decision": "supported",
    }
    study.edit_t1(lambda t: pd.concat([t, pd.DataFrame([t.iloc[0].to_dict() | extra])]))
    message = _failures(study.audit(), "tests")
    assert str(study.t1) in message
    assert "'H5' (spearman) is labelled 'confirmatory' but is not registered" in message


def test_registered_test_relabelled_exploratory_fails(study):
    study.edit_t1(lambda t: t.assign(label=np.where(t.hypothesis == "H4", "exploratory", t.label)))
    message = _failures(study.audit(), "tests")
    assert "registered test H4 has 0 non-exploratory row(s)" in message


def test_exclusion_without_rule_fails(study):
    def exclude(runs):
        i = runs.index[runs.status == "reached_target"][0]
        runs.loc[i, ["excluded", "exclusion_reason"]] = [True, "outlier"]
        return runs

    study.edit_runs(exclude)
    message = _failures(study.audit(), "exclusions")
    assert str(study.runs) in message
    assert "excluded (reason 'outlier') but no registered exclusion rule matches it" in message


def test_run_matching_a_rule_but_kept_fails(study):
    study.edit_runs(lambda r: r.assign(excluded=False, exclusion_reason=""))
    message = _failures(study.audit(), "exclusions")
    assert "matches exclusion rule 'diverged'" in message and "but is not excluded" in message


def test_run_under_another_hash_fails(study):
    other = "0" * 64
    study.edit_runs(lambda r: r.assign(plan_hash=np.where(r.index == 2, other, r.plan_hash)))
    message = _failures(study.audit(), "runs")
    run_id = read_table(study.runs, "runs").run_id[2]
    assert str(study.runs) in message and run_id in message and other in message


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_corrupt_or_truncated_runs_table_fails(study, damage):
    data = study.runs.read_bytes()
    study.runs.write_bytes(b"not parquet at all" if damage == "corrupt" else data[: len(data) // 2])
    result = study.audit()
    assert not result.passed
    assert str(study.runs) in _failures(result, "runs")
    assert "could not be read" in _failures(result, "design")


def test_truncated_t1_fails(study):
    text = study.t1.read_text()
    study.t1.write_text(text[: len(text) // 2])
    message = _failures(study.audit(), "tests")
    assert str(study.t1) in message


def test_corrupt_trace_fails(study):
    meta = next((study.results / "runs").glob("*/*/meta.json"))
    meta.write_text('{"run_id": "bs4_fixed_s0", "plan_')
    message = _failures(study.audit(), "traces")
    assert str(meta) in message and "corrupt or truncated" in message


def test_undeclared_not_run_fails(study):
    study.write_deviations()
    message = _failures(study.audit(), "tests")
    assert "registered test H2 is 'not run" in message and "no deviation declares it" in message


def test_decision_against_registered_criterion_fails(study):
    study.edit_t1(
        lambda t: t.assign(decision=np.where(t.hypothesis == "H4", "supported", t.decision))
    )
    message = _failures(study.audit(), "tests")
    assert "H4 decision is 'supported' but the registered criterion" in message


def test_declared_plan_change_relocks_and_passes(study):
    old = plan_hash(study.plan)
    study.plan.write_text(study.plan.read_text() + "\n# clarified wording\n")
    write_markdown(study.plan)
    new = plan_hash(study.plan)
    d2 = D1 | {
        "id": "D2",
        "what": "comment added",
        "covers": {"plan_change": {"from": old, "to": new}},
    }
    study.write_deviations(D1, d2)
    assert "under deviation D2" in lock_plan(study_paths(study.config))
    result = study.audit()
    assert result.passed, result.failures
    assert any(old in d and "D2" in d for d in _check(result, "runs").declared)


def test_cli_exit_codes_and_messages(study, capsys):
    config = study.root / "config.yaml"
    config.write_text(yaml.safe_dump(study.config))
    assert audit_main(["--config", str(config)]) == 0
    study.edit_runs(lambda r: r[r.seed != 1])
    assert audit_main(["--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "audit FAILED" in err and str(study.runs) in err and "missing" in err
