"""Likelihood recall equals a hand computation; the exact-match view agrees with
``training.evaluation.scores``; the format control counts any answer of the right family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.tiny_data import TINY_DATA
from training.data.corpus import CorpusGenerator
from training.evaluation.memorization import (
    answer_log_likelihood,
    format_accuracy,
    recall_likelihood,
    zero_shot_format,
)
from training.evaluation.scores import answer_accuracy
from training.model import GPT, GPTConfig


class FixedLogits(torch.nn.Module):
    """A tiny 'model' whose last-position logits are a given table, row per probe."""

    def __init__(self, table: list[list[float]]):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table), requires_grad=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        return self.table[idx[:, 0]][:, None, :].expand(B, T, -1)


def test_log_likelihood_and_rank_by_hand():
    """Vocabulary 5, answers {2, 3, 4}. Probe 0: z = (0, 0, 2, 0, 0), target 2:
    log p_A = 2 - log(e^2 + 2), log p = 2 - log(e^2 + 4), rank 1. Probe 1: z = (1, 0, 1, 3, 2),
    target 4: log p_A = 2 - log(e + e^3 + e^2), rank 2 (only 3 beats it). Probe 2: a tie
    z_2 = z_4 = 1 > z_3 = 0, target 4: rank 1 (ties favour the target)."""
    model = FixedLogits([[0, 0, 2, 0, 0], [1, 0, 1, 3, 2], [0, 0, 1, 0, 1]])
    inputs = torch.tensor([[0, 1], [1, 1], [2, 1]])
    table = answer_log_likelihood(model, inputs, torch.tensor([2, 4, 4]), np.array([2, 3, 4]))
    e = math.e
    assert table.logprob.tolist() == pytest.approx(
        [2 - math.log(e**2 + 2), 2 - math.log(e + e**3 + e**2), 1 - math.log(2 * e + 1)]
    )
    assert table.logprob_vocab[0] == pytest.approx(2 - math.log(e**2 + 4))
    assert table["rank"].tolist() == [1, 2, 1]
    assert table.correct.tolist() == [True, False, True]


def test_a_target_outside_the_answers_is_named():
    model = FixedLogits([[0, 0, 2, 0, 0]])
    with pytest.raises(ValueError, match="target token 1 \\(probe 0\\)"):
        answer_log_likelihood(model, torch.tensor([[0]]), torch.tensor([1]), np.array([2, 3]))


DATA = TINY_DATA


def test_likelihood_recall_on_a_tiny_model_agrees_with_exact_match():
    """On a random tiny GPT: accuracy from ranks equals evaluate.answer_accuracy (when no
    ties), mean log p_A equals the hand computation from the model's logits, and a model
    with constant logits sits exactly at chance."""
    gen = CorpusGenerator(DATA, seq_len=9)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=gen.vocab.size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    out = recall_likelihood(model, gen, "facts")
    inputs, targets = gen.recall_probes("facts")
    values = gen.vocab.ids("values")
    assert out["accuracy"] == pytest.approx(answer_accuracy(model, inputs, targets, values))
    with torch.no_grad():
        z = model(inputs)[:, -1, :].double()
    by_hand = np.mean(
        [float(z[i, y] - torch.logsumexp(z[i, values], 0)) for i, y in enumerate(targets)]
    )
    assert out["logprob"] == pytest.approx(by_hand, rel=1e-12)
    assert out["n_items"] == 20 and out["n_answers"] == 5
    with torch.no_grad():
        model.head.weight.zero_()  # tied: every logit 0
    flat = recall_likelihood(model, gen, "facts")
    assert flat["logprob"] == pytest.approx(flat["chance_logprob"]) == pytest.approx(-math.log(5))
    assert flat["rank"] == 1.0  # all tied: every target counts as the model's answer


def test_format_accuracy_counts_any_answer_of_the_family():
    model = FixedLogits([[0, 0, 2, 0, 0], [0, 5, 1, 3, 2]])
    inputs = torch.tensor([[0, 1], [1, 1]])
    assert format_accuracy(model, inputs, np.array([2, 3, 4])) == 0.5
    assert format_accuracy(model, inputs, np.array([1, 2])) == 1.0


def test_zero_shot_format_pools_both_parts_and_its_chance():
    gen = CorpusGenerator(DATA, seq_len=9)
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=gen.vocab.size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    out = zero_shot_format(model, gen, n=30, seed=3)
    assert out["n_items"] == 30 + 20
    assert out["accuracy"] == pytest.approx((30 * out["icl_query"] + 20 * out["fact_key"]) / 50)
    assert out["chance"] == pytest.approx((30 * 4 + 20 * 5) / gen.vocab.size / 50)
