"""What P-NE* is made of (analysis.exploratory.clock; issue 22, item 4): the per-run
decomposition into the step-size clock and the noise fraction, the per-arm correlation
of their logs, and H1's slope with the log clock as a covariate, on hand-built studies
whose answer is known; the tables through their contracts; the report's words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from output_checks import assert_figure, assert_markdown_table

from analysis.exploratory.clock import (
    arm_sentence,
    clock_notes,
    clock_runs,
    clock_summary,
    log_correlation,
)
from analysis.report.exploratory_tables import write_clock
from analysis.report.pages import summary_rst
from figures.clock import final_points, plot_clock
from preregistration.tables import TableError, columns, read_table, write_table

REPO = Path(__file__).resolve().parents[2]
PROXY_COLUMNS = ("int_pne_star_fisher", "int_pne_star_ggn", "int_pne_star_true_fisher")
ADJUSTED = "slope of icl_auc on log(int_pne_star) given final_val_loss, log_int_clock"
UNADJUSTED = "slope of icl_auc on log(int_pne_star) given final_val_loss"
ON_CLOCK = "slope of icl_auc on log(int_clock) given final_val_loss"


def study(icl_on: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A batch sweep (B 8-64, fixed and sqrt LR, 3 seeds) whose noise fraction is about 0.96
    in every run, and injection runs at B = 64, fixed LR, whose injected noise multiplies
    the fraction by 1-15 at about the same clock (their steps to the stop vary by 1.5 at
    most, the sweep's by 10). ICL depends on log clock only (``icl_on="clock"``) or on log
    int P-NE* only (``"pne_star"``), slope 0.05, with a seed intercept and noise. Steps:
    three rows per run, given out of order; runs: one row each."""
    rng = np.random.default_rng(seed)
    steps, runs = [], []
    designs = [("batch_sweep", b, rule, 1.0) for b in (8, 16, 32, 64) for rule in ("fixed", "sqrt")]
    designs += [("noise_injection", 64, "fixed", m) for m in (1.0, 2.0, 4.0, 8.0, 15.0)]
    for s in range(3):
        for arm, batch, rule, boost in designs:
            run_id = f"{arm}_bs{batch}_{rule}_x{boost:g}_s{s}"
            lr = 3e-3 * (np.sqrt(batch / 22.6) if rule == "sqrt" else 1.0)
            # steps to the stop: anywhere in 100-1000 in the sweep, 400-600 with injection
            n_steps = int(rng.uniform(100, 1000) if arm == "batch_sweep" else rng.uniform(400, 600))
            fraction = 0.96 * rng.uniform(0.995, 1.005) * boost
            for step in (n_steps, 1, n_steps // 2):
                clock = step * lr / batch
                steps.append(
                    {"run_id": run_id, "step": step, "lr": lr, "global_batch": batch,
                     "pne_star": lr / batch * fraction, "int_pne_star": clock * fraction,
                     "int_clock": clock, "int_pne_star_fisher": clock * fraction,
                     "int_pne_star_ggn": clock * fraction * 1.1 if arm == "batch_sweep" else np.nan,
                     "int_pne_star_true_fisher": np.nan}
                )  # fmt: skip
            clock = n_steps * lr / batch
            driver = clock if icl_on == "clock" else clock * fraction
            runs.append(
                {"run_id": run_id, "arm": arm, "condition": run_id[:-3], "seed": s,
                 "excluded": False, "final_val_loss": 2.5 + rng.normal(0, 0.01),
                 "icl_auc": 0.3 + 0.05 * np.log(driver) + 0.01 * s + rng.normal(0, 0.002)}
            )  # fmt: skip
    runs.append(  # an excluded run far off every line: listed, left out of the summary
        {"run_id": "excluded_s0", "arm": "batch_sweep", "condition": "bs8_fixed", "seed": 0,
         "excluded": True, "final_val_loss": 9.0, "icl_auc": 0.9}
    )  # fmt: skip
    steps.append(
        {"run_id": "excluded_s0", "step": 3, "lr": 1e-3, "global_batch": 8, "pne_star": 1e-6,
         "int_pne_star": 3e-6, "int_clock": 3e-3 / 8, "int_pne_star_fisher": 3e-6,
         "int_pne_star_ggn": np.nan, "int_pne_star_true_fisher": np.nan}
    )  # fmt: skip
    return pd.DataFrame(steps), pd.DataFrame(runs)


def row(summary: pd.DataFrame, scope: str, measure: str) -> pd.Series:
    found = summary[(summary["scope"].str.startswith(scope)) & (summary["measure"] == measure)]
    assert len(found) == 1, (scope, measure, summary[["scope", "measure"]])
    return found.iloc[0]


def test_per_run_decomposition_takes_the_last_step_and_divides_by_the_clock():
    steps, runs = study("clock")
    per_run = clock_runs(steps, runs)
    assert list(per_run.columns) == columns("clock_runs")
    assert len(per_run) == len(runs)
    last = steps.sort_values("step").groupby("run_id").tail(1).set_index("run_id")
    got = per_run.set_index("run_id")
    assert (got["n_steps"] == last.loc[got.index, "step"]).all()
    assert (got["n_logged"] == steps.groupby("run_id").size().loc[got.index]).all()
    expected = last["int_pne_star"] / last["int_clock"]
    assert got["noise_fraction"].to_numpy() == pytest.approx(expected[got.index].to_numpy())
    assert got["noise_fraction_fisher"].to_numpy() == pytest.approx(got["noise_fraction"])
    with_ggn = got.dropna(subset=["noise_fraction_ggn"])
    assert len(with_ggn) == 24 and set(with_ggn["arm"]) == {"batch_sweep"}
    assert with_ggn["noise_fraction_ggn"].to_numpy() == pytest.approx(
        1.1 * with_ggn["noise_fraction"].to_numpy()
    )
    assert got["noise_fraction_true_fisher"].isna().all()
    # every logged step has the run's fraction: the median over its steps is that fraction
    assert got["median_step_fraction"].to_numpy() == pytest.approx(got["noise_fraction"])


def test_clock_alone_drives_icl_adjusted_slope_vanishes_unadjusted_does_not():
    steps, runs = study("clock")
    summary = clock_summary(clock_runs(steps, runs), runs)
    assert list(summary.columns) == columns("clock_summary")
    sweep = row(summary, "batch_sweep", "pearson(log int_pne_star, log int_clock)")
    assert sweep["estimate"] > 0.9999 and sweep["n_runs"] == 24 and sweep["n_groups"] == 3
    assert sweep["ci_low"] <= sweep["estimate"] <= sweep["ci_high"]
    # Pearson on logs, as numpy computes it, over the included runs only (24, not 25)
    per_run = clock_runs(steps, runs)
    included = per_run[(per_run["arm"] == "batch_sweep") & ~per_run["excluded"]]
    r = np.corrcoef(np.log(included["int_pne_star"]), np.log(included["int_clock"]))[0, 1]
    assert sweep["estimate"] == pytest.approx(r, rel=1e-12)
    ggn = row(summary, "batch_sweep", "pearson(log int_pne_star_ggn, log int_clock)")
    assert ggn["estimate"] > 0.9999 and ggn["n_runs"] == 24  # logged in the sweep only
    assert not summary["measure"].str.contains("true_fisher, log").any()
    assert "ggn" not in " ".join(
        summary.loc[summary["scope"] == "noise_injection", "measure"].str.replace(
            "int_pne_star_ggn / int_clock", ""
        )
    )
    injection = row(summary, "noise_injection", "pearson(log int_pne_star, log int_clock)")
    assert abs(injection["estimate"]) < 0.9, "injected noise moves P-NE* at about one clock"
    spread = row(summary, "noise_injection", "max / min of int_pne_star")["estimate"]
    assert spread > 10 > row(summary, "noise_injection", "max / min of int_clock")["estimate"]
    fraction = row(summary, "batch_sweep", "int_pne_star / int_clock")
    assert 0.95 < fraction["ci_low"] <= fraction["estimate"] <= fraction["ci_high"] < 0.97
    assert "not logged" in row(summary, "noise_injection", "int_pne_star_ggn / int_clock")["method"]

    pooled_scope = "pooled: batch_sweep, noise_injection"
    unadjusted = row(summary, pooled_scope, UNADJUSTED)
    adjusted = row(summary, pooled_scope, ADJUSTED)
    on_clock = row(summary, pooled_scope, ON_CLOCK)
    assert unadjusted["ci_low"] > 0.005, "unadjusted, P-NE* carries the clock's effect"
    assert abs(adjusted["estimate"]) < 0.003, "at a given clock: no slope (true 0)"
    assert adjusted["ci_high"] - adjusted["ci_low"] < 0.01
    assert on_clock["estimate"] == pytest.approx(0.05, abs=0.003)
    assert adjusted["n_runs"] == unadjusted["n_runs"] == 24 + 15
    # on H1's arm the slope on log P-NE* is the slope on log clock: they cannot be told apart
    h1_pne = row(summary, "batch_sweep", UNADJUSTED)["estimate"]
    assert h1_pne == pytest.approx(row(summary, "batch_sweep", ON_CLOCK)["estimate"], rel=0.02)


def test_noise_driven_icl_keeps_its_slope_with_the_clock_as_covariate():
    """The contrast: ICL on log int P-NE* itself; holding the clock fixed leaves its slope."""
    steps, runs = study("pne_star", seed=1)
    summary = clock_summary(clock_runs(steps, runs), runs)
    adjusted = row(summary, "pooled", ADJUSTED)
    assert adjusted["estimate"] == pytest.approx(0.05, abs=0.003)
    assert adjusted["ci_low"] > 0


def test_the_words_follow_the_numbers():
    steps, runs = study("clock")
    summary = clock_summary(clock_runs(steps, runs), runs)
    sweep = arm_sentence(summary, "batch_sweep")
    r = row(summary, "batch_sweep", "pearson(log int_pne_star, log int_clock)")["estimate"]
    assert f"r = {r:.4f} over 24 runs" in sweep
    assert "cannot tell the measured noise from the learning-rate schedule" in sweep
    notes = clock_notes(summary)
    assert sum(n.startswith("In batch_sweep,") for n in notes) == 1  # one per arm, proxies too
    assert sum(n.startswith("In noise_injection,") for n in notes) == 1
    injection = arm_sentence(summary, "noise_injection")
    assert "cannot tell" not in injection and "the clock vary apart" in injection
    # the verdict on the adjusted slope follows its CI: built here on both sides of 0
    adjusted = summary["measure"] == ADJUSTED
    for (low, high), verdict in (((-0.01, 0.02), "contains 0"), ((0.01, 0.02), "excludes 0")):
        summary.loc[adjusted, ["estimate", "ci_low", "ci_high"]] = [(low + high) / 2, low, high]
        words = [n for n in clock_notes(summary) if "holding log clock fixed" in n]
        assert len(words) == 1 and verdict in words[0] and f"[{low:.3g}, {high:.3g}]" in words[0]


def test_too_few_runs_are_not_estimable_with_a_reason():
    r, low, high, p, n, why = log_correlation(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert np.isnan([r, low, high, p]).all() and n == 2 and "2 run(s)" in why
    exact = log_correlation(np.array([1.0, 2.0, 4.0, 8.0]), np.array([3.0, 6.0, 12.0, 24.0]))
    assert exact[:3] == pytest.approx((1.0, 1.0, 1.0))


def steps_table(steps: pd.DataFrame) -> pd.DataFrame:
    """The hand-built rows as a full steps table (every declared column)."""
    n = len(steps)
    full = {c: np.full(n, 0.5) for c in columns("steps")}
    full |= {"tokens": steps["step"] * 64, "validated": np.zeros(n, dtype=bool),
             "val_loss": np.full(n, np.nan)}  # fmt: skip
    full |= {c: steps[c].to_numpy() for c in steps.columns}
    return pd.DataFrame(full)


def test_written_tables_satisfy_their_contracts_and_damage_is_refused(tmp_path: Path):
    steps, runs = study("clock")
    write_table(steps_table(steps), "steps", tmp_path / "steps.parquet")
    paths = write_clock(runs, tmp_path / "steps.parquet", REPO / "preregistration/plan.yaml",
                        tmp_path)  # fmt: skip
    assert [p.name for p in paths] == [
        "clock_runs.csv", "clock_runs.md", "clock_summary.csv", "clock_summary.md"
    ]  # fmt: skip
    per_run = read_table(tmp_path / "clock_runs.csv", "clock_runs")
    summary = read_table(tmp_path / "clock_summary.csv", "clock_summary")
    assert len(per_run) == len(runs) and per_run["excluded"].sum() == 1
    assert set(summary["analysis"]) == {"correlation", "spread", "noise_fraction", "slope"}
    assert_markdown_table(tmp_path / "clock_runs.md", columns("clock_runs"), len(per_run))
    assert_markdown_table(tmp_path / "clock_summary.md", columns("clock_summary"), len(summary))
    text = (tmp_path / "clock_summary.md").read_text()
    assert text.startswith("# P-NE* against the step-size clock")
    assert arm_sentence(summary, "batch_sweep") in text
    damaged = per_run.copy()
    damaged.loc[0, "noise_fraction"] = -0.5
    with pytest.raises(TableError, match="noise_fraction"):
        write_table(damaged, "clock_runs", tmp_path / "damaged.csv")
    damaged = summary.copy()
    damaged.loc[0, "analysis"] = "causal effect"
    with pytest.raises(TableError, match="analysis"):
        write_table(damaged, "clock_summary", tmp_path / "damaged.csv")
    with pytest.raises(TableError, match="int_clock"):
        write_table(steps_table(steps).drop(columns="int_clock"), "steps", tmp_path / "s.parquet")


def test_report_opens_with_the_words_beside_h1(tmp_path: Path):
    steps, runs = study("clock")
    summary = clock_summary(clock_runs(steps, runs), runs)
    write_table(summary, "clock_summary", tmp_path / "clock_summary.csv")
    audit = {"passed": True, "scale": "cpu", "plan_sha256": "ab" * 32, "deviations": [],
             "locked_at": "2026-12-07T00:00:00+00:00", "checks": []}  # fmt: skip
    (tmp_path / "audit.json").write_text(json.dumps(audit))
    write_table(pd.DataFrame(columns=columns("tests")), "tests", tmp_path / "t1.csv")
    pd.DataFrame({"run_id": ["a"], "excluded": [False], "exclusion_reason": [""]}).to_csv(
        tmp_path / "t2.csv", index=False
    )
    deviations = REPO / "preregistration/deviations.yaml"
    args = (tmp_path / "audit.json", tmp_path / "t1.csv", tmp_path / "t2.csv", deviations)
    text = summary_rst(*args, tmp_path / "clock_summary.csv")
    assert text.index("(T1)") < text.index("What P-NE\\* is made of") < text.index("Runs: 1")
    assert text.count("In batch\\_sweep, log int P-NE\\* and log clock correlate at r = ") == 1
    assert "What P-NE" not in summary_rst(*args)


def test_figure_draws_one_point_per_run_and_renders_without_runs(tmp_path: Path):
    steps, runs = study("clock")
    points = final_points(steps, runs)
    assert len(points) == len(runs) and points["excluded"].sum() == 1
    last = steps.sort_values("step").groupby("run_id").tail(1).set_index("run_id")
    got = points.set_index("run_id")["int_clock"]
    assert (got == last.loc[got.index, "int_clock"]).all()
    plot_clock(steps, runs, tmp_path / "clock_decomposition")
    assert_figure(tmp_path, "clock_decomposition")
    plot_clock(steps.iloc[:0], runs.iloc[:0], tmp_path / "empty")
    assert_figure(tmp_path, "empty")
