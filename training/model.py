"""A small decoder-only transformer, read top to bottom.

Pre-LayerNorm GPT blocks (Radford et al. 2019) with rotary position embeddings
(RoPE, Su et al. 2021; learned absolute positions when ``rope`` is off) and tied
input/output embeddings; the architecture is fixed across every condition of a
scale (DESIGN §3), so nothing here varies with the noise condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int  # number of token ids, from the synthetic corpus
    block_size: int = 64  # maximum context length in tokens
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads per block
    n_embd: int = 64  # residual stream width
    dropout: float = 0.0  # fixed across conditions; 0 keeps the noise purely from sampling
    rope: bool = True  # rotary positions in attention; False: learned absolute positions
    rope_base: float = 10000.0  # RoPE frequency base (Su et al. 2021)
    smeared_keys: bool = False  # each key mixes in the previous position's key (Olsson et al. 2022)


def rope_tables(T: int, n_head: int, head_dim: int, base: float) -> torch.Tensor:
    """Unit complex numbers e^{i t theta_j}, (T, n_head, head_dim // 2): the turn of pair j at t.

    Position t, channel pair j turns by t * theta_j, theta_j = base^(-2j/d) (Su et al. 2021).
    Repeated over heads, so that the product with the keys needs no broadcast in its
    inner dimensions (a broadcast complex product is several times slower on CPUs).
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)[:, None].repeat(1, n_head, 1)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate each (even, odd) channel pair of ``x`` (B, T, n_head, head_dim) by its angle.

    The pair (x1, x2) read as x1 + i x2 times e^{i t theta} is (x1 cos - x2 sin) +
    i (x1 sin + x2 cos): one complex product per pair, in fp32 (other dtypes round-trip).
    Written with as few operations as the product allows: at the CPU scale each operation's
    fixed cost, forward and backward, outweighs its arithmetic (bench/throughput.py).
    """
    if x.dtype != torch.float32:
        return apply_rope(x.float(), rotation).to(x.dtype)
    if rotation.shape[0] != x.shape[1]:
        rotation = rotation[: x.shape[1]]
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # (B, T, n_head, d/2)
    return torch.view_as_real(pairs * rotation).flatten(-2)


def smear_keys(k: torch.Tensor, smear: torch.Tensor) -> torch.Tensor:
    """k_t <- s k_t + (1 - s) k_{t-1} per head, s = sigmoid(smear), k_{-1} = 0.

    ``k`` (B, T, n_head, head_dim); ``smear`` (n_head, 1, 1) logits.
    """
    # (B, T, n_head, head_dim), zero at t = 0; cat, not pad: pad fills its whole output first
    k_prev = torch.cat([k.new_zeros(k.shape[0], 1, *k.shape[2:]), k[:, :-1]], dim=1)
    mix = torch.sigmoid(smear).view(-1, 1).expand(-1, k.shape[-1]).contiguous()  # (n_head, d)
    return torch.lerp(k_prev, k, mix.to(k.dtype))  # bf16 keys under autocast: a bf16 weight


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = cfg.n_head
        # No bias: a key bias adds the same score to every position, so softmax ignores it,
        # its gradient is exactly zero and Adam's preconditioner 1/(sqrt(v)+eps) would blow up.
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout
        self.rope = cfg.rope
        if cfg.rope:
            head_dim = cfg.n_embd // cfg.n_head
            rotation = rope_tables(cfg.block_size, cfg.n_head, head_dim, cfg.rope_base)
            # Held as real (cos, sin) pairs: Module.to(dtype) would cast a complex buffer to a
            # real dtype by dropping its imaginary part, silently turning RoPE into a scaling.
            rotation = torch.view_as_real(rotation)  # (T, n_head, d/2, 2)
            self.register_buffer("rope_rotation", rotation, persistent=False)
        # One learned mixing logit per head; sigmoid(0) = 1/2 of each key at initialization.
        self.smear = nn.Parameter(torch.zeros(cfg.n_head, 1, 1)) if cfg.smeared_keys else None

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of input ``x`` (B, T, C), each (B, n_head, T, head_dim), keys smeared and
        queries and keys rotated as the attention uses them."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)
        if self.smear is not None:
            # Why: a smeared key carries its predecessor's token, so one attention layer can
            # match "the token after an earlier copy of mine" (an induction head), which
            # otherwise needs a previous-token head below it (Olsson et al. 2022, §4).
            k = smear_keys(k, self.smear)
        if self.rope:
            # Why: q.k then depends only on the offset between positions (Su et al. 2021), so a
            # previous-token head, the first half of an induction circuit, is one fixed rotation.
            rotation = torch.view_as_complex(self.rope_rotation.float())  # (T, n_head, d/2)
            q, k = apply_rope(q, rotation), apply_rope(k, rotation)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.heads(x)  # (B, n_head, T, head_dim)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        # Positions enter through RoPE in every attention layer, or else through this table.
        self.pos_emb = None if cfg.rope else nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): one embedding matrix for input and output.
        self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections keeps the residual stream's
        # variance independent of depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits, (B, T, vocab_size), for token ids ``idx`` of shape (B, T)."""
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        x = self.tok_emb(idx)  # (B, T, n_embd)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats/token; ``targets`` (B, T) with -1 ignored."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
    )
