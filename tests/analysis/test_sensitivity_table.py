"""The sensitivity table (analysis.exploratory.sensitivity): how the curvature proxies of P-NE*
agree, in scale and in rank, over the runs of the arms that log them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_sensitivity_table_reads_proxy_scale_and_rank_agreement():
    """GGN P-NE* twice the Fisher one in every run: ratio 2 per run, median 2 with CI [2, 2],
    rank agreement 1; a true-Fisher P-NE* that reverses two runs has rho < 1; where a proxy
    was not logged its rows are NaN with a reason, not dropped; the raw Hessian is reported
    as its share of non-positive steps and its median ratio to the GGN trace, all finite."""
    from analysis.exploratory.sensitivity import sensitivity_table

    rng = np.random.default_rng(0)
    steps, runs = [], []
    for i in range(6):
        exposure = float(i + 1)
        for step in (1, 10, 20):
            steps.append(
                {"run_id": f"r{i}", "step": step, "clip_rate": 0.5 if step == 10 else 0.0,
                 "int_pne": 10 * exposure * step, "int_pne_star": exposure * step,
                 "int_pne_eff": 9 * exposure * step, "int_pne_star_eff": 0.9 * exposure * step,
                 "int_pne_eta2": 0.01 * exposure * step, "int_pne_star_fisher": exposure * step,
                 "int_pne_star_ggn": 2 * exposure * step if i < 5 else np.nan,
                 "int_pne_star_true_fisher": (7 - exposure if i < 2 else exposure) * step,
                 "trace_pfp_fisher": 1.0, "trace_pgp_ggn": 0.5,
                 "trace_php_hessian": -0.1 if step == 1 else 0.25}
            )  # fmt: skip
        runs.append(
            {"run_id": f"r{i}", "condition": f"c{i % 2}", "excluded": False,
             "icl_auc": 0.1 * exposure + rng.normal(0, 0.01)}
        )  # fmt: skip
    table = sensitivity_table(pd.DataFrame(steps), pd.DataFrame(runs), n_boot=200)
    ggn = table[table["measure"] == "int_pne_star_ggn / int_pne_star_fisher"]
    assert ggn["value"].iloc[:5].tolist() == pytest.approx([2.0] * 5)
    assert np.isnan(ggn["value"].iloc[5]) and "not logged" in ggn["note"].iloc[5]
    median = table[table["measure"] == "median(int_pne_star_ggn / int_pne_star_fisher)"].iloc[0]
    assert (median["value"], median["ci_low"], median["ci_high"], median["n"]) == (2, 2, 2, 5)
    agreement = table[table["measure"] == "spearman(int_pne_star_fisher, int_pne_star_ggn)"]
    assert agreement["value"].item() == pytest.approx(1.0) and agreement["n"].item() == 5
    reversed_ = table[table["measure"] == "spearman(int_pne_star_fisher, int_pne_star_true_fisher)"]
    assert reversed_["value"].item() < 0.9
    hessian = table[table["analysis"] == "hessian_trace"]
    share = hessian[hessian["measure"] == "share of steps with Tr(PHP) <= 0"]["value"]
    assert share.tolist() == pytest.approx([1 / 3] * 7)
    relative = hessian[hessian["measure"] == "median Tr(PHP) / Tr(PGP)"]["value"]
    assert relative.tolist() == pytest.approx([0.5] * 6)
    overall = table[table["scope"] == "all runs"]
    assert np.isfinite(overall[["value", "ci_low", "ci_high"]].to_numpy()).all()
    assert not any("hutchinson" in m for m in table["measure"])
    clip = table[(table["measure"] == "clip_rate")]["value"]
    assert clip.tolist() == pytest.approx(
        [0.5 * 9 / 20] * 6
    )  # window 2..10 of 20 steps clipped half


def test_sensitivity_table_compares_the_runs_of_its_arms_only():
    """With ``arms``, the table is the one of those arms' runs alone, and says so in note;
    an arm without runs is an error, not an empty table."""
    from analysis.exploratory.sensitivity import sensitivity_table

    rng = np.random.default_rng(1)
    steps, runs = [], []
    for i in range(8):
        arm = "batch_sweep" if i % 2 else "noise_injection"
        for step in (1, 10):
            steps.append(
                {"run_id": f"r{i}", "step": step, "clip_rate": 0.0,
                 "int_pne": step * (i + 1), "int_pne_star": step * (i + 1) / 10,
                 "int_pne_eff": step * (i + 1), "int_pne_star_eff": step * (i + 1) / 10,
                 "int_pne_eta2": step * (i + 1) / 100, "int_pne_star_fisher": step * (i + 1) / 10,
                 "int_pne_star_ggn": step * (i + 1) * rng.uniform(0.1, 0.3),
                 "int_pne_star_true_fisher": step * (i + 1) * rng.uniform(0.1, 0.3),
                 "trace_pfp_fisher": 1.0, "trace_pgp_ggn": 0.5, "trace_php_hessian": 0.2}
            )  # fmt: skip
        runs.append({"run_id": f"r{i}", "condition": f"c{i}", "arm": arm, "excluded": False,
                     "icl_auc": rng.uniform()})  # fmt: skip
    steps, runs = pd.DataFrame(steps), pd.DataFrame(runs)
    table = sensitivity_table(steps, runs, n_boot=100, arms=["batch_sweep"])
    sweep = runs[runs["arm"] == "batch_sweep"]
    alone = sensitivity_table(steps[steps["run_id"].isin(sweep["run_id"])], sweep, n_boot=100)
    pd.testing.assert_frame_equal(table.drop(columns="note"), alone.drop(columns="note"))
    assert set(table.loc[table["scope"] != "all runs", "scope"]) == set(sweep["run_id"])
    assert table.loc[table["scope"] == "all runs", "note"].str.contains("runs of batch_sweep").all()
    with pytest.raises(ValueError, match=r"no run of arm\(s\) \['nap'\]"):
        sensitivity_table(steps, runs, n_boot=100, arms=["nap"])
