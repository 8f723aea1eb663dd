"""Tables and figures build from simulated runs tables (RUNS schema, registered names).

Properties checked: every output is written; excluded runs are listed in T2 and
never enter a test; an arm without runs gives "not run (no runs of arm X)" with an
empty p and a figure that still renders; Holm uses the registered family size;
decisions follow the plan's registered criterion; outputs are deterministic; the
phase and injection arms, once they have runs, are analysed by H2 and H3.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from output_checks import assert_figure, assert_markdown_table
from statsmodels.stats.multitest import multipletests

from analysis.hypotheses.h1_monotonicity import h1_summary
from analysis.report.study_tables import build_tables
from analysis.runs.simulate import causal_arm_specs, simulate_runs, sweep_specs
from figures.make import build_figures
from preregistration.design import expand_design
from preregistration.plan import decide, load_plan
from preregistration.tables import columns, read_table, write_table

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "preregistration" / "plan.yaml"
# stem -> the contract its CSV is read back through
TABLES = {"h1": "h1", "t1_confirmatory": "tests", "t2_inventory": "inventory",
          "t3_equivalence": "equivalence", "t4_loss_matching": "loss_matching"}  # fmt: skip
TABLE_FILES = [f"{stem}.{ext}" for stem in TABLES for ext in ("csv", "md")]
FIGURE_STEMS = ("fig1_pne_icl", "fig2_phase", "fig3_equivalence", "fig4_frontier")
FIGURE_FILES = [f"{stem}.{ext}" for stem in FIGURE_STEMS for ext in ("png", "pdf")]
# figsize widths (inches) of the figure modules: Figure 2 with two budget panels or none
FIGURE_WIDTH_IN = {"fig1_pne_icl": 6.2, "fig2_phase": 6.2, "fig3_equivalence": 10.0,
                   "fig4_frontier": 6.2}  # fmt: skip


@pytest.fixture(scope="module")
def plan() -> dict:
    return load_plan(PLAN)


def _write_runs(runs: pd.DataFrame, path: Path) -> Path:
    return write_table(runs, "runs", path)


def _build(tmp: Path, runs: pd.DataFrame, scale: str = "cpu") -> tuple[Path, Path]:
    runs_path = _write_runs(runs, tmp / "runs.parquet")
    build_tables(runs_path, PLAN, scale, tmp / "tables", n_boot=200, n_perm=199)
    build_figures(runs_path, tmp / "tables", PLAN, tmp / "figures")
    return tmp / "tables", tmp / "figures"


@pytest.fixture(scope="module")
def cpu_study(plan, tmp_path_factory):
    runs = simulate_runs(
        plan, "cpu", icl_slope=0.05, mem_slope=-0.05, n_excluded=2, arms=["batch_sweep"]
    )
    tmp = tmp_path_factory.mktemp("cpu")
    tables, figs = _build(tmp, runs)
    return runs, tables, figs


def test_every_table_and_figure_is_written(cpu_study):
    runs, tables, figs = cpu_study
    for stem, table in TABLES.items():
        back = read_table(tables / f"{stem}.csv", table)  # through its contract
        assert list(back.columns[: len(columns(table))]) == columns(table), stem
        assert_markdown_table(tables / f"{stem}.md", list(back.columns), len(back))
    assert len(read_table(tables / "t2_inventory.csv", "inventory")) == len(runs)
    for stem in FIGURE_STEMS:
        assert_figure(figs, stem, FIGURE_WIDTH_IN[stem])


def test_t1_follows_schema_and_plan(cpu_study, plan):
    _, tables, _ = cpu_study
    t1 = read_table(tables / "t1_confirmatory.csv", "tests")
    assert list(t1.columns[: len(columns("tests"))]) == columns("tests")
    confirmatory = t1[t1["label"] == "confirmatory"]
    assert list(confirmatory["hypothesis"]) == list(plan["hypotheses"])
    # Only registered hypotheses are confirmatory, only registered controls controls.
    assert set(t1.loc[t1["label"] == "control", "hypothesis"]) == set(plan["controls"])
    others = t1[~t1["label"].isin(["confirmatory", "control"])]
    assert (others["label"] == "exploratory").all() and (others["decision"] == "exploratory").all()
    assert others["p_holm"].isna().all()
    # Arms without runs: not run, with empty p.
    for key, arm in (("H2", "phase_schedule"), ("H3", "noise_injection")):
        row = t1[t1["hypothesis"] == key].iloc[0]
        assert row["decision"] == f"not run (no runs of arm {arm})"
        assert np.isnan(row["p"]) and np.isnan(row["p_holm"]) and row["n_runs"] == 0


def test_holm_keeps_registered_family_size(cpu_study, plan):
    _, tables, _ = cpu_study
    t1 = read_table(tables / "t1_confirmatory.csv", "tests").set_index("hypothesis")
    family = plan["correction"]["family"]
    padded = t1.loc[family, "p"].fillna(1.0).to_numpy()
    expected = multipletests(padded, method="holm")[1]
    ran = t1.loc[family, "p"].notna().to_numpy()
    np.testing.assert_allclose(t1.loc[family, "p_holm"].to_numpy()[ran], expected[ran], rtol=1e-12)


# The registered criteria (plan.yaml, decision.supported_if) written out by hand: a
# one-sided slope test is supported when its Holm p is below alpha and the estimate has
# the registered sign; an equivalence test when its p (Holm's for H3) is below alpha.
SUPPORTED_IF = {
    "H1": ("p_holm < alpha and estimate > 0", lambda r: r.p_holm < r.alpha and r.estimate > 0),
    "H2": ("p_holm < alpha and estimate > 0", lambda r: r.p_holm < r.alpha and r.estimate > 0),
    "H3": ("p_holm < alpha", lambda r: r.p_holm < r.alpha),
    "H4": ("p_holm < alpha and estimate < 0", lambda r: r.p_holm < r.alpha and r.estimate < 0),
    "loss_matching": ("p < alpha", lambda r: r.p < r.alpha),
}


def expected_decision(row) -> str:
    return "supported" if SUPPORTED_IF[row.hypothesis][1](row) else "not supported"


def test_decisions_follow_registered_criterion(cpu_study, plan):
    registered = plan["hypotheses"] | plan["controls"]
    assert {k: v["decision"]["supported_if"] for k, v in registered.items()} == {
        k: rule for k, (rule, _) in SUPPORTED_IF.items()
    }
    _, tables, _ = cpu_study
    t1 = read_table(tables / "t1_confirmatory.csv", "tests").set_index("hypothesis", drop=False)
    ran = t1[t1["label"].isin(["confirmatory", "control"]) & t1["p"].notna()]
    assert list(ran.index) == ["H1", "H4", "loss_matching"]  # no runs of the H2, H3 arms
    for row in ran.itertuples():
        assert row.decision == expected_decision(row), row
    # a strong simulated effect of the registered sign on each slope: Holm p far below alpha
    assert t1.at["H1", "decision"] == "supported" and t1.at["H1", "p_holm"] < 1e-3
    assert t1.at["H4", "decision"] == "supported" and t1.at["H4", "p_holm"] < 1e-3
    # Rows the fixture does not reach: a wrong sign, p on either side of alpha, a NaN p.
    rows = [
        ("H1", 0.01, 0.01, 0.2, "supported"),
        ("H1", 0.01, 0.01, -0.2, "not supported"),  # significant, but the wrong sign
        ("H1", 0.01, 0.06, 0.2, "not supported"),  # raw p below alpha, Holm's above
        ("H2", 0.001, 0.004, -0.04, "not supported"),
        ("H3", 0.01, 0.04, -0.01, "supported"),  # equivalence: the sign is not registered
        ("H3", 0.01, 0.05, 0.0, "not supported"),  # p_holm < alpha is strict
        ("H4", 0.001, 0.003, -0.1, "supported"),
        ("H4", 0.001, 0.003, 0.1, "not supported"),
        ("loss_matching", 0.04, np.nan, 0.01, "supported"),  # a control: raw p, no Holm
        ("loss_matching", 0.06, np.nan, 0.01, "not supported"),
        ("H1", np.nan, np.nan, 0.2, "not supported"),
    ]
    for key, p, p_holm, estimate, want in rows:
        row = {"hypothesis": key, "p": p, "p_holm": p_holm, "estimate": estimate, "alpha": 0.05}
        assert decide(plan, row) == want, row


def test_inventory_lists_every_run_with_exclusion_reason(cpu_study, plan):
    runs, tables, _ = cpu_study
    t2 = pd.read_csv(tables / "t2_inventory.csv", keep_default_na=False)
    assert sorted(t2["run_id"]) == sorted(runs["run_id"])
    excluded = t2[t2["excluded"].astype(str) == "True"]
    assert len(excluded) == 2 and (excluded["exclusion_reason"] == "missed_target").all()
    assert (t2["in_design"].astype(str) == "True").all()
    # design order: the conditions as expand_design lists them
    simulated = [s for s in expand_design(plan, "cpu") if s.arm == "batch_sweep"]
    registered = list(dict.fromkeys(s.condition for s in simulated))
    assert list(dict.fromkeys(t2["condition"])) == registered


def test_csv_keeps_full_precision(cpu_study, plan):
    runs, tables, _ = cpu_study
    h1 = pd.read_csv(tables / "h1.csv")
    included = runs[~runs["excluded"]]
    direct = h1_summary(
        included,
        plan["hypotheses"]["H1"],
        n_boot=200,
        n_perm=199,
        random_state=plan["random_seeds"]["analysis"],
    )
    np.testing.assert_allclose(h1["estimate"], direct["estimate"], rtol=1e-12, equal_nan=True)
    assert int(h1.loc[0, "n_runs"]) == len(included)


def test_excluded_runs_never_enter_a_test(plan, cpu_study, tmp_path):
    runs, tables, _ = cpu_study
    changed = runs.copy()
    mask = changed["excluded"]
    changed.loc[mask, ["icl_auc", "memorization", "final_val_loss"]] = [0.99, 0.01, 9.0]
    other, _ = _build(tmp_path, changed)
    for name in ("t1_confirmatory.csv", "h1.csv", "t4_loss_matching.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tables / name), pd.read_csv(other / name))


def test_tables_are_deterministic(plan, cpu_study, tmp_path):
    runs, tables, _ = cpu_study
    again, _ = _build(tmp_path, runs)
    for name in TABLE_FILES:
        assert (tables / name).read_text() == (again / name).read_text(), name


def test_arm_without_included_runs_still_renders(plan, tmp_path):
    runs = simulate_runs(plan, "smoke", icl_slope=0.02, arms=["batch_sweep"])
    runs["excluded"], runs["status"] = True, "diverged"
    runs["exclusion_reason"] = "diverged"
    tables, figs = _build(tmp_path, runs, scale="smoke")
    t1 = read_table(tables / "t1_confirmatory.csv", "tests").set_index("hypothesis")
    said = f"not run (all {len(runs)} runs of arm batch_sweep excluded: diverged x{len(runs)})"
    assert t1.loc["H1", "decision"] == said
    assert np.isnan(t1.loc["H1", "p"])
    assert said in (tables / "h1.md").read_text()
    for stem in FIGURE_STEMS:  # a panel saying what was not run, still a figure
        assert_figure(figs, stem, FIGURE_WIDTH_IN[stem])


@pytest.mark.slow
def test_smoke_scale_and_cli(plan, tmp_path):
    runs = simulate_runs(plan, "smoke", n_excluded=1, random_state=3, arms=["batch_sweep"])
    runs_path = _write_runs(runs, tmp_path / "runs.parquet")
    cmd = [
        sys.executable,
        "-m",
        "analysis.report.study_tables",
        "--runs",
        str(runs_path),
        "--plan",
        str(PLAN),
        "--scale",
        "smoke",
        "--out",
        str(tmp_path / "tables"),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    cmd = [
        sys.executable,
        "-m",
        "figures.make",
        "--runs",
        str(runs_path),
        "--tables",
        str(tmp_path / "tables"),
        "--plan",
        str(PLAN),
        "--out",
        str(tmp_path / "figs"),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(TABLE_FILES)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(FIGURE_FILES)
    t1 = read_table(tmp_path / "tables" / "t1_confirmatory.csv", "tests").set_index("hypothesis")
    assert t1.loc["H1", "n_runs"] == len(runs) - 1
    # two seeds: the mixed model cannot be fitted, the fallback says so
    h1 = pd.read_csv(tmp_path / "tables" / "h1.csv")
    assert "fallback" in h1.loc[0, "method"]


def test_phase_and_injection_arms_are_analysed_once_they_have_runs(plan, tmp_path):
    specs = causal_arm_specs(sweep_specs(plan), injection_seeds=list(range(5)))
    runs = simulate_runs(
        plan, "cpu", icl_slope=0.03, sd_seed=0.01, sd_resid=0.005, specs=specs, phase_effect=0.04
    )
    tables, figs = _build(tmp_path, runs)
    t1 = read_table(tables / "t1_confirmatory.csv", "tests").set_index("hypothesis")
    assert t1.loc["H2", "estimate"] == pytest.approx(0.04, abs=0.02)  # late - early
    # A true late - early contrast of 0.04 against a residual sd of 0.005 (the seed
    # effect cancels within a seed): below alpha even after Holm, the registered sign,
    # so supported.
    h2 = t1.loc["H2"]
    assert h2["p"] <= h2["p_holm"] < h2["alpha"] and h2["estimate"] > 0
    assert h2["decision"] == "supported"
    assert t1.loc["H2", "n_runs"] == 12  # the early and late runs of 3 seeds x 2 budgets
    t3 = pd.read_csv(tables / "t3_equivalence.csv")
    # 3 forms x (ICL, final loss); the registered form on 5 seeds, the others on 3
    assert set(t3["outcome"]) == {"icl_auc", "final_val_loss"} and len(t3) == 6
    confirmatory = t3[t3["label"] == "confirmatory"].iloc[0]
    assert (confirmatory["noise_form"], confirmatory["n_pairs"]) == ("gaussian", 5)
    assert sorted(t3.loc[t3.label == "exploratory", "n_pairs"]) == [3, 3]
    assert t1.loc["H3", "p"] == pytest.approx(confirmatory["p"])
    assert {"H3 anisotropic", "H3 student_t"} <= set(t1.index)
    assert (t1.loc[["H3 anisotropic", "H3 student_t"], "label"] == "exploratory").all()
    # the batch sweep alone enters H1: its runs, not the reference runs of seeds 3-4
    assert t1.loc["H1", "n_runs"] == int((runs["arm"] == "batch_sweep").sum())
    # Holm over exactly the four registered members
    family = t1[t1["family"] == "confirmatory"]
    assert list(family.index) == ["H1", "H2", "H3", "H4"]
    want = multipletests(family["p"].to_numpy(), method="holm")[1]
    np.testing.assert_allclose(family["p_holm"].to_numpy(), want, rtol=1e-12)
    for stem in FIGURE_STEMS:
        assert_figure(figs, stem, FIGURE_WIDTH_IN[stem])


def test_arm_with_only_excluded_runs_says_so(plan, tmp_path):
    specs = causal_arm_specs(sweep_specs(plan))
    runs = simulate_runs(plan, "cpu", icl_slope=0.03, specs=specs)
    phase = runs["arm"] == "phase_schedule"
    runs.loc[phase, ["status", "excluded", "exclusion_reason"]] = [
        "token_cap",
        True,
        "missed_target",
    ]
    tables, _ = _build(tmp_path, runs)
    t1 = read_table(tables / "t1_confirmatory.csv", "tests").set_index("hypothesis")
    n = int(phase.sum())
    assert t1.loc["H2", "decision"] == (
        f"not run (all {n} runs of arm phase_schedule excluded: missed_target x{n})"
    )
    assert np.isnan(t1.loc["H2", "p"]) and np.isnan(t1.loc["H2", "p_holm"])


def test_loss_matching_holds_each_arm_to_its_own_registered_target():
    """T4: an arm whose scale block registers its own target (the regression family's
    squared error) is tested against that target, every other arm against the scale's."""
    from analysis.report.study_tables import loss_matching_table

    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        {"arm": ["batch_sweep"] * 6 + ["regression_sweep"] * 6,
         "condition": ["bs8_fixed"] * 6 + ["reg_bs8_fixed"] * 6,
         "final_val_loss": np.r_[2.49 + rng.normal(0, 0.003, 6), 0.92 + rng.normal(0, 0.003, 6)]}
    )  # fmt: skip
    plan = {"controls": {"loss_matching": {"margin": "target_tolerance", "alpha": 0.05}}}
    design = {"target_val_loss": 2.5, "target_tolerance": 0.05,
              "arms": {"batch_sweep": {"global_batch": [8, 64]},
                       "regression_sweep": {"target_val_loss": 0.93}}}  # fmt: skip
    t4 = loss_matching_table(runs, plan, design).set_index("arm")
    assert t4.at["batch_sweep", "target"] == 2.5
    assert t4.at["regression_sweep", "target"] == 0.93
    assert t4.at["regression_sweep", "estimate"] == pytest.approx(-0.01, abs=0.005)
    assert (t4["p"] < 0.05).all()  # both within +-0.05 of their own target
