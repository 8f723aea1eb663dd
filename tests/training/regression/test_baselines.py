"""In-context regression baselines against their exact formulas (issue 11, item 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.regression.baselines import averaging, baseline_errors, knn, least_squares, ridge
from training.regression.task import RegressionTask


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_ridge_is_the_bayes_posterior_mean(k):
    """x_q . w_post with w_post = (X^T X / s^2 + I / tau^2)^{-1} X^T y / s^2 (Bishop 3.53-3.54)."""
    d, sigma = 5, 0.3
    tau2 = 1.0 / d
    gen = torch.Generator().manual_seed(k)
    xs = torch.randn(6, k, d, generator=gen, dtype=torch.float64)
    ys = torch.randn(6, k, generator=gen, dtype=torch.float64)
    xq = torch.randn(6, d, generator=gen, dtype=torch.float64)
    task = RegressionTask(d=d, k_max=8, sigma=sigma, n_train=1, n_val=1, n_eval=1, seed=0)
    got = ridge(xs, ys, xq, task.ridge_lambda).numpy()
    for i in range(6):
        X, y = xs[i].numpy(), ys[i].numpy()
        precision = X.T @ X / sigma**2 + np.eye(d) / tau2
        w_post = np.linalg.solve(precision, X.T @ y / sigma**2)
        assert got[i] == pytest.approx(float(xq[i].numpy() @ w_post), abs=1e-10)


def test_noiseless_least_squares_is_exact_from_d_examples():
    d = 4
    task = RegressionTask(d=d, k_max=7, sigma=0.0, n_train=1, n_val=1, n_eval=300, seed=3)
    split = task.split("eval")
    errors = baseline_errors(split["xs"], split["ys"], task.ridge_lambda).set_index("shot")
    assert (errors.loc[d:, "ols_error"] < 1e-18).all()
    assert (errors.loc[d:, "ridge_error"] < 1e-18).all()  # lambda = 0: its limit, least squares
    # one example short of d the weight is not identified: the error is far from 0
    assert errors.loc[d - 1, "ols_error"] > 0.05


def test_bayes_ridge_is_no_worse_than_any_baseline_with_noise():
    """Bayes-optimal in expectation: ridge <= LS, kNN, averaging and 0 at every shot,
    within 3 standard errors of the paired difference; strictly better than LS near k = d."""
    d = 5
    task = RegressionTask(d=d, k_max=9, sigma=0.5, n_train=1, n_val=1, n_eval=4000, seed=11)
    split = task.split("eval")
    xs, ys = split["xs"], split["ys"]
    for k in range(1, task.k_max):
        xq, yq = xs[:, k], ys[:, k]
        ridge_sq = (ridge(xs[:, :k], ys[:, :k], xq, task.ridge_lambda) - yq) ** 2
        for other in (least_squares, knn, averaging, lambda a, b, q: torch.zeros(len(q))):
            diff = (other(xs[:, :k], ys[:, :k], xq) - yq) ** 2 - ridge_sq
            se = float(diff.std() / len(diff) ** 0.5)
            assert float(diff.mean()) > -3 * se, (k, other)
    errors = baseline_errors(xs, ys, task.ridge_lambda).set_index("shot")
    assert (
        errors.loc[d - 1 : d + 1, "ridge_error"] < 0.8 * errors.loc[d - 1 : d + 1, "ols_error"]
    ).all()


def test_knn_and_averaging_by_hand():
    xs = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.0, 1.0]]], dtype=torch.float64)
    ys = torch.tensor([[1.0, 2.0, 100.0, 3.0]], dtype=torch.float64)
    xq = torch.tensor([[0.1, 0.1]], dtype=torch.float64)
    assert float(knn(xs, ys, xq)) == pytest.approx((1 + 2 + 3) / 3)
    w = (1 * xs[0, 0] + 2 * xs[0, 1] + 100 * xs[0, 2] + 3 * xs[0, 3]) / 4
    assert float(averaging(xs, ys, xq)) == pytest.approx(float(xq[0] @ w))
    assert float(knn(xs[:, :2], ys[:, :2], xq)) == pytest.approx(1.5)  # fewer than 3: all


def test_zero_shot_predicts_the_prior_mean():
    task = RegressionTask(d=3, k_max=4, sigma=0.25, n_train=1, n_val=1, n_eval=3000, seed=2)
    split = task.split("eval")
    errors = baseline_errors(split["xs"], split["ys"], task.ridge_lambda)
    row = errors.iloc[0]
    assert row["ridge_error"] == row["ols_error"] == row["knn_error"] == row["zero_error"]
    # E[y^2] = E|w|^2 + sigma^2 = 1 + sigma^2 under tau^2 = 1/d
    assert errors["zero_error"].mean() == pytest.approx(1 + 0.25**2, rel=0.05)
