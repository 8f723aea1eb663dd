"""Noise injected into the averaged gradient, and SGLD-style update noise (DESIGN §3; issue 10).

Where: after the K micro-batch backward passes have accumulated the global-batch
mean gradient G_bar in ``.grad`` and before clipping and the optimizer step, so
the injected noise xi passes through clipping and Adam's moment updates exactly
as the sampling noise of a smaller batch would (DESIGN §3: "added to the
gradient before preconditioning"). The update sees G_bar + xi, with

    gaussian     xi = sqrt(s) d^(1/2) * z                       Cov = s diag(d)
    student_t    xi = sqrt(s) d^(1/2) * t sqrt((nu - 2) / nu)   Cov = s diag(d)
                 (t ~ t_nu independently per coordinate)
    anisotropic  xi = sqrt(s c) sum_j z_j (g_j - g_mean)
                 Cov = s c sum_j (g_j - g_mean)(g_j - g_mean)^T, c = m / ((n - 1) B)

with z standard normal, s >= 0 the controller's scale (``gradnoise.control.controller``),
d a diagonal the caller supplies (in the trainer: the P-NE logger's held
diag(C) / B, so s = 1 doubles the batch's own noise) and g_j the n = K micro-batch
mean gradients of this step. E[c sum_j (g_j - g_mean)^2] = diag(C) / B, so the
anisotropic form has the covariance structure of the small-batch noise itself
(random combinations of centred micro-batch gradients; seed 003 §4), the
Student-t form the second moment of the Gaussian one with heavier tails
(nu > 2 registered). ``inject`` returns the exact diagonal of Cov given this
step's d or g_j; ``NoiseLogger.add_injected`` adds it to the logged P-NE.

SGLD-style noise (Welling and Teh 2011) is added to the parameters after the
optimizer step: theta += sqrt(2 eta_t T) z, variance 2 eta_t T per coordinate.
Its gradient-noise equivalent under P is Cov = (2 T / eta_t) P^-2 (then
eta^2 P Cov P = 2 eta T I), which ``sgld_equivalent_diag`` returns for the logger.

Usage in any training loop::

    noise = GradientNoise(model.parameters(), "gaussian", seed=run_seed)
    for step in ...:
        for batch in micro_batches:
            (loss_fn(model, batch) / K).backward()
            noise.after_micro_backward()              # needed by "anisotropic" only
        unit = noise.unit_covariance(diag=noise_diag)     # diag(Cov) at s = 1
        cov_diag = noise.inject(scale)                    # adds xi to .grad
        logger.add_injected(cov_diag)                     # the P-NE logger sees it
        clip, optimizer.step(), logger.after_update(...)

All draws come from the object's own ``torch.Generator`` seeded by the run seed
(the global RNG is untouched); ``state_dict`` holds its state for a resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch

GRADIENT_FORMS = ("gaussian", "anisotropic", "student_t")
NOISE_FORMS = (*GRADIENT_FORMS, "nap", "sgld", "precond_freeze")
_SEED_OFFSET = 7_919  # the injector's stream differs from every other seeded stream of a run


class NoiseDraw(NamedTuple):
    """The last draw ``GradientNoise.inject`` added: xi = sqrt(scale) * (root * standard)
    (Gaussian, Student-t: flat root d^(1/2) and standard draw), or sqrt(scale) * standard
    @ root (anisotropic: root (K, D), standard (K,)). Kept so that a replay can regenerate
    or transform the recorded noise (``gradnoise.replay``)."""

    standard: torch.Tensor
    root: torch.Tensor
    scale: float


class MicroGradients:
    """The K micro-batch mean gradients of a step, from snapshots of the accumulated ``.grad``."""

    def __init__(self, params: list[torch.Tensor], n_micro: int):
        self.params, self.n_micro = params, n_micro
        self._snapshots: torch.Tensor | None = None  # (K + 1, D); row 0 stays zero
        self.seen = 0

    def after_micro_backward(self) -> None:
        if self._snapshots is None:
            n_coords = sum(p.numel() for p in self.params)
            self._snapshots = torch.zeros(self.n_micro + 1, n_coords, device=self.params[0].device)
        if self.seen >= self.n_micro:
            raise RuntimeError(f"noise: more than n_micro={self.n_micro} micro-batches in a step")
        self.seen += 1
        self._snapshots[self.seen] = flat_grad(self.params)

    def centred(self) -> torch.Tensor:
        """(K, D) g_j - g_mean, g_j = K times micro-batch j's increment of ``.grad``; resets."""
        if self.seen != self.n_micro:
            raise RuntimeError(f"noise: saw {self.seen} micro-batches, expected {self.n_micro}")
        snaps = self._snapshots
        micro = (snaps[1:] - snaps[:-1]) * self.n_micro
        self.seen = 0
        return micro - micro.mean(0)


class GradientNoise:
    """Noise of one registered form added to the averaged gradient of ``params``.

    Parameters
    ----------
    params : the parameters whose ``.grad`` receives the noise (their order is the flat order).
    form : ``gaussian``, ``anisotropic`` or ``student_t``.
    seed : the run seed; the noise stream is a function of it alone.
    df : degrees of freedom nu > 2 of the Student-t form.
    n_micro : K, micro-batches per step on this process (anisotropic form; one process,
        so B = K m and c = 1 / ((K - 1) K)).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        form: str,
        seed: int,
        *,
        df: float | None = None,
        n_micro: int | None = None,
    ):
        if form not in GRADIENT_FORMS:
            raise ValueError(f"noise form {form!r}: expected one of {GRADIENT_FORMS}")
        if form == "student_t" and (df is None or df <= 2):
            raise ValueError(f"student_t noise needs df > 2 (finite variance), got {df}")
        if form == "anisotropic" and (n_micro is None or n_micro < 2):
            raise ValueError(f"anisotropic noise needs n_micro >= 2, got {n_micro}")
        self.params = [p for p in params if p.requires_grad]
        self.sizes = [p.numel() for p in self.params]
        self.form, self.df = form, df
        self.micro = MicroGradients(self.params, n_micro) if form == "anisotropic" else None
        device = self.params[0].device
        self.generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + _SEED_OFFSET)
        self._unit: torch.Tensor | None = None  # diag(Cov) at s = 1 of the prepared step
        self._root: torch.Tensor | None = None  # d^(1/2), or sqrt(c) (g_j - g_mean) rows
        self.last_draw: NoiseDraw | None = None  # what the last ``inject`` added

    def after_micro_backward(self) -> None:
        """Snapshot the accumulated gradient after each micro-batch (anisotropic form only)."""
        if self.micro is not None:
            self.micro.after_micro_backward()

    def unit_covariance(self, diag: torch.Tensor | None = None) -> torch.Tensor:
        """Prepare this step's noise; return diag(Cov(xi)) at scale s = 1 (flat, fp32).

        ``diag`` is d of the Gaussian and Student-t forms (per coordinate, >= 0);
        the anisotropic form takes its structure from this step's micro-batches.
        """
        if self.form == "anisotropic":
            centred = self.micro.centred()
            n = centred.shape[0]
            c = 1.0 / ((n - 1) * n)  # m / ((n - 1) B) with B = n m
            self._root = centred * math.sqrt(c)
            self._unit = (self._root**2).sum(0)
        else:
            if diag is None:
                raise ValueError(f"GradientNoise({self.form!r}) needs the diagonal d")
            self._unit = diag.float().clamp(min=0)
            self._root = self._unit.sqrt()
        return self._unit

    def inject(self, scale: float, diag: torch.Tensor | None = None) -> torch.Tensor:
        """Add xi of variance scale ``scale`` to ``.grad``; return diag(Cov(xi)) (flat, fp32).

        Uses the step prepared by ``unit_covariance`` (prepared here when it was not).
        """
        if scale < 0 or not math.isfinite(scale):
            raise ValueError(f"GradientNoise: scale must be finite and >= 0, got {scale}")
        if self._unit is None:
            self.unit_covariance(diag)
        if self.form == "anisotropic":
            z = torch.randn(self._root.shape[0], generator=self.generator, device=self._root.device)
            noise = z @ self._root
        else:
            z = self.standard_draw(self._root.numel(), self._root.device)
            noise = self._root * z
        noise *= math.sqrt(scale)
        self.last_draw = NoiseDraw(z, self._root, float(scale))
        for p, piece in zip(self.params, noise.split(self.sizes), strict=True):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(piece.view_as(p.grad).to(p.grad.dtype))
        cov_diag = scale * self._unit
        self._unit = self._root = None
        return cov_diag

    def standard_draw(self, n: int, device: torch.device) -> torch.Tensor:
        """n draws of unit variance: standard normal, or Student-t scaled by sqrt((nu - 2)/nu)."""
        z = torch.randn(n, generator=self.generator, device=device)
        if self.form != "student_t":
            return z
        # t = z / sqrt(chi2_nu / nu); chi2_nu = 2 Gamma(nu / 2), drawn from our own generator
        chi2 = 2 * torch._standard_gamma(
            torch.full((n,), self.df / 2, device=device), generator=self.generator
        )
        return z / torch.sqrt(chi2 / self.df) * math.sqrt((self.df - 2) / self.df)

    def state_dict(self) -> dict:
        return {"form": self.form, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("form") != self.form:
            raise ValueError(
                f"GradientNoise state of form {state.get('form')!r}, not {self.form!r}"
            )
        self.generator.set_state(state["generator"])


def flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    """The parameters' ``.grad`` as one flat fp32 vector (zeros where there is none)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
            for p in params
        ]
    )


class SGLDNoise:
    """theta += sqrt(2 eta_t T) z after each optimizer step (Welling and Teh 2011).

    Usage::

        sgld = SGLDNoise(model.parameters(), temperature=1e-6, seed=run_seed)
        optimizer.step(); sgld.perturb(lr)
    """

    def __init__(self, params: Iterable[torch.Tensor], temperature: float, seed: int):
        if temperature < 0:
            raise ValueError(f"SGLD temperature must be >= 0, got {temperature}")
        self.params = [p for p in params if p.requires_grad]
        self.temperature = float(temperature)
        device = self.params[0].device
        self.generator = torch.Generator(device=device).manual_seed(
            seed * 1_000_003 + _SEED_OFFSET + 1
        )

    @torch.no_grad()
    def perturb(self, lr: float) -> None:
        std = math.sqrt(2 * lr * self.temperature)
        for p in self.params:
            p.add_(torch.randn(p.shape, generator=self.generator, device=p.device) * std)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def sgld_equivalent_diag(precond: torch.Tensor, lr: float, temperature: float) -> torch.Tensor:
    """Gradient-noise covariance diagonal with the SGLD update's diffusion: (2 T / eta) P^-2.

    A gradient noise of covariance Cov moves the parameters by eta P xi, of
    covariance eta^2 P Cov P; SGLD moves them by variance 2 eta T per coordinate,
    so Cov = (2 T / eta) P^-2 and eta Tr(P Cov P) = 2 T D (its P-NE per step).
    """
    if lr <= 0:
        return torch.zeros_like(precond)
    return (2 * temperature / lr) / precond.clamp(min=1e-30) ** 2
