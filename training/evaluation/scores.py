"""Scores of one trained model: ICL vs shots, memorization, copy, validation loss.

Every score is measured on data no run trained on: ICL episodes use held-out
mappings; recall probes have no context at all, so only the weights can answer.
Answers are read as the argmax over the answer family (labels or values), so
chance is 1 / (family size).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from training.config import EvaluateConfig, block_config
from training.data.corpus import CorpusGenerator
from training.model import GPT
from training.task_family import validation_loss

EVAL_SEED_OFFSET = 7  # evaluation draws come from data.seed + this, never used for training


@torch.no_grad()
def answer_accuracy(
    model: GPT, inputs: torch.Tensor, targets: torch.Tensor, answers: np.ndarray
) -> float:
    """Share of prompts whose last-position argmax over ``answers`` equals the target."""
    logits = model(inputs.to(next(model.parameters()).device))[:, -1, :].cpu()  # (N, vocab)
    answer_ids = torch.as_tensor(answers)
    pred = answer_ids[logits[:, answer_ids].argmax(dim=-1)]
    return float((pred == targets).float().mean())


@torch.no_grad()
def induction_score(model: GPT, gen: CorpusGenerator, n: int, seed: int) -> float:
    """Mean loss on a copy segment's first occurrence minus its loss on the repeats (nats/token).

    Positive when the model copies (induction); about 0 without the skill.
    """
    rng = np.random.default_rng(seed)
    drawn = [gen.copy_with_length(rng) for _ in range(n)]
    seqs = torch.tensor(np.stack([seq for seq, _ in drawn]))
    logits = model(seqs[:, :-1].to(next(model.parameters()).device)).cpu()
    per_token = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), seqs[:, 1:], reduction="none"
    )  # (n, T-1); entry p is the loss of token p+1; the segment starts at token 1
    position = torch.arange(per_token.shape[1])
    length = torch.tensor([length for _, length in drawn])[:, None]
    first = (position >= 1) & (position < length)  # first copy, after its first token
    repeat = position >= length
    return float(per_token[first].mean() - per_token[repeat].mean())


def score_model(
    model: GPT, corpus: dict, eval_cfg: EvaluateConfig | Mapping, run_id: str
) -> pd.DataFrame:
    """All scores of one model as a tidy table (preregistration.tables SCORES).

    Its run-level summaries (ICL AUC, memorization, ...) are
    ``preregistration.scores.summarize_scores``.
    """
    eval_cfg = block_config(EvaluateConfig, eval_cfg)
    model.eval()
    data_cfg = corpus["data_cfg"]
    gen = CorpusGenerator(data_cfg, seq_len=corpus["block_size"] + 1)
    seed = int(data_cfg["seed"]) + EVAL_SEED_OFFSET
    labels, values = gen.vocab.ids("labels"), gen.vocab.ids("values")
    max_shots = (corpus["block_size"] - 2) // 2
    shots = [k for k in eval_cfg.shots if k <= max_shots]
    n = eval_cfg.n_episodes
    rows = []
    for k in shots:
        inputs, targets = gen.icl_episodes(k, n, seed=seed * 1000 + k)
        acc = answer_accuracy(model, inputs, targets, labels)
        rows.append(("icl_accuracy", k, acc, 1 / len(labels), n))
    for family, answers, measure in (
        ("in_weights", labels, "in_weights_accuracy"),
        ("facts", values, "fact_recall"),
    ):
        inputs, targets = gen.recall_probes(family)
        rows.append(
            (
                measure,
                -1,
                answer_accuracy(model, inputs, targets, answers),
                1 / len(answers),
                len(targets),
            )
        )
    n_copy = min(n, 256)
    rows.append(("induction_score", -1, induction_score(model, gen, n_copy, seed + 1), 0.0, n_copy))
    rows.append(
        ("val_loss", -1, validation_loss(model, corpus["val"]), float("nan"), len(corpus["val"]))
    )
    df = pd.DataFrame(rows, columns=["measure", "shots", "value", "chance", "n_items"])
    df.insert(0, "run_id", run_id)
    return df
