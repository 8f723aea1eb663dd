"""Baselines of in-context linear regression and their squared error against shots.

Each baseline predicts y_query = f(x_query) from the k demonstrations before it
(X: k x d, y: k), as in Garg et al. (2022, §3 and Fig. 2):

- ``least_squares``: x_q . X^+ y, the minimum-norm least-squares fit (pseudo-inverse);
- ``ridge``: x_q . (X^T X + lambda I)^{-1} X^T y = x_q . X^T (X X^T + lambda I)^{-1} y, with
  lambda = sigma^2 / tau^2 the Bayes posterior mean under the prior w ~ N(0, tau^2 I)
  (``training.regression.task``); lambda = 0 falls back to least squares (its limit);
- ``knn``: the mean of the y of the 3 nearest x_i (Euclidean), of all when k < 3;
- ``averaging``: x_q . (1/k) sum_i y_i x_i, the estimate of w from E[y x] = w;
- ``zero``: 0, the prior mean; its error is 1 + sigma^2 when tau^2 = 1/d.

With no demonstration (k = 0) every baseline predicts 0. Errors are squared errors of
y, on the per-dimension scale of Garg et al. (see ``training.regression.task``).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

N_NEIGHBOURS = 3


def least_squares(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """x_q . X^+ y per prompt; xs (n, k, d), ys (n, k), xq (n, d) -> (n,)."""
    w = torch.linalg.pinv(xs) @ ys.unsqueeze(-1)  # (n, d, 1)
    return (xq.unsqueeze(1) @ w).reshape(-1)


def ridge(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, lam: float) -> torch.Tensor:
    """x_q . X^T (X X^T + lambda I_k)^{-1} y per prompt (the dual form, valid for any k)."""
    if lam <= 0:
        return least_squares(xs, ys, xq)
    k = xs.shape[1]
    gram = xs @ xs.transpose(1, 2) + lam * torch.eye(k, dtype=xs.dtype)  # (n, k, k)
    alpha = torch.linalg.solve(gram, ys.unsqueeze(-1))  # (n, k, 1)
    w = xs.transpose(1, 2) @ alpha  # (n, d, 1)
    return (xq.unsqueeze(1) @ w).reshape(-1)


def knn(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Mean y of the ``N_NEIGHBOURS`` demonstrations nearest to x_q (all of them when fewer)."""
    dist = ((xs - xq.unsqueeze(1)) ** 2).sum(-1)  # (n, k)
    m = min(N_NEIGHBOURS, xs.shape[1])
    nearest = dist.topk(m, dim=1, largest=False).indices  # (n, m)
    return ys.gather(1, nearest).mean(dim=1)


def averaging(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """x_q . (1/k) sum_i y_i x_i."""
    w = (ys.unsqueeze(-1) * xs).mean(dim=1)  # (n, d)
    return (xq * w).sum(-1)


def baselines(lam: float) -> dict[str, Callable]:
    """The baselines by their column stem in the per-shot table (``<stem>_error``)."""
    return {
        "ridge": lambda xs, ys, xq: ridge(xs, ys, xq, lam),
        "ols": least_squares,
        "knn": knn,
        "avg": averaging,
        "zero": lambda xs, ys, xq: torch.zeros(len(xq), dtype=xs.dtype),
    }


def baseline_errors(xs: torch.Tensor, ys: torch.Tensor, lam: float) -> pd.DataFrame:
    """Mean squared error of every baseline at every shot k = 0 .. k_max - 1.

    Parameters
    ----------
    xs, ys : prompts (n, k_max, d) and (n, k_max); the query of shot k is (x_{k+1}, y_{k+1})
        and its demonstrations the k pairs before it.
    lam : ridge penalty lambda = sigma^2 / tau^2 (Bayes-optimal for the task's prior).

    Returns
    -------
    DataFrame, one row per shot: ``shot`` and ``<stem>_error`` for ridge, ols, knn, avg
    and zero (mean over prompts of (prediction - y_query)^2).
    """
    xs, ys = xs.double(), ys.double()
    rows = []
    for k in range(xs.shape[1]):
        xq, yq = xs[:, k], ys[:, k]
        row = {"shot": k}
        for stem, predict in baselines(lam).items():
            pred = torch.zeros_like(yq) if k == 0 else predict(xs[:, :k], ys[:, :k], xq)
            row[f"{stem}_error"] = float(((pred - yq) ** 2).mean())
        rows.append(row)
    return pd.DataFrame(rows)
