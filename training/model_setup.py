"""What a train job builds around its model: the optimizer and activation checkpointing.

``make_optimizer`` is AdamW with weight decay on matrices only, fused on CUDA;
``checkpoint_activations`` makes every block recompute its activations in the
backward pass (the 1.3B model). ``training.train`` and ``training.scale.preflight``
build a run's model the same way through these.
"""

from __future__ import annotations

import contextlib

import torch

from training.config import TrainConfig
from training.model import GPT


def make_optimizer(model: GPT, lr: float, train_cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (embeddings included), not on biases or norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": train_cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=(train_cfg.beta1, train_cfg.beta2),
        eps=train_cfg.adam_eps,
        fused=fused_adamw_available(model),
    )


def fused_adamw_available(model: torch.nn.Module) -> bool:
    """Whether AdamW's fused kernel (one launch for all parameters) applies: parameters on CUDA."""
    return all(p.is_cuda for p in model.parameters())


def checkpoint_activations(model: GPT) -> None:
    """Make every block recompute its activations in the backward pass (Chen et al. 2016).

    Memory for activations drops from O(layers) to O(1) blocks at the cost of a
    second forward pass per block; the function computed is unchanged, and so are
    the parameter names, the state dict and the gradients.
    """
    for block in model.blocks:
        forward = block.forward

        def recomputed(x: torch.Tensor, forward=forward) -> torch.Tensor:
            return torch.utils.checkpoint.checkpoint(
                forward, x, use_reentrant=False, context_fn=_same_attention_kernels
            )

        block.forward = recomputed


def _same_attention_kernels() -> tuple:
    """Recompute under the attention kernels of the forward pass (the curvature probes
    ask for the math kernel, whose saved tensors differ from the fused ones)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    flags = {
        SDPBackend.FLASH_ATTENTION: torch.backends.cuda.flash_sdp_enabled(),
        SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.mem_efficient_sdp_enabled(),
        SDPBackend.MATH: torch.backends.cuda.math_sdp_enabled(),
        SDPBackend.CUDNN_ATTENTION: torch.backends.cuda.cudnn_sdp_enabled(),
    }
    enabled = [b for b, on in flags.items() if on]

    class Recompute:  # re-enterable: a graph kept for several backward passes recomputes often
        def __enter__(self):
            self.context = sdpa_kernel(enabled)
            return self.context.__enter__()

        def __exit__(self, *exc):
            return self.context.__exit__(*exc)

    return contextlib.nullcontext(), Recompute()
