"""Counterfactual Noise Replay against retraining (issue 21, D10; analysis.exploratory.cnr):
the validation statistics on hand-built replays whose answer is known (perfect, reversed and
no-change predictions, intervals that miss, the noise floor, the costs, the bootstrap), the
gathering's refusals naming the file, the job's tables through their contracts with the
figure and the report page, and the report's words."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from output_checks import assert_figure, assert_markdown_table
from scipy.stats import spearmanr

from analysis.exploratory.cnr import (
    cluster_bootstrap_spearman,
    cnr_sentences,
    cnr_validation,
    gather_cnr,
    noise_floor,
)
from analysis.report.pages import summary_rst
from preregistration.tables import TableError, columns, read_table, write_table
from workflow.scripts.cnr_tables import main as cnr_tables_main

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = ["isotropic", "tensor_matched", "precond_aligned", "half", "double",
              "attention_only", "mlp_only", "no_injection", "antithetic"]  # fmt: skip
FLOOR = ["fresh_draw_1", "fresh_draw_2"]
METRICS = ["val_loss", "icl_logprob_auc", "memorization_logprob"]
HORIZONS = [4, 8, 16]
METHODS = ["adamw", "sgd", "identity", "no_change"]
Predict = Callable[[str, float, np.random.Generator], tuple[float, float, float]]


def default_predict(method: str, d: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """adamw exact (interval +-0.01), sgd reversed, identity noisy, no_change 0."""
    if method == "adamw":
        return d, d - 0.01, d + 0.01
    if method == "sgd":
        return -d, -d - 0.01, -d + 0.01
    if method == "identity":
        p = d + rng.normal(scale=0.1)
        return p, p - 0.1, p + 0.1
    return 0.0, 0.0, 0.0


def replay(
    predict: Predict = default_predict, n_seeds: int = 3, fractions=(0.5, 0.8), seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and retrains of ``n_seeds`` base runs x ``fractions`` cases: the
    candidates' realised changes N(0, 0.1), the fresh draws' N(0, 0.01), the recorded one 0
    (value 2 + change). Costs: a retrain 10 + seed seconds (the fresh draws and the recorded
    retrain 1000, never counted), the replay of method m 2 + seed (0 for no_change)."""
    rng = np.random.default_rng(seed)
    preds, retrains = [], []
    roles = [(c, "candidate") for c in CANDIDATES] + [(c, "noise_floor") for c in FLOOR]
    for s in range(n_seeds):
        for f in fractions:
            case = {"base_run": f"inj_gaussian_bs64_s{s}", "condition": "inj_gaussian_bs64",
                    "seed": s, "switch_fraction": f, "switch_step": int(f * 96)}  # fmt: skip
            for candidate, role in [*roles, ("recorded", "recorded")]:
                for h in HORIZONS:
                    for metric in METRICS:
                        scale = 0.1 if role == "candidate" else 0.01
                        d = 0.0 if role == "recorded" else float(rng.normal(scale=scale))
                        retrains.append(
                            {**case, "horizon": h, "candidate": candidate, "role": role,
                             "metric": metric, "value": 2.0 + d, "realised_change": d,
                             "cost_s": 10.0 + s if role == "candidate" else 1000.0}
                        )  # fmt: skip
                        if role == "recorded":
                            continue
                        for method in METHODS:
                            p, low, high = predict(method, d, rng)
                            preds.append(
                                {**case, "horizon": h, "candidate": candidate, "role": role,
                                 "method": method, "metric": metric, "predicted_change": p,
                                 "interval_low": low, "interval_high": high, "level": 0.9,
                                 "cost_s": 0.0 if method == "no_change" else 2.0 + s}
                            )  # fmt: skip
    return pd.DataFrame(preds), pd.DataFrame(retrains)


def write_cases(predictions: pd.DataFrame, retrains: pd.DataFrame, root: Path) -> list[Path]:
    """One directory per case, as the replay job lays them out
    (``<condition>/seed<seed>/switch<fraction>``), through the contracts; in case order."""
    dirs = []
    for (base, fraction), pred in predictions.groupby(["base_run", "switch_fraction"]):
        d = root / "replay" / "inj_gaussian_bs64" / f"seed{base[-1]}" / f"switch{fraction:g}"
        case = (retrains["base_run"] == base) & (retrains["switch_fraction"] == fraction)
        write_table(pred, "cnr_predictions", d / "predictions.csv")
        write_table(retrains[case], "cnr_retrains", d / "retrains.csv")
        dirs.append(d)
    return dirs


def row(table: pd.DataFrame, method: str, metric: str = "val_loss", horizon: int = 16):
    sel = table[(table["method"] == method) & (table["metric"] == metric)]
    return sel[sel["horizon"] == horizon].squeeze()


@pytest.fixture(scope="module")
def validation() -> pd.DataFrame:
    return cnr_validation(*replay(), n_boot=200, seed=1)


def test_one_row_per_method_metric_and_horizon(validation):
    assert list(validation.columns) == columns("cnr_validation")
    assert len(validation) == len(METHODS) * len(METRICS) * len(HORIZONS)
    assert validation["method"].drop_duplicates().tolist() == METHODS
    assert (validation["n_cases"] == 6).all() and (validation["n_rows"] == 6 * 9).all()


def test_perfect_predictions_give_rank_one_full_coverage_and_no_error(validation):
    exact = validation[validation["method"] == "adamw"]
    assert np.allclose(exact["spearman"], 1) and np.allclose(exact["median_case_spearman"], 1)
    assert np.allclose(exact[["spearman_ci_low", "spearman_ci_high"]], 1)
    assert (exact["coverage"] == 1).all() and (exact["sign_agreement"] == 1).all()
    assert np.allclose(exact["mae"], 0) and np.allclose(exact["relative_error"], 0)


def test_reversed_predictions_give_rank_minus_one(validation):
    reversed_ = validation[validation["method"] == "sgd"]
    assert np.allclose(reversed_["spearman"], -1)
    assert np.allclose(reversed_["median_case_spearman"], -1)
    assert (reversed_["sign_agreement"] == 0).all()
    # |(-d) - d| = 2 |d|
    assert np.allclose(reversed_["mae"], 2 * reversed_["mean_abs_realised"])


def test_a_realised_change_outside_every_interval_gives_coverage_zero():
    def beside(method, d, rng):  # the right value, an interval that misses it
        return d, d + 0.5, d + 1.0

    table = cnr_validation(*replay(beside), n_boot=50)
    assert (table.loc[table["method"] != "no_change", "coverage"] == 0).all()
    assert np.allclose(table.loc[table["method"] != "no_change", "spearman"], 1)


def test_no_change_has_no_coverage_or_sign_and_its_error_is_the_mean_realised(validation):
    predictions, retrains = replay()
    flat = validation[validation["method"] == "no_change"]
    assert flat[["coverage", "sign_agreement", "interval_level", "spearman"]].isna().all().all()
    assert np.allclose(flat["relative_error"], 1)
    candidates = retrains[retrains["role"] == "candidate"]
    by_hand = candidates.groupby(["metric", "horizon"])["realised_change"].apply(
        lambda d: np.abs(d).mean()
    )
    for r in flat.itertuples():
        assert r.mae == pytest.approx(by_hand[(r.metric, r.horizon)])
        assert r.mae == pytest.approx(r.mean_abs_realised)
    assert (flat["replay_s"] == 0).all() and (flat["cost_ratio"] == 0).all()


def test_noise_floor_is_the_rms_of_the_fresh_draws_changes():
    predictions, retrains = replay()
    at = (retrains["role"] == "noise_floor") & (retrains["metric"] == "val_loss")
    at &= retrains["horizon"] == 4
    retrains.loc[at, "realised_change"] = [0.3, -0.4] * 6  # 6 cases x 2 draws
    cand = (retrains["role"] == "candidate") & (retrains["metric"] == "val_loss")
    cand &= retrains["horizon"] == 4
    # two thirds of the candidates beyond 2 x sqrt(0.125) = 0.7071, one third within it
    retrains.loc[cand, "realised_change"] = [1.0, -0.8, 0.7] * 18
    floor = noise_floor(retrains).set_index(["metric", "horizon"])
    assert floor.loc[("val_loss", 4), "noise_floor_sd"] == pytest.approx(np.sqrt(0.125))
    assert floor.loc[("val_loss", 4), "n_floor"] == 12
    table = cnr_validation(predictions, retrains, n_boot=20)
    r = row(table, "adamw", horizon=4)
    assert r["noise_floor_sd"] == pytest.approx(np.sqrt((0.09 + 0.16) / 2))
    assert r["share_above_floor"] == pytest.approx(2 / 3)
    assert r["mean_abs_realised"] == pytest.approx((1.0 + 0.8 + 0.7) / 3)
    # the other metrics and horizons keep the simulated floor: N(0, 0.01) draws
    assert 0.004 < row(table, "adamw", "icl_logprob_auc")["noise_floor_sd"] < 0.02


def test_retrain_cost_counts_each_retrain_once(validation):
    # per case: 9 candidate retrains of 10 + seed s each, repeated on 3 horizons x 3 metrics
    # rows; fresh draws and the recorded retrain (1000 s) are not candidates
    retrain_s = np.mean([9 * (10.0 + s) for s in (0, 1, 2)])
    replay_s = np.mean([2.0 + s for s in (0, 1, 2)])
    for method in ("adamw", "sgd", "identity"):
        r = row(validation, method)
        assert r["retrain_s"] == pytest.approx(retrain_s)
        assert r["replay_s"] == pytest.approx(replay_s)
        assert r["cost_ratio"] == pytest.approx(replay_s / retrain_s)


def test_bootstrap_interval_holds_the_point_estimate():
    rng = np.random.default_rng(3)
    x = rng.normal(size=60)
    y = x + rng.normal(scale=1.0, size=60)
    clusters = np.repeat(np.arange(6), 10)
    table = cnr_validation(*replay(), n_boot=300, seed=2)
    identity = table[table["method"] == "identity"]
    assert (identity["spearman_ci_low"] <= identity["spearman"]).all()
    assert (identity["spearman"] <= identity["spearman_ci_high"]).all()
    assert (identity["spearman_ci_low"] < identity["spearman_ci_high"]).all()
    low, high = cluster_bootstrap_spearman(x, y, clusters, n_boot=500, level=0.9, seed=0)
    assert low <= spearmanr(x, y).statistic <= high and -1 <= low < high <= 1
    assert cluster_bootstrap_spearman(x, y, clusters, 500, 0.9, 0) == (low, high)
    # unequal clusters, and one cluster alone: no interval
    uneven = np.repeat(np.arange(4), [5, 10, 20, 25])
    low2, high2 = cluster_bootstrap_spearman(x, y, uneven, n_boot=200)
    assert low2 <= spearmanr(x, y).statistic <= high2
    assert np.isnan(cluster_bootstrap_spearman(x, y, np.zeros(60), n_boot=50)).all()


def test_gather_reads_every_case_and_refuses_a_missing_column(tmp_path: Path):
    predictions, retrains = replay(n_seeds=2)
    dirs = write_cases(predictions, retrains, tmp_path)
    pred, retr = gather_cnr(dirs)
    assert len(pred) == len(predictions) and len(retr) == len(retrains)
    damaged = dirs[1] / "predictions.csv"
    pd.read_csv(damaged).drop(columns="interval_low").to_csv(damaged, index=False)
    with pytest.raises(TableError, match=rf"(?s){damaged}.*missing column.*interval_low"):
        gather_cnr(dirs)


def test_gather_refuses_an_orphan_prediction_naming_the_file(tmp_path: Path):
    predictions, retrains = replay(n_seeds=2)
    lost = (retrains["candidate"] == "half") & (retrains["base_run"] == "inj_gaussian_bs64_s1")
    dirs = write_cases(predictions, retrains[~lost], tmp_path)  # s1 is the third case
    with pytest.raises(TableError, match=rf"{dirs[2] / 'predictions.csv'}.*without their retrain"):
        gather_cnr(dirs)


def test_gather_refuses_a_duplicate_key(tmp_path: Path):
    predictions, retrains = replay(n_seeds=1)
    dirs = write_cases(predictions, pd.concat([retrains, retrains.iloc[:1]]), tmp_path)
    with pytest.raises(TableError, match=rf"{dirs[0] / 'retrains.csv'}: duplicate key"):
        gather_cnr(dirs)
    # the same base run in two directories
    copy = tmp_path / "copy"
    write_table(predictions, "cnr_predictions", copy / "predictions.csv")
    write_table(retrains, "cnr_retrains", copy / "retrains.csv")
    dirs = write_cases(predictions, retrains, tmp_path / "fresh")
    with pytest.raises(TableError, match="in two case directories"):
        gather_cnr([*dirs, copy])


def test_contracts_refuse_a_bad_value(tmp_path: Path):
    predictions, retrains = replay(n_seeds=1)
    bad = predictions.copy()
    bad.loc[0, "method"] = "adam"
    with pytest.raises(TableError, match="method"):
        write_table(bad, "cnr_predictions", tmp_path / "p.csv")
    bad = retrains.copy()
    bad.loc[0, "role"] = "baseline"
    with pytest.raises(TableError, match="role"):
        write_table(bad, "cnr_retrains", tmp_path / "r.csv")


def test_the_job_writes_tables_through_their_contracts_figure_and_page(tmp_path: Path):
    dirs = write_cases(*replay(n_seeds=2), tmp_path)
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    page = tmp_path / "report" / "cnr_validation.html"
    argv = ["--cases", *map(str, dirs), "--tables-dir", str(tables), "--figures-dir",
            str(figures), "--report-page", str(page), "--seed", "5", "--n-boot", "100"]  # fmt: skip
    assert cnr_tables_main(argv) == 0
    for name in ("cnr_predictions", "cnr_retrains", "cnr_validation"):
        table = read_table(tables / f"{name}.csv", name)
        assert list(table.columns) == columns(name)
    validation = read_table(tables / "cnr_validation.csv", "cnr_validation")
    assert len(dirs) == 4 and len(validation) == 36 and (validation["n_cases"] == 4).all()
    assert_markdown_table(tables / "cnr_validation.md", columns("cnr_validation"), 36)
    notes = (tables / "cnr_validation.md").read_text()
    assert all(sentence in notes for sentence in cnr_sentences(validation))
    assert_figure(figures, "cnr_predicted_vs_realised")
    assert "<h1>Counterfactual noise replay" in page.read_text()


def test_sentences_follow_the_numbers(validation):
    sentences = cnr_sentences(validation)
    assert len(sentences) == len(METRICS) + 1
    first = sentences[0]
    assert first.startswith("val_loss 16 steps after the switch (6 cases, 54 candidate retrains)")
    assert "CNR rho 1.00 [1.00, 1.00]" in first and "cover 100 %" in first
    assert "the SGD-form Jacobian rho -1.00" in first
    assert "above the SGD-form Jacobian's" in first
    # the candidates' N(0, 0.1) changes against N(0, 0.01) fresh draws: beyond the floor
    assert "beyond what a fresh draw alone does" in first
    assert sentences[-1].startswith("Per case CNR took 3 s of replay against 99 s")
    # candidates within the floor: the words turn
    predictions, retrains = replay()
    retrains.loc[retrains["role"] == "noise_floor", "realised_change"] *= 100
    turned = cnr_sentences(cnr_validation(predictions, retrains, n_boot=20))[0]
    assert "largely one of noise" in turned


def test_report_opens_with_the_replay_words_only_when_there_is_a_replay(validation, tmp_path):
    write_table(validation, "cnr_validation", tmp_path / "cnr_validation.csv")
    audit = {"passed": True, "scale": "cpu", "plan_sha256": "ab" * 32, "deviations": [],
             "locked_at": "2026-12-07T00:00:00+00:00", "checks": []}  # fmt: skip
    (tmp_path / "audit.json").write_text(json.dumps(audit))
    write_table(pd.DataFrame(columns=columns("tests")), "tests", tmp_path / "t1.csv")
    pd.DataFrame({"run_id": ["a"], "excluded": [False], "exclusion_reason": [""]}).to_csv(
        tmp_path / "t2.csv", index=False
    )
    deviations = REPO / "preregistration/deviations.yaml"
    args = (tmp_path / "audit.json", tmp_path / "t1.csv", tmp_path / "t2.csv", deviations)
    text = summary_rst(*args, cnr_path=tmp_path / "cnr_validation.csv")
    title = "Counterfactual noise replay (exploratory)"
    assert text.index("(T1)") < text.index(title) < text.index("Runs: 1")
    assert text.count("- val\\_loss 16 steps after the switch") == 1
    assert title not in summary_rst(*args)
