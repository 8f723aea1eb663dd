"""What a run's task decides: its model, its batches, its loss and its validation loss.

``LANGUAGE`` is the synthetic corpus with next-token cross-entropy;
``REGRESSION_FAMILY`` is in-context linear regression (``training.regression.task``);
``task_family`` picks one from the run's config. The training loop
(``training.train``) is the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from training.config import ModelConfig, StudyConfig
from training.model import GPT, GPTConfig, lm_loss
from training.regression.model import RegressionConfig, RegressionGPT
from training.regression.task import (
    RegressionTask,
    regression_corpus,
    regression_loss,
    regression_validation_loss,
)


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, val: torch.Tensor, chunk: int = 128) -> float:
    """Mean next-token loss (nats/token) over the whole validation split."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(val), chunk):
        seq = val[i : i + chunk].long().to(device)
        logits = model(seq[:, :-1])
        total += lm_loss(logits, seq[:, 1:]).item() * seq[:, 1:].numel()
        count += seq[:, 1:].numel()
    model.train()
    return total / count


@dataclass(frozen=True)
class TaskFamily:
    """What a run's task decides: its model, its batches, its loss and its validation loss.

    ``language`` is the synthetic corpus with next-token cross-entropy; ``regression``
    (``training.regression.task``, chosen by ``cfg.regression``) is in-context linear
    regression with squared error at every x position. The loop is the same for both.
    """

    build: Callable[[ModelConfig, dict], torch.nn.Module]  # (model config, corpus) -> model
    batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (split, indices) -> batch
    loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]  # mean loss of a batch
    validation: Callable[[torch.nn.Module, torch.Tensor], float]  # mean validation loss


LANGUAGE = TaskFamily(
    build=lambda model_cfg, corpus: GPT(
        GPTConfig(vocab_size=int(corpus["vocab_size"]), **asdict(model_cfg))
    ),
    batch=lambda split, idx: split[idx].long(),
    loss=lambda net, seq: lm_loss(net(seq[:, :-1]), seq[:, 1:]),
    validation=lambda model, val: validation_loss(model, val),
)
REGRESSION_FAMILY = TaskFamily(
    build=lambda model_cfg, corpus: RegressionGPT(
        RegressionConfig(n_dims=corpus["task"].d, **asdict(model_cfg))
    ),
    batch=lambda split, idx: split[idx],
    loss=regression_loss,
    validation=regression_validation_loss,
)


def task_family(cfg: StudyConfig, corpus: dict | None) -> tuple[TaskFamily, dict]:
    """The run's task family and its data: the given corpus, or the regression prompts
    drawn from the registered task (``cfg.regression``, set by ``regression.task.run_config``).
    """
    if not cfg.is_regression:
        return LANGUAGE, corpus
    return REGRESSION_FAMILY, regression_corpus(RegressionTask.from_config(cfg.regression))
