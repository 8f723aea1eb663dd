"""In-context regression: data from seeds, prompt layout, scores, training through train_run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from preregistration.design import expand_design
from preregistration.plan import PlanError, load_plan
from preregistration.scores import regression_summaries
from tests.conftest import REPO
from training.config import load_config
from training.regression.scores import STEMS
from training.regression.task import RegressionTask, family_config, prompt_tokens
from training.train import train_run

TASK = RegressionTask(d=3, k_max=5, sigma=0.25, n_train=64, n_val=8, n_eval=16, seed=4)


def test_splits_are_functions_of_the_seed():
    a, b = TASK.split("train"), TASK.split("train")
    assert all(torch.equal(a[key], b[key]) for key in ("xs", "ys", "ws"))
    other = RegressionTask(**{**TASK.__dict__, "seed": 5}).split("train")
    assert not torch.equal(a["xs"], other["xs"])
    assert not torch.equal(TASK.split("eval")["ws"][:8], TASK.split("val")["ws"])


def test_prompts_follow_the_prior_and_the_noise():
    task = RegressionTask(d=4, k_max=3, sigma=0.5, n_train=1, n_val=1, n_eval=20000, seed=1)
    split = task.split("eval")
    assert float(split["ws"].var()) == pytest.approx(1 / 4, rel=0.05)  # tau^2 = 1/d
    residual = split["ys"] - torch.einsum("nkd,nd->nk", split["xs"], split["ws"])
    assert float(residual.std()) == pytest.approx(0.5, rel=0.03)
    assert task.ridge_lambda == pytest.approx(0.5**2 * 4)  # sigma^2 / tau^2


def test_prompt_tokens_interleave_x_and_y():
    split = TASK.split("val")
    tokens = prompt_tokens(split["xs"], split["ys"])
    assert tokens.shape == (8, 2 * TASK.k_max, TASK.d + 1)
    assert torch.equal(tokens[:, 0::2, : TASK.d], split["xs"])
    assert torch.equal(tokens[:, 0::2, TASK.d], torch.zeros(8, TASK.k_max, dtype=torch.float64))
    assert torch.equal(tokens[:, 1::2, TASK.d], split["ys"])
    assert not tokens[:, 1::2, : TASK.d].any()


def test_task_block_errors_name_the_keys():
    with pytest.raises(PlanError, match=r"lacks key\(s\) \['sigma'\]"):
        RegressionTask.from_config({"d": 3, "k_max": 4, "n_train": 1, "n_val": 1, "n_eval": 1,
                                    "seed": 0})  # fmt: skip


def _scores(model: np.ndarray, ridge: np.ndarray, zero: np.ndarray) -> pd.DataFrame:
    errors = {"model": model, "ridge": ridge, "zero": zero}
    return pd.DataFrame(
        [{"run_id": "r", "measure": f"reg_{stem}_error", "shots": k, "value": float(v[k]),
          "chance": float(zero[k]), "n_items": 10}
         for stem, v in errors.items() for k in range(len(v))]
    )  # fmt: skip


def test_icl_area_is_one_at_bayes_ridge_and_zero_at_the_prior_mean():
    ridge, zero = np.array([1.0, 0.8, 0.5, 0.3]), np.array([1.0, 1.0, 1.0, 1.0])
    assert regression_summaries(_scores(ridge, ridge, zero)) == {
        "reg_icl_area": 1.0, "reg_excess_area": 0.0}  # fmt: skip
    at_zero = regression_summaries(_scores(zero, ridge, zero))
    assert at_zero["reg_icl_area"] == pytest.approx(0.0)
    assert at_zero["reg_excess_area"] == pytest.approx(np.mean(zero[1:] - ridge[1:]))
    half = regression_summaries(_scores((ridge + zero) / 2, ridge, zero))
    assert half["reg_icl_area"] == pytest.approx(0.5)
    assert math.isnan(regression_summaries(_scores(ridge, ridge, zero)[:0])["reg_icl_area"])


@pytest.fixture(scope="module")
def smoke_regression():
    cfg = load_config(REPO / "config/smoke.yaml")
    plan = load_plan(REPO / cfg.plan)
    spec = next(s for s in expand_design(plan, "smoke") if s.arm == "regression_sweep")
    return family_config(cfg, plan, spec.arm), spec


@pytest.mark.slow
def test_a_regression_run_trains_through_the_trainer_with_the_pne_logger(smoke_regression):
    cfg, spec = smoke_regression
    spec = spec.__class__(**{**spec.__dict__, "target_val_loss": 1e-6, "token_cap": 10 * 4 * 12})
    model, result = train_run(spec, cfg, None, show_progress=False)
    task = RegressionTask.from_config(cfg.regression)
    assert model.read_in.in_features == task.d + 1 and model.read_out.out_features == 1
    trace = result.trace
    assert result.status == "token_cap" and result.steps == 10
    assert (trace["tokens"] == trace["step"] * spec.global_batch * task.block_size).all()
    for column in ("pne", "pne_star", "trace_pfp_fisher", "int_pne_star", "int_pne_star_eff"):
        assert np.isfinite(trace[column]).all() and (trace[column] > 0).all(), column
    assert "trace_pgp_ggn" not in trace or trace["trace_pgp_ggn"].isna().all()
    assert np.isfinite(trace.loc[trace["validated"], "val_loss"]).all()
    _, again = train_run(spec, cfg, None, show_progress=False)
    pd.testing.assert_frame_equal(trace, again.trace)  # deterministic under the seed


def test_score_rows_cover_every_stem_and_shot(smoke_regression):
    from training.regression.scores import score_regression

    cfg, spec = smoke_regression
    task = RegressionTask.from_config(cfg.regression)
    model, _ = train_run(spec, cfg, None, show_progress=False)
    scores = score_regression(model, task, spec.run_id)
    assert len(scores) == len(STEMS) * task.k_max
    assert set(scores["measure"]) == {f"reg_{s}_error" for s in STEMS}
    zero = scores[scores.measure == "reg_zero_error"].set_index("shots")["value"]
    assert (scores.set_index(["measure", "shots"]).loc["reg_model_error", "chance"] == zero).all()


def test_the_regression_arm_expands_with_its_own_registered_target_and_config():
    plan = load_plan(REPO / "preregistration/plan.yaml")
    block = plan["design"]["scales"]["cpu"]["arms"]["regression_sweep"]
    specs = [s for s in expand_design(plan, "cpu") if s.arm == "regression_sweep"]
    assert len(specs) == len(block["global_batch"]) * len(plan["design"]["scales"]["cpu"]["seeds"])
    assert {s.condition for s in specs} == {f"reg_bs{b}_fixed" for b in block["global_batch"]}
    assert {(s.target_val_loss, s.token_cap, s.lr_peak) for s in specs} == {
        (block["target_val_loss"], block["token_cap"], block["lr_base"])
    }
    cfg = load_config(REPO / "config/config.yaml")
    run_cfg = family_config(cfg, plan, "regression_sweep")
    assert run_cfg.model.block_size == 2 * block["task"]["k_max"]
    assert run_cfg.train.curvature_proxies == [] and run_cfg.train.n_micro == 4
    assert run_cfg.is_regression and run_cfg.regression == block["task"]
    assert family_config(cfg, plan, "batch_sweep") is cfg
