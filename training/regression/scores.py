"""Scores of a trained in-context regression model: its error per shot beside the baselines.

On the task's fixed evaluation set (``RegressionTask.split("eval")``, a seed no run
trained on) the model predicts y at every x position from the demonstrations before
it in one forward pass; the baselines of ``training.regression.baselines`` see the
same prompts. The tidy scores rows (``preregistration.tables`` SCORES) are
``reg_<stem>_error`` for stem in model, ridge, ols, knn, avg, zero, one per shot
k = 0 .. k_max - 1, with the zero predictor's error at that shot as ``chance``; the
run-level ICL summaries are ``preregistration.scores.regression_summaries``.
"""

from __future__ import annotations

import pandas as pd
import torch

from training.regression.baselines import baseline_errors
from training.regression.task import RegressionTask, prompt_tokens, query_predictions

STEMS = ("model", "ridge", "ols", "knn", "avg", "zero")


@torch.no_grad()
def model_errors(model: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the model's prediction of y_{k+1} at each shot k, (k_max,)."""
    model.eval()
    device = next(model.parameters()).device
    tokens = prompt_tokens(xs, ys).float().to(device)
    pred = query_predictions(model(tokens)).double().cpu()  # (n, k_max)
    return ((pred - ys.double()) ** 2).mean(dim=0)


def per_shot_errors(model: torch.nn.Module, task: RegressionTask, run_id: str) -> pd.DataFrame:
    """Wide per-shot table: run_id, shot, model_error, ridge_error, ols_error, knn_error,
    avg_error, zero_error (squared error of y, mean over the evaluation prompts)."""
    split = task.split("eval")
    table = baseline_errors(split["xs"], split["ys"], task.ridge_lambda)
    table.insert(1, "model_error", model_errors(model, split["xs"], split["ys"]).numpy())
    table.insert(0, "run_id", run_id)
    return table[["run_id", "shot", *(f"{stem}_error" for stem in STEMS)]]


def score_regression(model: torch.nn.Module, task: RegressionTask, run_id: str) -> pd.DataFrame:
    """The scores table of one regression run: every ``reg_<stem>_error`` at every shot."""
    wide = per_shot_errors(model, task, run_id)
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "measure": f"reg_{stem}_error",
                "shots": int(row.shot),
                "value": float(getattr(row, f"{stem}_error")),
                "chance": float(row.zero_error),
                "n_items": task.n_eval,
            }
            for row in wide.itertuples(index=False)
            for stem in STEMS
        ]
    )
