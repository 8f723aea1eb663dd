"""NAP: noise injected along the principal directions of the prompt-level gradient covariance.

Seed 002, DESIGN §3. The injected gradient noise has covariance

    Lambda_t = P_t (U Sigma_r U^T + lambda I) P_t

with P_t Adam's diagonal preconditioner, and U (D x r, orthonormal), Sigma_r
(r x r, diagonal) a rank-r streaming sketch of the prompt-level gradient
covariance C (per-example, i.e. per prompt sequence, covariance of the loss
gradient). The sketch is fed every step with the step's centred micro-batch
mean gradients scaled by sqrt(m) (each a mean of m prompts, covariance C / m),
so it needs no backward pass beyond those the step makes. lambda = lambda_rel *
Tr(Sigma_r) / D puts a registered share of isotropic noise beside the low-rank part.

Oja's subspace rule with a forgetting factor (Oja 1982; the block form of
Balsubramani et al. 2013): with X the (n, D) samples of a step,

    Y = beta U Sigma_r + (1 - beta) X^T X U / n,   U, _ = qr(Y),   Sigma_r = diag(U^T Y)

i.e. one power-iteration step on the exponentially weighted covariance
beta C_old + (1 - beta) X^T X / n restricted to the tracked subspace.

Usage in any training loop (with a ``gradnoise.control.controller`` scale ``s``)::

    nap = NAPNoise(model.parameters(), rank=8, lambda_rel=0.1, n_micro=K,
                   micro_batch_size=m, seed=run_seed)
    ...  # each micro-batch: backward, then nap.after_micro_backward()
    unit = nap.unit_covariance(precond)   # diag(Lambda_t) at s = 1; updates the sketch
    cov_diag = nap.inject(s)              # adds xi ~ N(0, s Lambda_t) to .grad
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from gradnoise.injection.gradient_noise import MicroGradients


class OjaSketch:
    """Rank-r streaming estimate (U, Sigma_r) of the covariance of zero-mean samples.

    Parameters
    ----------
    dim : D, the dimension of the samples.
    rank : r, directions tracked.
    beta : forgetting factor of the weighted covariance (0 keeps only the latest step).
    seed : seed of the random start of U.
    """

    def __init__(self, dim: int, rank: int, beta: float = 0.9, seed: int = 0, device=None):
        if not 1 <= rank <= dim:
            raise ValueError(f"OjaSketch: rank must be in [1, {dim}], got {rank}")
        if not 0 <= beta < 1:
            raise ValueError(f"OjaSketch: beta must be in [0, 1), got {beta}")
        gen = torch.Generator().manual_seed(seed)
        start = torch.randn(dim, rank, generator=gen)
        self.basis = torch.linalg.qr(start)[0].to(device)  # U, (D, r)
        self.eigenvalues = torch.zeros(rank, device=device)  # diag(Sigma_r)
        self.beta, self.updates = beta, 0

    def update(self, samples: torch.Tensor) -> None:
        """One Oja step with the (n, D) zero-mean ``samples`` of E[x x^T] = C."""
        projected = samples @ self.basis  # (n, r)
        fresh = samples.T @ projected / samples.shape[0]  # C_hat U, (D, r)
        beta = self.beta if self.updates else 0.0
        mixed = beta * self.basis * self.eigenvalues + (1 - beta) * fresh
        self.basis, _ = torch.linalg.qr(mixed)
        self.eigenvalues = (self.basis * mixed).sum(0).clamp(min=0)
        self.updates += 1

    def state_dict(self) -> dict:
        return {
            "basis": self.basis.cpu().clone(),
            "eigenvalues": self.eigenvalues.cpu().clone(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.basis.device
        self.basis = state["basis"].to(device)
        self.eigenvalues = state["eigenvalues"].to(device)
        self.updates = int(state["updates"])


class NAPNoise:
    """Gradient noise xi ~ N(0, s P (U Sigma_r U^T + lambda I) P), the sketch fed every step.

    Parameters
    ----------
    params : the parameters whose ``.grad`` receives the noise.
    rank : r of the sketch.
    lambda_rel : lambda / (Tr(Sigma_r) / D), the isotropic share.
    n_micro, micro_batch_size : K and m of a step on this process.
    seed : the run seed (the sketch's start and the noise stream).
    beta : the sketch's forgetting factor.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        *,
        rank: int,
        lambda_rel: float,
        n_micro: int,
        micro_batch_size: int,
        seed: int,
        beta: float = 0.9,
    ):
        if n_micro < 2:
            raise ValueError(f"NAP needs n_micro >= 2 micro-batches per step, got {n_micro}")
        if lambda_rel < 0:
            raise ValueError(f"NAP lambda_rel must be >= 0, got {lambda_rel}")
        self.params = [p for p in params if p.requires_grad]
        self.sizes = [p.numel() for p in self.params]
        device = self.params[0].device
        self.micro = MicroGradients(self.params, n_micro)
        self.micro_batch_size, self.lambda_rel = micro_batch_size, lambda_rel
        self.sketch = OjaSketch(sum(self.sizes), rank, beta, seed, device)
        self.generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 7_927)
        self._precond: torch.Tensor | None = None
        self._unit: torch.Tensor | None = None

    def after_micro_backward(self) -> None:
        self.micro.after_micro_backward()

    @property
    def isotropic(self) -> float:
        """lambda = lambda_rel Tr(Sigma_r) / D."""
        return self.lambda_rel * float(self.sketch.eigenvalues.sum()) / sum(self.sizes)

    def unit_covariance(self, precond: torch.Tensor) -> torch.Tensor:
        """Feed the sketch this step's prompt-level samples; return diag(Lambda_t) (s = 1).

        diag(Lambda_t)_i = P_i^2 (sum_k sigma_k U_ik^2 + lambda).
        """
        samples = self.micro.centred() * math.sqrt(self.micro_batch_size)
        self.sketch.update(samples * math.sqrt(samples.shape[0] / (samples.shape[0] - 1)))
        low_rank = (self.sketch.basis**2) @ self.sketch.eigenvalues
        self._precond = precond.float()
        self._unit = self._precond**2 * (low_rank + self.isotropic)
        return self._unit

    def inject(self, scale: float) -> torch.Tensor:
        """Add xi = sqrt(s) P (U Sigma_r^(1/2) z_r + lambda^(1/2) z_D) to ``.grad``; diag(Cov)."""
        if self._unit is None:
            raise RuntimeError("NAPNoise.inject: call unit_covariance(precond) first this step")
        if scale < 0 or not math.isfinite(scale):
            raise ValueError(f"NAPNoise: scale must be finite and >= 0, got {scale}")
        sketch, device = self.sketch, self._unit.device
        z_r = torch.randn(sketch.eigenvalues.numel(), generator=self.generator, device=device)
        z_d = torch.randn(self._unit.numel(), generator=self.generator, device=device)
        direction = (
            sketch.basis @ (sketch.eigenvalues.sqrt() * z_r) + math.sqrt(self.isotropic) * z_d
        )
        noise = math.sqrt(scale) * self._precond * direction
        for p, piece in zip(self.params, noise.split(self.sizes), strict=True):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(piece.view_as(p.grad).to(p.grad.dtype))
        cov_diag = scale * self._unit
        self._unit = self._precond = None
        return cov_diag

    def state_dict(self) -> dict:
        return {"sketch": self.sketch.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sketch.load_state_dict(state["sketch"])
        self.generator.set_state(state["generator"])
