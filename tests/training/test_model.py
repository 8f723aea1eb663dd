"""The model's two architecture options equal their definitions: RoPE rotates each channel
pair of q and k by t * theta_j (Su et al. 2021), smeared keys mix k_t with k_{t-1} per head
(Olsson et al. 2022); and the model keeps them through dtype casts and bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch

from training.model import GPT, GPTConfig, apply_rope, lm_loss, rope_tables, smear_keys

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

B, T, H, D = 3, 11, 2, 8  # batch, positions, heads, head width


def test_rope_turns_each_pair_by_position_times_its_frequency():
    x = torch.randn(B, T, H, D, generator=torch.Generator().manual_seed(0))
    rotated = apply_rope(x, rope_tables(T, H, D, base=100.0))
    for t in range(T):
        for j in range(D // 2):
            angle = t * 100.0 ** (-2 * j / D)
            x1, x2 = x[:, t, :, 2 * j], x[:, t, :, 2 * j + 1]
            expected_1 = x1 * math.cos(angle) - x2 * math.sin(angle)
            expected_2 = x1 * math.sin(angle) + x2 * math.cos(angle)
            close = {"atol": 1e-5, "rtol": 1e-5}
            torch.testing.assert_close(rotated[:, t, :, 2 * j], expected_1, **close)
            torch.testing.assert_close(rotated[:, t, :, 2 * j + 1], expected_2, **close)


def test_rope_scores_depend_only_on_the_offset():
    """q at position t and k at position t + d score the same for every t."""
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, H, D, generator=gen), torch.randn(1, 1, H, D, generator=gen)
    table = rope_tables(T, H, D, base=10000.0)
    q_all, k_all = apply_rope(q.expand(1, T, H, D), table), apply_rope(k.expand(1, T, H, D), table)
    for offset in (0, 1, 4):
        scores = [(q_all[0, t] * k_all[0, t + offset]).sum(-1) for t in range(T - offset)]
        for score in scores[1:]:
            torch.testing.assert_close(score, scores[0], atol=1e-5, rtol=1e-5)


def test_rope_on_a_shorter_sequence_uses_the_first_rows_of_the_table():
    x = torch.randn(B, 5, H, D, generator=torch.Generator().manual_seed(2))
    table = rope_tables(T, H, D, base=10000.0)
    torch.testing.assert_close(apply_rope(x, table), apply_rope(x, table[:5]), atol=0, rtol=0)


def test_smeared_keys_equal_their_definition_and_gradient():
    gen = torch.Generator().manual_seed(3)
    k = torch.randn(B, T, H, D, generator=gen, dtype=torch.float64, requires_grad=True)
    logit = torch.tensor([-1.3, 0.8], dtype=torch.float64).view(H, 1, 1).requires_grad_()
    smeared = smear_keys(k, logit)
    s = torch.sigmoid(logit).view(1, H, 1)
    expected = torch.stack(
        [s * k[:, t] + (1 - s) * (k[:, t - 1] if t > 0 else 0) for t in range(T)], dim=1
    )  # k_{-1} = 0: the first key is s k_0
    torch.testing.assert_close(smeared, expected, atol=1e-12, rtol=1e-12)
    weights = torch.randn(B, T, H, D, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((smeared * weights).sum(), (k, logit))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (k, logit))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def small_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=31, block_size=16, n_layer=2, n_head=2, n_embd=16, rope=True)
    model = GPT(GPTConfig(**(cfg.__dict__ | {"smeared_keys": True})))
    with torch.no_grad():  # off the symmetric start: smear logits != 0
        for block in model.blocks:
            block.attn.smear.copy_(torch.tensor([-1.3, 0.8]).view(2, 1, 1))
    return model


def test_rope_survives_a_cast_of_the_whole_model():
    """Module.to(float64) casts a complex buffer to a real one by dropping its imaginary part;
    the rotation table is held as real pairs, so a cast model computes the same function."""
    model = small_model()
    tokens = torch.randint(0, 31, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits_32 = model(tokens)
        logits_64 = model.to(torch.float64)(tokens)
    assert logits_64.dtype == torch.float64
    torch.testing.assert_close(logits_64.float(), logits_32, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_runs_both_options_forward_and_backward():
    model = small_model()
    tokens = torch.randint(0, 31, (4, 17), generator=torch.Generator().manual_seed(5))
    loss_32 = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_16 = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
    loss_16.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.blocks[0].attn.smear.grad.abs().sum() > 0
    assert abs(loss_16.item() - loss_32.item()) < 0.02 * loss_32.item()
