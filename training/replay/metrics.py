"""The metrics replay predicts, as functions of a parameter dict (issue 21; plan ``replay``).

Replay differentiates each metric f(theta) (its gradient starts the adjoint pass), and a
retrain reads the same function at its end point, so prediction and realisation measure
one quantity. Accuracies are piecewise constant in theta (their linearisation is zero), so
the skills are measured by the correct answer's log-probability over its answer family A,
log p_A(y) = z_y - log sum_{a in A} exp(z_a), z the last position's logits
(``training.evaluation.memorization`` reads the same quantity):

- ``val_loss``: the mean next-token loss over the validation split (nats/token), as the
  study's validation loss;
- ``icl_logprob_auc``: ``icl_auc``'s trapezoid area over log2(1 + k), divided by the
  x-range, of the mean log p_A(label) of held-out k-shot episodes, with k the scale's
  evaluation shots (``preregistration.scores.icl_auc`` with log-probability for accuracy);
- ``memorization_logprob``: the mean of the fact and in-weights probes' mean log p_A,
  as ``memorization`` is the mean of their accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.func import functional_call

from training.data.corpus import CorpusGenerator
from training.evaluation.scores import EVAL_SEED_OFFSET
from training.model import lm_loss

Params = dict[str, torch.Tensor]
MetricFn = Callable[[Params], torch.Tensor]
METRICS = ("val_loss", "icl_logprob_auc", "memorization_logprob")
_SEED_OFFSET = 11  # the replay's ICL episodes: another draw than the evaluation's


def answer_logprob(
    model: torch.nn.Module, params: Params, inputs: torch.Tensor, targets: torch.Tensor,
    answers: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Mean over prompts of log p_A(target) at the last position (differentiable in params)."""
    logits = functional_call(model, params, (inputs,))[:, -1, :]
    family = logits[:, answers]
    correct = logits.gather(1, targets[:, None]).squeeze(1)
    return (correct - torch.logsumexp(family, dim=1)).mean()


def auc_weights(shots: list[int]) -> np.ndarray:
    """w with sum_k w_k y_k = the trapezoid area of y over log2(1 + k) / the x-range."""
    x = np.log2(1 + np.asarray(sorted(shots), dtype=float))
    w = np.zeros_like(x)
    w[:-1] += np.diff(x) / 2
    w[1:] += np.diff(x) / 2
    return w / (x[-1] - x[0])


def replay_metrics(
    model: torch.nn.Module, corpus: dict, shots: list[int], icl_episodes: int,
    names: tuple[str, ...] | list[str] = METRICS,
) -> dict[str, MetricFn]:  # fmt: skip
    """The metrics ``names`` of ``model``'s architecture, each a function of a parameter dict."""
    unknown = set(names) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown replay metrics {sorted(unknown)}; known: {METRICS}")
    device = next(model.parameters()).device
    data_cfg = corpus["data_cfg"]
    gen = CorpusGenerator(data_cfg, seq_len=corpus["block_size"] + 1)
    seed = int(data_cfg["seed"]) + EVAL_SEED_OFFSET + _SEED_OFFSET
    labels = torch.as_tensor(gen.vocab.ids("labels"), device=device)
    values = torch.as_tensor(gen.vocab.ids("values"), device=device)
    max_shots = (corpus["block_size"] - 2) // 2
    shots = sorted(k for k in shots if k <= max_shots)
    if len(shots) < 2:
        raise ValueError(f"icl_logprob_auc needs two shot counts <= {max_shots}, got {shots}")
    episodes = [
        tuple(x.to(device) for x in gen.icl_episodes(k, icl_episodes, seed=seed * 1000 + k))
        for k in shots
    ]
    weights = [float(w) for w in auc_weights(shots)]
    probes = {
        family: tuple(x.to(device) for x in gen.recall_probes(family))
        for family in ("facts", "in_weights")
    }
    answers = {"facts": values, "in_weights": labels}
    val = corpus["val"].long().to(device)

    def val_loss(params: Params) -> torch.Tensor:
        logits = functional_call(model, params, (val[:, :-1],))
        return lm_loss(logits, val[:, 1:])

    def icl_logprob_auc(params: Params) -> torch.Tensor:
        parts = [
            w * answer_logprob(model, params, x, y, labels)
            for w, (x, y) in zip(weights, episodes, strict=True)
        ]
        return torch.stack(parts).sum()

    def memorization_logprob(params: Params) -> torch.Tensor:
        parts = [answer_logprob(model, params, *probes[f], answers[f]) for f in probes]
        return torch.stack(parts).mean()

    table = {
        "val_loss": val_loss,
        "icl_logprob_auc": icl_logprob_auc,
        "memorization_logprob": memorization_logprob,
    }
    return {name: table[name] for name in names}


def evaluate(metrics: dict[str, MetricFn], params: Params) -> dict[str, float]:
    """Each metric's value at ``params`` (no gradient)."""
    with torch.no_grad():
        out = {name: float(f(params)) for name, f in metrics.items()}
    bad = [name for name, v in out.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"replay metrics {bad} are not finite at these parameters")
    return out
