"""The analysis of the causal arms (issue 10): H2, H3, noise control, figures, audit.

On simulated runs of every arm (``analysis.runs.simulate.causal_arm_specs``, the arms
contract's design): H2's ANOVA equals pingouin's repeated-measures ANOVA and its
late - early contrast the hand computation (and pingouin's paired t test); H3
pairs each injected run with its own reference run and its TOST equals
pingouin's on those pairs; both hold their alpha through the whole pipeline under
the null; the noise-control table flags a phase budget off by more than 5 %;
Figures 2 and 3 draw one point per run or pairing; Figure 1 gives every arm its
own marker; the audit's design check accepts the arms and names a changed noise
option.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from matplotlib.collections import PathCollection as Points
from scipy import stats

import analysis.audit.checks as audit
import figures.fig1_pne_icl as fig1
import figures.fig2_phase as fig2
import figures.fig3_equivalence as fig3
from analysis.audit.findings import Check
from analysis.exploratory.noise_control import noise_control_table
from analysis.hypotheses.arm_tests import arm_runs, h2_result, h3_pairs, h3_tests
from analysis.hypotheses.h2_phase import late_minus_early, phase_anova
from analysis.report.study_tables import build_tables
from analysis.runs.simulate import causal_arm_specs, simulate_runs, sweep_specs
from preregistration.deviations import DeviationLog
from preregistration.lock import StudyPaths
from preregistration.plan import load_plan
from preregistration.tables import read_table, write_table

PLAN = Path(__file__).resolve().parents[2] / "preregistration" / "plan.yaml"
ALPHA = 0.05


@pytest.fixture(scope="module")
def plan() -> dict:
    return load_plan(PLAN)


@pytest.fixture(scope="module")
def specs(plan) -> list:
    return causal_arm_specs(sweep_specs(plan), injection_seeds=list(range(6)))


@pytest.fixture(scope="module")
def runs(plan, specs) -> pd.DataFrame:
    return simulate_runs(
        plan, "cpu", icl_slope=0.03, sd_seed=0.01, sd_resid=0.008, specs=specs,
        phase_effect=0.03, injection_diff={"gaussian": 0.004, "anisotropic": -0.01},
    )  # fmt: skip


def test_h2_anova_equals_pingouin_rm_anova(runs):
    phase = runs[runs["arm"] == "phase_schedule"]
    ours = phase_anova(phase).set_index("source")
    ref = pg.rm_anova(phase, dv="icl_auc", within=["pne_budget", "phase"], subject="seed")
    ref = ref.set_index("Source")
    p_col = "p_unc" if "p_unc" in ref else "p-unc"
    for source in ("pne_budget", "phase", "pne_budget * phase"):
        assert ours.at[source, "F"] == pytest.approx(ref.at[source, "F"], rel=1e-10)
        assert ours.at[source, "p"] == pytest.approx(ref.at[source, p_col], rel=1e-10)


def test_h2_contrast_equals_hand_and_pingouin_computation(plan, runs):
    phase = runs[runs["arm"] == "phase_schedule"]
    means = phase.groupby(["seed", "phase"])["icl_auc"].mean().unstack()
    d = (means["late"] - means["early"]).to_numpy()
    n = len(d)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
    res = late_minus_early(phase).iloc[0]
    assert res.estimate == pytest.approx(d.mean(), rel=1e-12)
    assert (res.ci_low, res.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert res.p == pytest.approx(stats.ttest_1samp(d, 0, alternative="greater").pvalue)
    paired = pg.ttest(means["late"], means["early"], paired=True, alternative="greater")
    assert res.p == pytest.approx(float(paired["p_val" if "p_val" in paired else "p-val"].iloc[0]))
    est, low, high, p, n_runs, reason = h2_result(phase, plan["hypotheses"]["H2"])
    assert reason is None and (est, p) == pytest.approx((res.estimate, res.p))
    assert n_runs == int(phase["phase"].isin(["early", "late"]).sum())


def test_h3_pairs_each_injected_run_with_its_reference_run(plan, runs):
    hyp = plan["hypotheses"]["H3"]
    changed = runs.copy()
    gone = "bs8_fixed_s4"  # a reference registered by the injection arm, excluded
    changed.loc[changed["run_id"] == gone, ["excluded", "exclusion_reason"]] = [True, "diverged"]
    wide, left_out = h3_pairs(changed, hyp, "icl_auc")
    assert left_out == 1 and "inj_gaussian_bs64_s4" not in set(wide["pair"])
    by_id = changed.set_index("run_id")
    for r in wide.itertuples():
        injected = by_id.loc[r.pair]
        reference = by_id.loc[injected["reference_run"]]
        assert reference["seed"] == injected["seed"] == r.seed
        assert (r.reference, r.injected) == (reference["condition"], injected["condition"])
        assert (r.y_reference, r.y_injected) == (reference["icl_auc"], injected["icl_auc"])
    assert sorted(wide.groupby("noise_form").size().items()) == [
        ("anisotropic", 3), ("gaussian", 5), ("student_t", 3)
    ]  # fmt: skip


def test_h3_tost_equals_pingouin_on_the_pairs(plan, runs):
    hyp = plan["hypotheses"]["H3"]
    t3 = h3_tests(runs, hyp, margin_loss=0.05)
    wide, _ = h3_pairs(runs, hyp, "icl_auc")
    for r in t3[t3["outcome"] == "icl_auc"].itertuples():
        mine = wide[wide["injected"] == r.condition_b].sort_values("seed")
        x, y = mine["y_reference"].to_numpy(), mine["y_injected"].to_numpy()
        ref = pg.tost(x, y, bound=hyp["margin"], paired=True)
        assert r.p == pytest.approx(float(ref.at["TOST", "pval"]), rel=1e-10)
        assert r.estimate == pytest.approx((x - y).mean(), rel=1e-12)
        assert r.label == ("confirmatory" if r.noise_form == "gaussian" else "exploratory")
    assert (t3["label"] == "confirmatory").sum() == 1


@pytest.mark.slow
def test_h2_and_h3_hold_alpha_through_the_pipeline_under_the_null(plan):
    """At the TOST margin (H3) and with no phase effect (H2), rejections ~ alpha."""
    base = causal_arm_specs(
        sweep_specs(plan), injection_seeds=list(range(6)), forms=("gaussian",),
        exploratory=(),
    )  # fmt: skip
    specs = [s for s in base if s.arm != "batch_sweep" or s.condition == "bs8_fixed"]
    hyp2, hyp3 = plan["hypotheses"]["H2"], plan["hypotheses"]["H3"]
    margin = float(hyp3["margin"])
    n_rep = 300
    h2, h3 = [], []
    for rep in range(n_rep):
        runs = simulate_runs(
            plan, "cpu", specs=specs, sd_resid=0.004, random_state=rep,
            injection_diff={"gaussian": -margin},  # reference - injected = +margin
        )  # fmt: skip
        h2.append(h2_result(arm_runs(runs, hyp2)[0], hyp2)[3])
        h3.append(h3_tests(runs, hyp3, 0.05).at[0, "p"])
    # Every data set gives a p-value (a NaN would count as no rejection), and each test
    # rejects at alpha, within 3 Monte-Carlo SE on either side: at the margin, with the
    # pair differences' sd (0.004 sqrt 2) small against it, the TOST's exact rejection
    # probability is alpha to 4 digits, so a test that never rejects fails as one that
    # rejects too often.
    h2, h3 = np.array(h2, dtype=float), np.array(h3, dtype=float)
    assert np.all((h2 >= 0) & (h2 <= 1)) and np.all((h3 >= 0) & (h3 <= 1)), (h2, h3)
    se = np.sqrt(ALPHA * (1 - ALPHA) / n_rep)
    assert abs(np.mean(h2 < ALPHA) - ALPHA) <= 3 * se, np.mean(h2 < ALPHA)
    assert abs(np.mean(h3 < ALPHA) - ALPHA) <= 3 * se, np.mean(h3 < ALPHA)


def test_noise_control_flags_a_phase_budget_off_by_more_than_5_percent(runs):
    changed = runs.copy()
    late = changed["run_id"] == "phase_late_b2_s1"
    same = (changed["seed"] == 1) & (changed["pne_budget"] == 2.0)
    changed.loc[same, "realised_budget"] = 1.0
    changed.loc[late, "realised_budget"] = 1.07
    table = noise_control_table(changed).set_index("run_id")
    assert table.at["phase_late_b2_s1", "phase_budget_ok"] is False
    assert table.at["phase_late_b2_s1", "budget_vs_other_phases"] == pytest.approx(0.07)
    assert table.at["phase_early_b2_s1", "phase_budget_ok"] is True  # 1 / 1.035 - 1
    assert table.loc[table["phase"] == "", "phase_budget_ok"].isna().all()
    ok = noise_control_table(runs)
    assert ok["phase_budget_ok"].dropna().all() and ok["ratio_ok"].dropna().all()
    assert set(ok["noise_form"]) == {"gaussian", "anisotropic", "student_t"} | {
        "precond_freeze", "sgld", "nap"
    }  # fmt: skip
    assert len(ok) == int((runs["noise_form"] != "none").sum())


def _capture(monkeypatch, module) -> list:
    figs = []
    original = module.save_figure

    def keep(fig, out_dir, stem):
        figs.append(fig)
        return original(fig, out_dir, stem)

    monkeypatch.setattr(module, "save_figure", keep)
    return figs


def _offsets(ax) -> np.ndarray:
    """The points of the scatter plots of ``ax``."""
    return np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, Points)])


def test_figures_draw_the_simulated_arms(plan, runs, tmp_path, monkeypatch):
    path = write_table(runs, "runs", tmp_path / "runs.parquet")
    build_tables(path, PLAN, "cpu", tmp_path / "tables", n_boot=100, n_perm=99)
    t1 = read_table(tmp_path / "tables" / "t1_confirmatory.csv", "tests")
    t3 = read_table(tmp_path / "tables" / "t3_equivalence.csv", "equivalence")
    t4 = read_table(tmp_path / "tables" / "t4_loss_matching.csv", "loss_matching")
    h1 = read_table(tmp_path / "tables" / "h1.csv", "h1")
    hyps = plan["hypotheses"]
    figs = _capture(monkeypatch, fig2)
    fig2.plot_fig2(runs, t1, hyps["H2"], tmp_path / "figs")
    phase = runs[runs["arm"] == "phase_schedule"]
    axes = [a for a in figs[0].axes if a.collections]
    points = np.concatenate([_offsets(a) for a in axes])
    assert len(axes) == phase["pne_budget"].nunique()
    assert sorted(points[:, 1]) == pytest.approx(sorted(phase["icl_auc"]))  # one per run
    figs = _capture(monkeypatch, fig3)
    fig3.plot_fig3(t3, t4, hyps["H3"], tmp_path / "figs")
    left = figs[0].axes[0]
    icl = t3[t3["outcome"] == "icl_auc"]
    assert len(left.get_yticks()) == len(icl)  # one interval per pairing
    drawn = sorted(x for line in left.lines for x in line.get_xdata() if len(line.get_xdata()) == 1)
    assert drawn == pytest.approx(sorted(icl["estimate"]))
    figs = _capture(monkeypatch, fig1)
    fig1.plot_fig1(runs, h1, hyps["H1"], tmp_path / "figs", n_boot=50)
    ax = figs[0].axes[0]
    markers: dict[str, set] = {}
    for c in ax.collections:
        if c.get_gid() and len(c.get_offsets()):
            markers.setdefault(c.get_gid(), set()).add(c.get_paths()[0].vertices.tobytes())
    assert set(markers) == set(runs["arm"])
    for arm, mine in markers.items():  # no marker shared by two arms
        assert not mine & set().union(*(m for a, m in markers.items() if a != arm)), arm


def test_fig3_draws_a_single_run_condition_grey_not_as_a_failed_test(tmp_path, monkeypatch):
    """One run gives no interval: its point is grey and the legend says so, not the red
    of an interval outside the band."""
    t3 = pd.DataFrame(
        {"outcome": ["icl_auc"], "estimate": [0.01], "ci_low": [-0.005], "ci_high": [0.015],
         "margin": [0.02], "equivalent": [True], "noise_form": ["gaussian"],
         "label": ["confirmatory"], "condition_a": ["bs8_fixed"],
         "condition_b": ["inj_gaussian_bs64"], "n_pairs": [3], "method": ["paired TOST"]}
    )  # fmt: skip
    t4 = pd.DataFrame(
        {"condition": ["bs8_fixed", "freeze_bs64", "sgld_bs64"], "arm": ["batch_sweep",
         "precond_freeze", "sgld"], "estimate": [0.01, 0.02, 0.3], "ci_low": [-0.01, np.nan, 0.2],
         "ci_high": [0.03, np.nan, 0.4], "margin": [0.05] * 3, "equivalent": [True, False, False]}
    )  # fmt: skip
    figs = _capture(monkeypatch, fig3)
    fig3.plot_fig3(t3, t4, {"outcome": "icl_auc", "arms": []}, tmp_path)
    right = figs[0].axes[1]
    points = {float(line.get_xdata()[0]): line.get_color() for line in right.lines
              if len(line.get_xdata()) == 1}  # fmt: skip
    assert points[0.02] == "0.55"  # the single run
    assert points[0.3] == "C3" and points[0.01] == "C2"
    assert "one run: no interval, not tested" in right.get_legend_handles_labels()[1]


def test_audit_design_check_accepts_the_arms_and_names_a_changed_noise_option(
    plan, specs, runs, tmp_path, monkeypatch
):
    monkeypatch.setattr(audit, "expand_design", lambda *a, **k: specs)
    paths = StudyPaths("cpu", PLAN, tmp_path / "lock.json", tmp_path, tmp_path / "dev.yaml")
    log = DeviationLog(tmp_path / "dev.yaml")
    check = Check("design", "executed design = registered design")
    audit._check_design(runs, plan, paths, log, check)
    assert check.passed, check.failures
    changed = runs.copy()
    row = changed["run_id"] == "inj_anisotropic_bs64_s1"
    changed.loc[row, "noise_form"] = "student_t"
    changed.loc[changed["run_id"] == "phase_mid_b1_s0", "pne_budget"] = 2.0
    check = Check("design", "executed design = registered design")
    audit._check_design(changed, plan, paths, log, check)
    text = "\n".join(check.failures)
    assert (
        "run inj_anisotropic_bs64_s1: noise_form is 'student_t', registered 'anisotropic'" in text
    )
    assert "run phase_mid_b1_s0: pne_budget is 2.0, registered 1.0" in text


def test_stage_times_sums_wall_time_per_arm(runs, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "stage_times", Path(__file__).resolve().parents[2] / "bench" / "stage_times.py"
    )
    stage_times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage_times)
    write_table(runs, "runs", tmp_path / "tables" / "runs.parquet")
    rng = np.random.default_rng(0)
    seconds = {}
    for stage in ("train", "evaluate", "score"):
        (tmp_path / "benchmarks" / stage).mkdir(parents=True)
    (tmp_path / "logs" / "evaluate").mkdir(parents=True)
    for i, r in enumerate(runs.itertuples()):
        # a language run is evaluated by one `evaluate` job, another family's by `score`
        for stage, key in (("train", "train"), ("evaluate" if i % 2 else "score", "score")):
            seconds[key, r.run_id] = s = float(rng.uniform(1, 50))
            path = tmp_path / "benchmarks" / stage / f"{r.condition}_seed{r.seed}.tsv"
            path.write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:01\t100\n")
        if i % 2:
            log = tmp_path / "logs" / "evaluate" / f"{r.condition}_seed{r.seed}.log"
            log.write_text(f"scores 1.25 s, hessian {i}.50 s, lm_eval 2.00 s\nrun_id ...\n")
    per_run, per_arm = stage_times.arm_times(tmp_path)
    per_arm = per_arm.set_index("arm")
    for arm, sub in runs.groupby("arm"):
        train = [seconds["train", i] for i in sub["run_id"]]
        assert per_arm.at[arm, "runs"] == len(sub)
        assert per_arm.at[arm, "train_sum_s"] == pytest.approx(sum(train))
        assert per_arm.at[arm, "train_longest_s"] == pytest.approx(max(train))
        assert per_arm.at[arm, "score_sum_s"] == pytest.approx(
            sum(seconds["score", i] for i in sub["run_id"])
        )
    assert len(per_run) == len(runs)
    cost = stage_times.evaluation_cost(tmp_path).set_index("run")
    assert len(cost) == len(runs) + 1  # every run and the mean
    for i, r in enumerate(runs.itertuples()):
        row = cost.loc[f"{r.condition}_seed{r.seed}"]
        assert row["total_s"] == pytest.approx(seconds["score", r.run_id])
        assert row["stage"] == ("evaluate" if i % 2 else "score")
        if i % 2:
            assert (row["scores_s"], row["hessian_s"], row["lm_eval_s"]) == (1.25, i + 0.5, 2.0)
        else:
            assert np.isnan(row["hessian_s"])
