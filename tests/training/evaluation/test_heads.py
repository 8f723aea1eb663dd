"""Attention patterns recomputed from q and k are the module's real ones, and the head
scores equal their definitions on hand-built patterns and logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.evaluation.heads import (
    attention_output,
    attention_pattern,
    copying_scores,
    direct_logits,
    earlier_successor_mask,
    head_contributions,
    head_scores,
    induction_head_score,
    prefix_matching_scores,
    record_layers,
    repeated_random_sequences,
)
from training.model import GPT, GPTConfig, lm_loss

L = 5  # segment length of the hand-built repeated sequences


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_model(rope: bool, smeared_keys: bool, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(
            vocab_size=23,
            block_size=16,
            n_layer=2,
            n_head=2,
            n_embd=16,
            rope=rope,
            smeared_keys=smeared_keys,
        )
    )
    with torch.no_grad():  # move off the symmetric initialization: smear logits != 0, big q/k
        for block in model.blocks:
            block.attn.qkv.weight.mul_(20)
            if block.attn.smear is not None:
                block.attn.smear.copy_(torch.tensor([-1.3, 0.8]).view(2, 1, 1))
            block.attn.proj.bias.normal_()
    return model.eval()


@pytest.mark.parametrize("rope", [True, False])
@pytest.mark.parametrize("smeared_keys", [True, False])
def test_recomputed_attention_reproduces_the_module_output(rope, smeared_keys):
    """proj(A V) from the recomputed pattern equals the module's own output in the real
    forward pass (inputs captured by hooks), so the patterns are the ones the model uses."""
    model = random_model(rope, smeared_keys)
    idx = torch.randint(1, 23, (3, 16), generator=torch.Generator().manual_seed(1))
    inputs, resid_final = record_layers(model, idx)
    with torch.no_grad():
        for block, x in zip(model.blocks, inputs, strict=True):
            pattern = attention_pattern(block.attn, x)
            torch.testing.assert_close(attention_output(block.attn, x, pattern), block.attn(x))
            assert torch.allclose(pattern.sum(-1), torch.ones(3, 2, 16))
            assert (pattern.triu(diagonal=1) == 0).all()
            assert pattern.std() > 0.05  # far from uniform: the check above has teeth
        # the captured final residual stream gives the model's logits (direct attribution + beta)
        logits = direct_logits(model, resid_final[:, None], resid_final)[:, 0]
        logits = logits + model.ln_f.bias @ model.head.weight.T
        torch.testing.assert_close(logits, model(idx))


def test_head_contributions_sum_to_the_output_without_bias():
    model = random_model(rope=True, smeared_keys=True)
    idx = torch.randint(1, 23, (2, 16), generator=torch.Generator().manual_seed(2))
    inputs, _ = record_layers(model, idx)
    attn = model.blocks[1].attn
    with torch.no_grad():
        pattern = attention_pattern(attn, inputs[1])
        parts = head_contributions(attn, inputs[1], pattern)
        torch.testing.assert_close(parts.sum(1) + attn.proj.bias, attn(inputs[1]))


def repeated_tokens(batch: int = 4) -> torch.Tensor:
    return repeated_random_sequences(batch, L, np.arange(1, 30), bos=0, seed=3)


def induction_pattern(tokens: torch.Tensor, n_head: int = 1) -> torch.Tensor:
    """A perfect induction head: in the second copy, token t attends to t - L + 1; elsewhere BOS."""
    B, T = tokens.shape
    pattern = torch.zeros(B, n_head, T, T)
    pattern[..., 0] = 1.0
    for t in range(L + 1, 2 * L + 1):
        pattern[..., t, :] = 0.0
        pattern[..., t, t - L + 1] = 1.0
    return pattern


def uniform_pattern(B: int, T: int) -> torch.Tensor:
    causal = torch.ones(T, T).tril()
    return (causal / causal.sum(-1, keepdim=True)).expand(B, 1, T, T)


def test_repeated_sequences_repeat_distinct_tokens():
    tokens = repeated_tokens()
    assert tokens.shape == (4, 2 * L + 1) and (tokens[:, 0] == 0).all()
    assert torch.equal(tokens[:, 1 : L + 1], tokens[:, L + 1 :])
    assert all(len(set(row[1 : L + 1].tolist())) == L for row in tokens)
    with pytest.raises(ValueError, match="exceeds the 3 tokens of the pool"):
        repeated_random_sequences(1, 4, np.arange(1, 4), bos=0, seed=0)


def test_earlier_successor_mask_by_hand():
    tokens = torch.tensor([[0, 7, 8, 7, 8, 9]])
    mask = earlier_successor_mask(tokens)[0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[3, 2] = True  # the 7 at 3 follows-up the 7 at 1 -> position 2
    expected[4, 3] = True  # the 8 at 4 -> after the 8 at 2 -> position 3
    assert torch.equal(mask, expected)


def test_prefix_matching_is_one_for_an_induction_head_and_low_for_a_uniform_one():
    tokens = repeated_tokens()
    assert prefix_matching_scores(induction_pattern(tokens), tokens).item() == pytest.approx(1.0)
    uniform = prefix_matching_scores(uniform_pattern(4, 2 * L + 1), tokens).item()
    by_hand = np.mean([1 / (t + 1) for t in range(L + 1, 2 * L + 1)])
    assert uniform == pytest.approx(by_hand, rel=1e-6)
    assert uniform < 0.15


def test_copying_score_by_hand():
    """One sequence, so each segment token is attended once among the L positions P. A head
    whose direct logits put a on the token it attends to (0 elsewhere) has Dbar = a / L on
    the segment's tokens and scores a (1 - 1/L); a head whose logits ignore what it
    attends to scores 0."""
    tokens = repeated_tokens(batch=1)
    T, V, a = tokens.shape[1], 30, 2.5
    pattern = induction_pattern(tokens)
    copying = torch.zeros(1, 1, T, V)
    for t in range(L + 1, 2 * L + 1):
        copying[0, 0, t, tokens[0, t - L + 1]] = a
    assert copying_scores(pattern, copying, tokens).item() == pytest.approx(a * (1 - 1 / L))
    blind = torch.randn(1, 1, 1, V).expand(1, 1, T, V)  # the same logits whatever is attended
    assert copying_scores(pattern, blind, tokens).item() == pytest.approx(0.0, abs=1e-6)
    assert copying_scores(pattern, -copying, tokens).item() == pytest.approx(-a * (1 - 1 / L))


def test_head_scores_of_a_model_trained_to_copy_find_an_induction_head():
    """A 2-layer smeared-keys model trained briefly on repeated random sequences learns an
    induction head: its best prefix-matching score beats the uniform head's by far."""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, smeared_keys=True)
    )
    tokens = repeated_random_sequences(64, 7, np.arange(1, 40), bos=0, seed=1)
    untrained = induction_head_score(head_scores(model, tokens))["prefix_matching_max"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(80):
        seq = repeated_random_sequences(32, 7, np.arange(1, 40), bos=0, seed=step + 10)
        loss = lm_loss(model.train()(seq[:, :-1]), seq[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = head_scores(model, tokens)
    assert set(scores.columns) == {"measure", "layer", "head", "value"} and len(scores) == 8
    best = induction_head_score(scores)
    uniform = np.mean([1 / (t + 1) for t in range(8, 15)])
    assert untrained < 0.3
    assert best["prefix_matching_max"] > 0.8 > 5 * uniform
    assert best["copying_of_that_head"] > 0
