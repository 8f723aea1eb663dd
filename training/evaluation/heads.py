"""Induction and copying heads: attention patterns and per-head scores (Olsson et al. 2022).

``training.model`` computes attention with ``F.scaled_dot_product_attention``, which
never materializes the pattern. ``attention_pattern`` recomputes it from the
module's own q and k, with the smeared keys and the rotary positions exactly as
``CausalSelfAttention.forward`` applies them; ``attention_output`` turns a pattern
back into the module's output, and the tests check that this equals the module's
real output, so the patterns scored here are the ones the model uses.

Scores, per layer and head, on repeated random sequences BOS, x_1..x_L, x_1..x_L:

- prefix matching: the attention a token pays to the token right after its earlier
  occurrence (Olsson et al. 2022, "prefix matching"); 1 for a perfect induction head;
- copying: how much the head's direct path to the logits raises the logit of the
  tokens it attends to above what it gives them elsewhere (Olsson et al. 2022,
  "copying"), by direct logit attribution with the final LayerNorm's scale frozen
  (Elhage et al. 2021). Only the direct path counts: what a layer-0 head writes and
  a later layer reads is not credited to it.

Olsson et al. draw the repeated tokens from the whole vocabulary; on this
synthetic corpus ``training.evaluation.probes`` draws them from the copy family, the
tokens the model saw repeated in training (segments of 4..copy_len tokens).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from training.model import GPT, CausalSelfAttention


def _qkv(attn: CausalSelfAttention, x: torch.Tensor):
    """q, k, v of ``attn`` for its input ``x`` (B, T, C), each (B, n_head, T, head_dim),
    with smeared keys and RoPE applied in the module's order."""
    return attn.heads(x)


def attention_pattern(attn: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The attention pattern A (B, n_head, T, T) of ``attn`` on its input ``x`` (B, T, C).

    A[b, h, t, s] = softmax_s(q_t . k_s / sqrt(d_head)) over s <= t (causal), the
    weights ``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` uses; rows
    sum to 1.
    """
    q, k, _ = _qkv(attn, x)
    T = x.shape[1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, n_head, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


def head_contributions(
    attn: CausalSelfAttention, x: torch.Tensor, pattern: torch.Tensor
) -> torch.Tensor:
    """Each head's write into the residual stream, (B, n_head, T, C), without the proj bias.

    o_h = (A_h V_h) W_O[:, h]^T, where W_O[:, h] is the head's slice of the output
    projection; sum_h o_h + bias is the module's output.
    """
    _, _, v = _qkv(attn, x)
    y = pattern @ v  # (B, n_head, T, head_dim)
    H, d = attn.n_head, v.shape[-1]
    w_o = attn.proj.weight.view(-1, H, d).transpose(0, 1)  # (n_head, C, head_dim)
    return torch.einsum("bhtd,hcd->bhtc", y, w_o)


def attention_output(
    attn: CausalSelfAttention, x: torch.Tensor, pattern: torch.Tensor
) -> torch.Tensor:
    """The module's output (B, T, C) rebuilt from a pattern: sum_h o_h + proj bias."""
    out = head_contributions(attn, x, pattern).sum(dim=1)
    return out + attn.proj.bias if attn.proj.bias is not None else out


@torch.no_grad()
def record_layers(model: GPT, idx: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run ``model`` on ``idx`` and keep each attention module's input and ln_f's input.

    Returns (inputs per layer, each (B, T, C); final residual stream (B, T, C)),
    captured by forward pre-hooks, so they are the tensors of the real forward pass.
    """
    inputs: list[torch.Tensor] = []
    final: list[torch.Tensor] = []
    hooks = [
        b.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for b in model.blocks
    ]
    hooks.append(model.ln_f.register_forward_pre_hook(lambda m, a: final.append(a[0])))
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return inputs, final[0]


def direct_logits(model: GPT, contribution: torch.Tensor, resid_final: torch.Tensor):
    """Direct logit attribution (B, n_head, T, vocab) of residual writes ``contribution``.

    ln_f(x) = gamma (x - mean x) / sigma(x) + beta is linear in x once sigma(x) is
    frozen at the final residual stream's value, so a write o contributes
    W_U (gamma (o - mean o) / sigma) to the logits (Elhage et al. 2021).
    """
    ln = model.ln_f
    sigma = (resid_final.var(dim=-1, unbiased=False, keepdim=True) + ln.eps).sqrt()  # (B, T, 1)
    centred = contribution - contribution.mean(dim=-1, keepdim=True)
    return (centred * ln.weight / sigma[:, None]) @ model.head.weight.T


def earlier_successor_mask(tokens: torch.Tensor) -> torch.Tensor:
    """M[b, t, s] = 1 when s - 1 < t and tokens[s - 1] == tokens[t] (s >= 1): position s is
    the token after an earlier occurrence of token t, the target of an induction head."""
    prev = F.pad(tokens, (1, 0), value=-1)[:, :-1]  # prev[b, s] = tokens[b, s - 1]
    T = tokens.shape[1]
    same = prev[:, None, :] == tokens[:, :, None]  # (B, T, T): [b, t, s]
    causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    return same & causal


def prefix_matching_scores(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Prefix-matching score of each head, (n_head,).

    score_h = mean over (b, t) with an earlier occurrence of tokens[b, t] of
    sum_s A[b, h, t, s] M[b, t, s] (``earlier_successor_mask``): the attention
    paid to the successors of earlier copies (Olsson et al. 2022). On BOS, x, x
    with distinct x_i it is the mean of A[t, t - L + 1] over the second copy.
    In [0, 1]; a uniform causal head scores about mean_t 1 / (t + 1).
    """
    mask = earlier_successor_mask(tokens).to(pattern.dtype)  # (B, T, T)
    on_target = (pattern * mask[:, None]).sum(dim=-1)  # (B, n_head, T)
    has = mask.sum(dim=-1) > 0  # (B, T)
    if not has.any():
        raise ValueError("no token has an earlier occurrence: prefix matching is undefined")
    return on_target.permute(1, 0, 2)[:, has].mean(dim=-1)


def copying_scores(
    pattern: torch.Tensor, head_logits: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """Copying score of each head, (n_head,), in logit units (nats).

    c_h = mean_{(b, t) in P} sum_s A[b, h, t, s] (D[b, h, t, x_bs] - Dbar[h, x_bs]),
    with P the positions whose token has an earlier occurrence, D the head's direct
    logits (``direct_logits``) and Dbar[h, v] = mean_{(b, t) in P} D[b, h, t, v] the
    head's average logit for token v: how far the head raises the logits of the
    tokens it attends to above what it gives those tokens elsewhere. Positive for a
    copying head (Olsson et al. 2022); exactly 0 for a head whose logits do not
    depend on what it attends to (including a fixed unigram bias).
    """
    has = earlier_successor_mask(tokens).sum(dim=-1) > 0  # (B, T)
    B, H, T, V = head_logits.shape
    mean_logit = head_logits.permute(1, 0, 2, 3)[:, has].mean(dim=1)  # (H, V): Dbar
    index = tokens[:, None, None, :].expand(B, H, T, T)
    attended = head_logits.gather(-1, index)  # (B, H, T, s): D[b, h, t, x_s]
    baseline = mean_logit[None, :, None, :].expand(B, H, T, V).gather(-1, index)
    per_position = (pattern * (attended - baseline)).sum(dim=-1)  # (B, H, T)
    return per_position.permute(1, 0, 2)[:, has].mean(dim=-1)


def repeated_random_sequences(
    n: int, segment_len: int, token_pool: np.ndarray, bos: int, seed: int
) -> torch.Tensor:
    """``n`` sequences BOS, x_1..x_L, x_1..x_L, (n, 1 + 2L); each segment drawn without
    replacement from ``token_pool``, so each token's earlier occurrence is unique."""
    tokens = np.asarray(token_pool)
    if segment_len > len(tokens):
        raise ValueError(
            f"segment_len {segment_len} exceeds the {len(tokens)} tokens of the pool; "
            "a segment is drawn without replacement"
        )
    rng = np.random.default_rng(seed)
    seg = np.stack([rng.choice(tokens, size=segment_len, replace=False) for _ in range(n)])
    return torch.tensor(np.concatenate([np.full((n, 1), bos), seg, seg], axis=1))


@torch.no_grad()
def head_scores(model: GPT, tokens: torch.Tensor) -> pd.DataFrame:
    """Prefix-matching and copying score of every head of ``model`` on ``tokens`` (B, T).

    Returns
    -------
    DataFrame
        One row per (measure, layer, head): ``measure`` "prefix_matching" (attention
        share, in [0, 1]) or "copying" (nats, see ``copying_scores``); ``layer``
        (0-based block), ``head`` (0-based), ``value``.
    """
    model.eval()
    tokens = tokens.to(next(model.parameters()).device)
    inputs, resid_final = record_layers(model, tokens)
    rows = []
    for layer, (block, x) in enumerate(zip(model.blocks, inputs, strict=True)):
        pattern = attention_pattern(block.attn, x)
        logits = direct_logits(model, head_contributions(block.attn, x, pattern), resid_final)
        prefix = prefix_matching_scores(pattern, tokens)
        copying = copying_scores(pattern, logits, tokens)
        for head in range(pattern.shape[1]):
            rows.append(("prefix_matching", layer, head, float(prefix[head])))
            rows.append(("copying", layer, head, float(copying[head])))
    return pd.DataFrame(rows, columns=["measure", "layer", "head", "value"])


def induction_head_score(scores: pd.DataFrame) -> dict[str, float]:
    """The run's induction-head score: the largest prefix-matching score over heads, with
    that head's layer, index and copying score (``head_scores`` table in)."""
    prefix = scores[scores.measure == "prefix_matching"]
    best = prefix.loc[prefix.value.idxmax()]
    copying = scores[
        (scores.measure == "copying")
        & (scores.layer == best["layer"])
        & (scores["head"] == best["head"])
    ]
    return {
        "prefix_matching_max": float(best.value),
        "layer": int(best["layer"]),
        "head": int(best["head"]),
        "copying_of_that_head": float(copying.value.iloc[0]),
    }
