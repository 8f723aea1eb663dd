"""The plan: schema validation naming the key, executable rules, plan.md, the lock.

Properties: the repository's plan is valid, its plan.md is what it renders to and
its lock holds its hash; a malformed plan is rejected with the file and the key;
exclusion predicates and decision criteria do what they say; the lock refuses to
be rewritten once confirmatory traces exist unless the change is declared.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from preregistration.__main__ import main as cli_main
from preregistration.design import expand_design
from preregistration.deviations import load_deviations
from preregistration.lock import lock_plan, read_lock, study_paths
from preregistration.plan import (
    PlanError,
    apply_exclusions,
    decide,
    load_plan,
    plan_hash,
    registered_tests,
    scale_design,
)
from preregistration.plan_doc import check_markdown, write_markdown

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "preregistration" / "plan.yaml"


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "preregistration" / "plan.yaml"
    path.parent.mkdir()
    shutil.copyfile(PLAN, path)
    write_markdown(path)
    return path


def _write_plan(path: Path, change) -> Path:
    plan = yaml.safe_load(PLAN.read_text())
    change(plan)
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


# --- the repository's plan -------------------------------------------------------


def test_repository_plan_is_valid_and_expands_every_scale():
    plan = load_plan(PLAN)
    for scale in ("smoke", "cpu", "gpu"):
        design = scale_design(plan, scale)
        specs = expand_design(plan, scale)
        sweep = [s for s in specs if s.arm == "batch_sweep"]
        assert len(sweep) == len({s.condition for s in sweep}) * len(design["seeds"])
        # the noise arms register their own seeds (issue 10); each run is registered once
        assert len({(s.condition, s.seed) for s in specs}) == len(specs)


def test_repository_plan_md_agrees_with_plan_yaml():
    assert check_markdown(PLAN) == [], "run: python -m preregistration render"


def test_repository_lock_matches_plan_yaml():
    lock = read_lock(REPO / "preregistration" / "plan.lock.json")
    assert lock["sha256"] == plan_hash(PLAN), (
        "plan.yaml changed since its lock: python -m preregistration render && "
        "python -m preregistration lock --config config/config.yaml"
    )


def test_repository_deviations_declare_h2_h3_not_run():
    log = load_deviations(REPO / "preregistration" / "deviations.yaml")
    assert log.covering("not_run", "H2", "cpu") and log.covering("not_run", "H3", "cpu")


def test_command_line_hash_and_check(plan_file, capsys):
    """`python -m preregistration hash|check` (preregistration/__main__.py)."""
    assert cli_main(["hash", "--plan", str(plan_file)]) == 0
    assert capsys.readouterr().out.strip() == plan_hash(plan_file)
    assert cli_main(["check", "--plan", str(plan_file)]) == 0
    plan_file.with_suffix(".md").write_text("edited by hand\n")
    assert cli_main(["check", "--plan", str(plan_file)]) == 1
    assert "preregistration render" in capsys.readouterr().err


def test_plan_hash_is_sha256_of_the_bytes():
    assert plan_hash(PLAN) == hashlib.sha256(PLAN.read_bytes()).hexdigest()


# --- schema and cross-field rejection, naming file and key ------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p["hypotheses"]["H1"].update(alpha=2), "hypotheses.H1.alpha: 2 is greater"),
        (lambda p: p["design"]["scales"]["smoke"].pop("token_cap"),
         "design.scales.smoke: 'token_cap' is a required property"),
        (lambda p: p["hypotheses"]["H1"].update(aplha=0.05),
         "hypotheses.H1: Additional properties"),
        (lambda p: p["hypotheses"]["H2"].update(sidedness="bigger"), "hypotheses.H2.sidedness"),
        (lambda p: p["design"]["scales"]["cpu"]["arms"]["batch_sweep"].update(global_batch=[8]),
         "design.scales.cpu.arms.batch_sweep.global_batch"),
        (lambda p: p["exclusions"][0].update(when="statuss == 'diverged'"),
         "exclusions[0].when: cannot evaluate"),
        (lambda p: p["exclusions"][1].update(when="final_val_loss + 1"),
         "exclusions[1].when: 'final_val_loss + 1' does not give one true/false value"),
        (lambda p: p["hypotheses"]["H1"]["decision"].update(supported_if="q < alpha"),
         "hypotheses.H1.decision.supported_if: cannot evaluate"),
        (lambda p: p["hypotheses"]["H4"].update(outcome="memorisation"),
         "hypotheses.H4.outcome: 'memorisation' is not a column of the runs table"),
        (lambda p: p["hypotheses"]["H3"].pop("margin"), "hypotheses.H3.margin: required"),
        (lambda p: p["correction"].update(family=["H1", "H2", "H3"]), "hypotheses.H4.family"),
        (lambda p: p["hypotheses"]["H2"].update(arms=["phase_schedules"]),
         "hypotheses.H2.arms[0]: 'phase_schedules' is not an arm"),
    ],
)  # fmt: skip
def test_malformed_plan_is_rejected_naming_file_and_key(tmp_path, change, expected):
    path = _write_plan(tmp_path / "plan.yaml", change)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_duplicate_key_is_rejected(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        PLAN.read_text().replace("    alpha: 0.05\n", "    alpha: 0.05\n    alpha: 0.1\n", 1)
    )
    with pytest.raises(PlanError, match="duplicate key 'alpha'"):
        load_plan(path)


# --- executable rules ---------------------------------------------------------------


def test_apply_exclusions_follows_rules_in_order_and_keeps_every_run():
    plan = load_plan(PLAN)
    runs = pd.DataFrame(
        {"run_id": list("abc"), "status": ["reached_target", "diverged", "token_cap"],
         "excluded": [True, False, False], "exclusion_reason": ["stale", "", ""]}
    )  # fmt: skip
    plan["exclusions"].append(
        {"id": "any_cap", "when": "status != 'reached_target'", "reason": "x"}
    )
    out = apply_exclusions(runs, plan)
    assert out["excluded"].tolist() == [False, True, True]
    assert out["exclusion_reason"].tolist() == ["", "diverged", "missed_target"]  # first rule wins
    assert runs["exclusion_reason"].tolist() == ["stale", "", ""]  # input untouched


def test_decide_applies_the_registered_criterion():
    plan = load_plan(PLAN)
    row = {"hypothesis": "H4", "alpha": 0.05, "estimate": -0.2, "p_holm": 0.01, "p": 0.003}
    assert decide(plan, row) == "supported"
    assert decide(plan, row | {"estimate": 0.2}) == "not supported"  # wrong sign
    assert decide(plan, row | {"p_holm": np.nan}) == "not supported"  # no adjusted p
    assert decide(plan, {"hypothesis": "loss_matching", "alpha": 0.05, "p": 0.01}) == "supported"
    with pytest.raises(PlanError, match="'H9' is neither"):
        decide(plan, row | {"hypothesis": "H9"})


def test_registered_tests_resolve_margins_per_scale():
    plan = load_plan(PLAN)
    for scale in ("smoke", "cpu"):
        reg = registered_tests(plan, scale).set_index("hypothesis")
        tolerance = plan["design"]["scales"][scale]["target_tolerance"]
        assert reg.loc["loss_matching", "margin"] == tolerance
        assert reg.loc["loss_matching", ["label", "family"]].tolist() == ["control", ""]
        assert reg.loc["H3", "margin"] == plan["hypotheses"]["H3"]["margin"]
        assert np.isnan(reg.loc["H1", "margin"]) and reg.loc["H1", "family"] == "confirmatory"


# --- plan.md ------------------------------------------------------------------------


def test_plan_md_check_catches_either_side_edited(plan_file):
    assert check_markdown(plan_file) == []
    md = plan_file.with_suffix(".md")
    md.write_text(md.read_text().replace("alpha | `0.05`", "alpha | `0.01`", 1))
    assert "differs from what" in check_markdown(plan_file)[0]
    write_markdown(plan_file)
    plan_file.write_text(plan_file.read_text().replace("alpha: 0.05", "alpha: 0.01", 1))
    problems = check_markdown(plan_file)
    assert problems and str(md) in problems[0] and "preregistration render" in problems[0]


# --- the lock -------------------------------------------------------------------------


def _paths(plan_file: Path):
    root = plan_file.parent.parent
    return study_paths(
        {
            "scale": "smoke",
            "plan": plan_file,
            "lock": plan_file.with_suffix(".lock.json"),
            "results": root / "results",
        }  # fmt: skip
    )


def test_lock_records_hash_and_time_and_is_idempotent(plan_file):
    paths = _paths(plan_file)
    lock_plan(paths)
    record = json.loads(paths.lock.read_text())
    assert record["sha256"] == plan_hash(plan_file) and record["locked_at"].endswith("+00:00")
    assert "unchanged" in lock_plan(paths)
    # Before any trace exists the plan may still change and be locked again.
    plan_file.write_text(plan_file.read_text() + "# reworded\n")
    write_markdown(plan_file)
    lock_plan(paths)
    record = json.loads(paths.lock.read_text())
    assert record["sha256"] == plan_hash(plan_file) and len(record["history"]) == 1


def test_relock_refused_once_traces_exist_unless_declared(plan_file):
    paths = _paths(plan_file)
    lock_plan(paths)
    old = plan_hash(plan_file)
    meta = paths.results / "runs" / "smoke" / "bs4_fixed_s0" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text("{}")
    plan_file.write_text(plan_file.read_text().replace("alpha: 0.05", "alpha: 0.01", 1))
    write_markdown(plan_file)
    new = plan_hash(plan_file)
    with pytest.raises(PlanError) as info:
        lock_plan(paths)
    message = str(info.value)
    assert "refusing to lock" in message and str(meta) in message
    assert f"from: {old}, to: {new}" in message and str(paths.deviations) in message
    assert read_lock(paths.lock)["sha256"] == old  # untouched

    entry = {
        "id": "D2",
        "what": "H1 alpha 0.01",
        "why": "reviewer request",
        "when": "2026-11-25",
        "data_seen": "smoke run bs4_fixed_s0 only",
        "covers": {"plan_change": {"from": old, "to": new}},
    }
    paths.deviations.write_text(yaml.safe_dump({"deviations": [entry]}))
    assert "under deviation D2" in lock_plan(paths)
    record = read_lock(paths.lock)
    assert record["sha256"] == new and record["deviation"] == "D2"
    assert record["history"][0]["sha256"] == old


def test_lock_refuses_stale_plan_md(plan_file):
    plan_file.write_text(plan_file.read_text() + "# reworded\n")
    with pytest.raises(PlanError, match="before locking"):
        lock_plan(_paths(plan_file))


def test_malformed_deviation_is_rejected_naming_the_key(tmp_path):
    path = tmp_path / "deviations.yaml"
    entry = {
        "id": "D1",
        "what": "x",
        "why": "y",
        "when": "2026-11-24",
        "covers": {"not_run": ["H2"]},
    }
    path.write_text(yaml.safe_dump({"deviations": [entry]}))
    with pytest.raises(PlanError) as info:
        load_deviations(path)
    assert str(path) in str(info.value) and "deviations[0]: 'data_seen' is a required" in str(
        info.value
    )
