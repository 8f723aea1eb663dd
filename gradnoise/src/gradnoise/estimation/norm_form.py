"""P-NE from squared norms, every step: the economy tier of ``gradnoise.tap.attach``.

Notation of ``gradnoise.estimation.formulas``: n = K W micro-batch mean gradients
g_j of m examples each, their mean G_bar, the global batch B = m n, a diagonal
preconditioner P. For any P, expanding the square (sum_j P g_j = n P G_bar):

    sum_j |P (g_j - G_bar)|^2 = sum_j |P g_j|^2 - n |P G_bar|^2                (1)

The left side is n - 1 times the sum over coordinates of P^2 times the unbiased
variance of the micro-batch means, so with ``covariance_diag`` (diag C = m
Var_j(g_j), seed 003 §3.4) the trace the default mode sums coordinate by
coordinate is, from n + 1 squared norms,

    Tr(P C P) / B = m / (B (n - 1)) (sum_j |P g_j|^2 - n |P G_bar|^2)          (2)

For P = I this is the two-batch-size estimator of McCandlish et al. (2018, App. A),
E|G_small|^2 = |G|^2 + Tr(C) / B_small, E|G_big|^2 = |G|^2 + Tr(C) / B_big, with
B_small = m (the mean of |g_j|^2 over the n micro-batches) and B_big = B:
Tr(C) = (mean_j |g_j|^2 - |G_bar|^2) / (1/m - 1/B) = m / (n - 1) (sum_j |g_j|^2 -
n |G_bar|^2). Under the study's sampling (B distinct examples split into
micro-batches) it is unbiased exactly as ``covariance_diag`` is, provided P does
not depend on this step's batch: hence P_{t-1}, the preconditioner Adam holds
while the micro-batches run (seed 003 defines P-NE with P_t; the two differ by
Adam's change over one step, weight (1 - beta2) / (1 - beta2^t) on the new
gradient). The unbiased squared mean and the empirical Fisher trace follow as
``grad_sq_diag`` and ``fisher_diag`` do per coordinate:

    |P G|^2 = |P G_bar|^2 - Tr(P C P) / B,     Tr(P F P) = Tr(P C P) + |P G|^2   (3)

and B_simple = Tr(C) / |G|^2 (``b_simple``) from (2) and (3) with P = I.

Each step integrates its own estimate (no held diagonals, no stride):
int P-NE += eta_t Tr(P C P) / B, int P-NE* += P-NE_t / max(floor, Tr(P F P)),
effective variants times c_t^2 (``effective``), and the step-size clock
int_clock += eta_t / B.

Rounding: the squared norms are float32 dot products (relative rounding ~1e-7),
summed in float64; the difference in (1) amplifies their rounding by
n |P G_bar|^2 / sum_j |P (g_j - G_bar)|^2, about B |G|^2 / Tr(C) = B / B_simple
(unpreconditioned). Far from that regime (B well below 10^5 B_simple) the
estimate keeps several digits; the standard tier's per-coordinate moments
(``gradnoise.estimation.welford``) do not cancel this way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from gradnoise.estimation.curvature import fisher_diag
from gradnoise.estimation.formulas import (
    b_simple,
    covariance_diag,
    curvature_floor,
    effective,
    pne,
    pne_star,
)

# The record's columns (a subset of the logger's, same meanings) and the integrals.
NORM_FORM_COLUMNS = (
    "step", "lr", "clip_coef", "trace_pcp", "trace_pfp", "trace_pfp_fisher", "pne",
    "pne_star", "pne_eff", "pne_star_eff", "trace_cov", "grad_sq", "b_simple",
    "b_simple_run", "int_pne", "int_pne_star", "int_pne_eff", "int_pne_star_eff",
    "int_trace_cov", "int_grad_sq", "int_clock", "groups",
)  # fmt: skip
NORM_FORM_INTEGRATED = (
    "int_pne", "int_pne_star", "int_pne_eff", "int_pne_star_eff", "int_trace_cov", "int_grad_sq",
    "int_clock",
)  # fmt: skip
VARIANCE_RTOL = 1e-4  # float32 rounding of squared norms, well above it: not a variance


class NormFormEstimate:
    """Per-step P-NE, P-NE* and B_simple from (K, groups, 2) squared norms (module docstring).

    Parameters
    ----------
    n_micro, micro_batch_size, world_size : K, m and W; n = K W, B = m n.
    n_groups : the parameter groups the sums are kept for (the optimizer's, and one
        more for trainable parameters outside every group, P = 0).
    loss_reduction : ``"mean"`` or ``"sum"``: the units of ``trace_cov`` and ``grad_sq``
        only, as ``NoiseLogger`` (divided by (m K)^2 under ``"sum"``).
    eps_rel : floor of Tr(P F P) relative to itself (``curvature_floor``).
    process_group : the group whose workers' micro-batch sums are added (W > 1).
    device : where the sums live (the parameters' device).
    """

    def __init__(
        self,
        *,
        n_micro: int,
        micro_batch_size: int,
        world_size: int,
        n_groups: int,
        loss_reduction: str,
        eps_rel: float,
        process_group,
        device: torch.device,
    ):
        if n_micro * world_size < 2:
            raise ValueError(
                "tier='economy' needs at least two micro-batches per step (n_micro * world_size "
                ">= 2) to estimate their variance"
            )
        self.n_micro, self.micro_batch_size, self.world_size = n_micro, micro_batch_size, world_size
        self.n = n_micro * world_size
        self.global_batch = micro_batch_size * self.n
        self.loss_reduction, self.eps_rel = loss_reduction, eps_rel
        self.process_group = process_group
        # columns: |P_{t-1} g|^2 and |g|^2, summed over the group's parameters
        self.micro = torch.zeros(n_micro, n_groups, 2, dtype=torch.float64, device=device)
        self.mean = torch.zeros(n_groups, 2, dtype=torch.float64, device=device)
        self.sums = dict.fromkeys(NORM_FORM_INTEGRATED, 0.0)

    def begin_step(self) -> None:
        self.micro.zero_()
        self.mean.zero_()

    def add_micro(self, j: int, values: torch.Tensor, group_index: torch.Tensor, factor: float):
        """Add micro-batch j's per-parameter (|P d_j|^2, |d_j|^2) (n_params, 2), times factor^2."""
        self.micro[j].index_add_(0, group_index, values.double(), alpha=factor**2)

    def add_mean(self, values: torch.Tensor, group_index: torch.Tensor, factor: float):
        """Add the accumulated gradient's per-parameter (|P G_bar|^2, |G_bar|^2), times factor^2."""
        self.mean.index_add_(0, group_index, values.double(), alpha=factor**2)

    def finish(self, step: int, lr: float, clip_coef: float) -> dict:
        """The step's record (``NORM_FORM_COLUMNS``); adds it to the integrals."""
        micro = self.micro.sum(0)  # (groups, 2): sum_j over this worker's micro-batches
        if self.world_size > 1:  # one all-reduce of the step's scalars
            dist.all_reduce(micro, group=self.process_group)
        m, n, batch = self.micro_batch_size, self.n, self.global_batch
        spread = micro - n * self.mean  # (1): sum_j |P (g_j - G_bar)|^2 per group
        cov = covariance_diag(spread / (n - 1), m)  # (2) times B: Tr(P C P), Tr(C)
        signal = self.mean - cov / batch  # (3): |P G|^2, |G|^2
        fisher = fisher_diag(cov, signal)
        per_group = torch.stack([cov[:, 0] / batch, fisher[:, 0], cov[:, 1], signal[:, 1]], 1)
        (trace, pfp, trace_cov, grad_sq), groups = per_group.sum(0).tolist(), per_group.tolist()
        total_micro, total_mean = micro[:, 1].sum().item(), self.mean[:, 1].sum().item()
        check_variance(total_micro, n * total_mean, step)
        if self.loss_reduction == "sum":
            units = float(m * self.n_micro) ** 2
            trace_cov, grad_sq = trace_cov / units, grad_sq / units
        return self._record(step, lr, clip_coef, (trace, pfp, trace_cov, grad_sq), groups)

    def _record(self, step, lr, clip_coef, traces, groups) -> dict:
        trace, pfp, trace_cov, grad_sq = traces
        floor = curvature_floor(self.eps_rel, pfp)
        pne_value = pne(lr, trace)
        star = pne_star(pne_value, pfp, floor)
        sums = self.sums
        sums["int_pne"] += pne_value
        sums["int_pne_star"] += star
        sums["int_pne_eff"] += effective(pne_value, clip_coef)
        sums["int_pne_star_eff"] += effective(star, clip_coef)
        sums["int_trace_cov"] += trace_cov
        sums["int_grad_sq"] += grad_sq
        sums["int_clock"] += lr / self.global_batch  # the step-size clock (estimation.integrals)
        return {
            "step": step, "lr": lr, "clip_coef": clip_coef,
            "trace_pcp": trace, "trace_pfp": pfp, "trace_pfp_fisher": pfp,
            "pne": pne_value, "pne_star": star,
            "pne_eff": effective(pne_value, clip_coef), "pne_star_eff": effective(star, clip_coef),
            "trace_cov": trace_cov, "grad_sq": grad_sq,
            "b_simple": b_simple(trace_cov, grad_sq),
            "b_simple_run": b_simple(sums["int_trace_cov"], sums["int_grad_sq"]),
            **sums,
            "groups": [
                {"group": k, "trace_pcp": row[0], "trace_pfp": row[1], "pne": pne(lr, row[0])}
                for k, row in enumerate(groups)
            ],
        }  # fmt: skip


def check_variance(sum_micro_sq: float, n_mean_sq: float, step: int) -> None:
    """Raise unless sum_j |g_j|^2 >= n |G_bar|^2 (1): the hooks' g_j do not average to .grad.

    The scalar form of ``gradnoise.tap.consistency``'s check: it sees a ``.grad`` larger
    than the micro-batches allow (a GradScaler not declared, gradients summed over
    workers, noise added to ``.grad``), not every mismatch (``.grad`` zeroed between
    micro-batches makes it smaller).
    """
    if sum_micro_sq >= n_mean_sq * (1 - VARIANCE_RTOL):
        return
    raise RuntimeError(
        f"gradnoise.tap (tier='economy'): at step {step} the accumulated gradient is larger than "
        f"its micro-batches allow (sum_j |g_j|^2 = {sum_micro_sq:.6g} < n |G_bar|^2 = "
        f"{n_mean_sq:.6g}): the gradient the optimizer steps with is not the mean of the "
        "micro-batch gradients the hooks saw (a GradScaler not passed as attach(..., scaler=), "
        "gradients summed rather than averaged over workers, or .grad changed by hand). "
        "No estimate is returned."
    )
