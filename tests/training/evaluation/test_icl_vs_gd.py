"""ICL against fine-tuning: order sensitivity and overlaps equal their definitions; the
batched fine-tuning equals plain torch.optim loops on one model copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tiny_data import TINY_DATA
from training.data.corpus import CorpusGenerator
from training.evaluation.icl_vs_gd import (
    copies_label_probs,
    cosine,
    finetune_copies,
    icl_prompts,
    icl_vs_gd,
    label_probs,
    order_sensitivity,
    order_spread,
    top_overlap,
)
from training.model import GPT, GPTConfig

LABELS = np.array([10, 11, 12])


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def label_frequency(demos: torch.Tensor, query: int) -> np.ndarray:
    """Permutation-invariant: the share of each label among the demonstrations."""
    counts = np.array([(demos[:, 1] == y).sum().item() for y in LABELS], dtype=float)
    return counts / counts.sum()


def recency(demos: torch.Tensor, query: int) -> np.ndarray:
    """Order-dependent: exponentially more weight on later demonstrations."""
    weights = 2.0 ** np.arange(len(demos))
    probs = np.array([weights[(demos[:, 1] == y).numpy()].sum() for y in LABELS])
    return probs / probs.sum()


DEMOS = torch.tensor([[1, 10], [2, 11], [3, 10], [4, 12], [5, 11]])


def test_order_sensitivity_is_zero_for_a_permutation_invariant_predictor():
    rng = np.random.default_rng(0)
    assert order_sensitivity(label_frequency, DEMOS, 1, 10, rng) == pytest.approx(0, abs=1e-15)


def test_order_sensitivity_is_positive_for_an_order_dependent_predictor():
    assert order_sensitivity(recency, DEMOS, 1, 10, np.random.default_rng(0)) > 0.05


def test_order_spread_by_hand():
    """Two orders: the sample std of (a, b) is |a - b| / sqrt(2), averaged over outputs."""
    probs = np.array([[[0.5, 0.5], [0.7, 0.3]], [[1.0, 0.0], [1.0, 0.0]]])
    assert order_spread(probs) == pytest.approx([0.2 / np.sqrt(2), 0.0])
    with pytest.raises(ValueError, match="orders >= 2"):
        order_spread(probs[:, :1])


def test_overlaps_by_hand():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert [top_overlap(p, q, k) for k in (1, 2, 3)] == [0.0, 0.5, 1.0]
    assert cosine(p, q) == pytest.approx(0.29 / 0.38)  # p.q = .10 + .09 + .10, |p|^2 = |q|^2
    assert cosine(p, 3 * p) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="top_k must be in 1..3"):
        top_overlap(p, q, 4)


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()


@pytest.mark.parametrize("optimizer", ["gd", "sgd", "adam"])
def test_batched_finetuning_equals_a_plain_loop(optimizer):
    """finetune_copies on two copies equals torch.optim.SGD / Adam run on each copy alone."""
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pairs = torch.tensor([[[3, 10], [4, 11], [5, 12]], [[6, 12], [3, 11], [7, 10]]])
    lr = 0.05 if optimizer == "adam" else 0.5
    tuned = finetune_copies(model, pairs, bos=0, optimizer=optimizer, steps=5, lr=lr)
    for c in range(2):
        copy = tiny_model()
        opt_class = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        opt = opt_class(copy.parameters(), lr=lr)
        x = torch.stack([torch.zeros(3, dtype=torch.long), pairs[c, :, 0]], dim=1)
        for t in range(5):
            rows = slice(t % 3, t % 3 + 1) if optimizer == "sgd" else slice(None)
            loss = F.cross_entropy(copy(x[rows])[:, -1], pairs[c, rows, 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for name, p in copy.named_parameters():
            torch.testing.assert_close(tuned[name][c], p.detach(), rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), f"{name} of the original model changed"


def test_full_batch_gd_ignores_the_order_and_sgd_does_not():
    model = tiny_model(1)
    pairs = torch.tensor([[3, 10], [4, 11], [5, 12], [6, 10]])
    orders = torch.stack([pairs, pairs[[3, 1, 0, 2]], pairs[[2, 3, 1, 0]]])
    queries = torch.tensor([3, 3, 3])
    spread = {}
    for optimizer in ("gd", "sgd"):
        tuned = finetune_copies(model, orders, bos=0, optimizer=optimizer, steps=6, lr=1.0)
        probs = copies_label_probs(model, tuned, queries, 0, LABELS)
        spread[optimizer] = order_spread(probs[None])[0]
    assert spread["gd"] < 1e-6 < 1e-3 < spread["sgd"]


DATA = TINY_DATA


def test_icl_vs_gd_reports_every_measure_in_range():
    """Every documented measure, one row each, within its range, over the requested
    episodes; fewer than two shots is refused."""
    gen = CorpusGenerator(DATA, seq_len=12)
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=gen.vocab.size, block_size=11, n_layer=1, n_head=1, n_embd=8))
    table = icl_vs_gd(model, gen, 3, 4, 10, steps=3, lr_gd=0.5, lr_adam=0.01, seed=9)
    expected = {"order_std_icl", "order_std_sgd", "accuracy_icl", "accuracy_gd", "accuracy_adam"}
    expected |= {f"overlap_{m}_{n}" for m in ("top", "cos") for n in ("gd", "adam", "icl")}
    assert set(table.measure) == expected and len(table) == len(expected)
    assert (table.n_items == 4).all()
    value = table.set_index("measure").value
    assert value[["order_std_icl", "order_std_sgd"]].between(0, 0.5).all()
    assert value.filter(like="overlap").between(0, 1 + 1e-12).all()
    assert value["order_std_sgd"] > value["order_std_icl"]  # one pair per step at lr 0.5
    with pytest.raises(ValueError, match="shots must be at least 2"):
        icl_vs_gd(model, gen, 1, 4, 10, steps=3, lr_gd=0.5, lr_adam=0.01, seed=9)


def test_batched_order_sensitivity_equals_the_definition_episode_by_episode():
    """icl_vs_gd's order_std_icl and order_std_sgd equal the mean over episodes of
    order_sensitivity applied to one-prompt predictors, with the same orders."""
    gen = CorpusGenerator(DATA, seq_len=12)
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=gen.vocab.size, block_size=11, n_layer=1, n_head=1, n_embd=8))
    labels, bos = gen.vocab.ids("labels"), gen.vocab.bos
    table = icl_vs_gd(model, gen, 4, 3, 10, steps=5, lr_gd=0.5, lr_adam=0.01, seed=4)
    value = table.set_index("measure").value

    def icl(demos: torch.Tensor, query: int) -> np.ndarray:
        return label_probs(model, icl_prompts(demos[None], torch.tensor([query]), bos), labels)[0]

    def sgd(demos: torch.Tensor, query: int) -> np.ndarray:
        tuned = finetune_copies(model, demos[None], bos, "sgd", 5, 0.5)
        return copies_label_probs(model, tuned, torch.tensor([query]), bos, labels)[0]

    inputs, _ = gen.icl_episodes(4, 3, seed=4)
    for name, predictor in (("icl", icl), ("sgd", sgd)):
        rng = np.random.default_rng(4)
        by_episode = [
            order_sensitivity(predictor, x[1:-1].view(4, 2), int(x[-1]), 10, rng) for x in inputs
        ]
        assert value[f"order_std_{name}"] == pytest.approx(np.mean(by_episode), rel=1e-5)
    assert value["order_std_icl"] > 0
