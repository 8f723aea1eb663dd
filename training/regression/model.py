"""The study's transformer with a linear read-in and read-out, for in-context regression.

Garg et al. (2022) put a linear map from the (d + 1)-dimensional prompt vectors into the
residual stream and a linear map from it to one number around an unchanged GPT-2; here
the same ``training.model.Block`` stack and final LayerNorm as the language model, so
the architecture across the two task families differs only in the read-in and read-out.
There is no token embedding or vocabulary head: an unused parameter would have zero
gradient and Adam's preconditioner 1/(sqrt(v)+eps) would blow up on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from training.model import GPT, Block, GPTConfig


@dataclass
class RegressionConfig(GPTConfig):
    vocab_size: int = 0  # no vocabulary: inputs are vectors
    n_dims: int = 1  # d, the dimension of x; prompt vectors have d + 1 channels


class RegressionGPT(nn.Module):
    def __init__(self, cfg: RegressionConfig):
        super().__init__()
        self.cfg = cfg
        self.read_in = nn.Linear(cfg.n_dims + 1, cfg.n_embd)
        self.pos_emb = None if cfg.rope else nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.read_out = nn.Linear(cfg.n_embd, 1)
        self.apply(GPT._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled residual init, as in GPT
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Read-out (B, T, 1) for prompt vectors ``tokens`` (B, T, d + 1)."""
        T = tokens.shape[1]
        if T > self.cfg.block_size:
            raise ValueError(f"prompt length {T} exceeds block_size {self.cfg.block_size}")
        x = self.read_in(tokens)  # (B, T, n_embd)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.read_out(self.ln_f(x))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
