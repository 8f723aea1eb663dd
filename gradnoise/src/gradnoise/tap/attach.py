"""``attach``: one line that hooks a P-NE logger onto a model and its optimizer."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.distributed as dist

from gradnoise.estimation.logger import LOSS_REDUCTIONS, NoiseLogger
from gradnoise.tap.economy import EconomyTap
from gradnoise.tap.tap import NoiseTap
from gradnoise.tap.welford_tap import WelfordTap

TIERS = ("economy", "standard", "full")
# Options the standard tier's two buffers cannot honour: given with it, the tap keeps the
# manual logger's own mode (K + 1 rows, or ``streaming``), the attach of before the tiers.
OWN_MODE_OPTIONS = frozenset(
    {"streaming", "sketch_width", "sketch_rank", "hill_fraction", "hill_max_samples",
     "curvature", "proxies", "curvature_probes"}
)  # fmt: skip

# NoiseLogger arguments the tap sets itself (from attach's own arguments)
_SET_BY_TAP = {"model", "optimizer", "n_micro", "micro_batch_size", "world_size",
               "process_group", "loss_reduction", "self"}  # fmt: skip


def attach(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    n_micro: int,
    loss_reduction: str = "mean",
    micro_batch_size: int | None = None,
    world_size: int | None = None,
    process_group=None,
    scaler=None,
    on_record: Callable[[dict], None] | None = None,
    logits_closure: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
    tier: str = "standard",
    **logger_options,
) -> NoiseTap:
    """Log P-NE_t = eta_t Tr(P_t C_t P_t) / B of an unchanged training loop (seed 003).

    The loop keeps its K micro-batch backward passes, its clipping and its
    ``optimizer.step()``; the hooks read what ``NoiseLogger``'s four manual calls
    are told (``gradnoise.tap.tap``): each micro-batch's gradient from tensor hooks
    (before DDP's all-reduce: no ``no_sync`` and no manual averaging), eta_t and
    P_t from the optimizer after its step, the clip coefficient c_t = |g_post| /
    |g_pre| from the gradient norms (under DDP |g_pre| from a communication hook
    wrapping the default averaging all-reduce). ::

        tap = attach(model, optimizer, n_micro=K)
        for batch in loader:                        # unchanged
            for micro in batch.chunk(K):
                (loss_fn(model, micro) / K).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        tap.records                                 # the logging steps' rows

    Parameters
    ----------
    model : the model, or its ``DistributedDataParallel`` wrapper (required for W > 1).
    optimizer : ``torch.optim.Adam``, ``AdamW`` or ``SGD`` over the model's parameters, one lr.
    n_micro : K, backward passes per optimizer step on each worker (checked every step).
    loss_reduction : ``"mean"``: each micro-batch loss is the mean over its examples divided
        by K; ``"sum"``: the sum over the step's m K local examples, not divided. The
        estimates are in the units of the gradient the optimizer is given (g_j = K d_j
        from micro-batch j's increment d_j, whatever the loss's scale), so P-NE, P-NE*
        and B_simple are the same for either loss under Adam; the convention sets the
        units of the unpreconditioned ``trace_cov`` and ``grad_sq`` (per example of the
        loss). A consistent rescaling of every loss cannot be told from the gradients;
        what can be told is checked at every logging step (``gradnoise.tap.consistency``),
        and a mismatch raises RuntimeError instead of returning a wrong estimate.
    micro_batch_size : m; None reads it from the leading dimension of the first tensor
        argument of the first forward call (and checks later ones on logging steps).
    world_size, process_group : W and its group; None reads W from ``torch.distributed``
        when it is initialised, else 1.
    scaler : the ``torch.amp.GradScaler`` of a mixed-precision loop: the hooks see scaled
        gradients and divide by its scale; a step it skips for inf / NaN is counted in
        ``skipped_steps`` and not logged.
    on_record : called with each logging step's record dict.
    logits_closure : ``(logits, targets)`` of a batch, for the curvature proxies
        (``NoiseLogger.after_update``); needed when ``curvature`` or ``proxies`` ask for it.
    tier : what is estimated, at what cost (measured: bench/pne_overhead.py):

        - ``"economy"``: every step, P-NE, P-NE* (potential and effective) and B_simple
          under the previous step's preconditioner P_{t-1}, from two squared norms per
          parameter and micro-batch (``gradnoise.tap.economy``); no buffer of the
          gradient's size; records with the columns of
          ``gradnoise.estimation.norm_form.NORM_FORM_COLUMNS``; takes only ``eps_rel``.
        - ``"standard"`` (default): the logger's records on logging steps (per layer,
          stride-free integrals, B_simple windows) with at most two gradient-sized
          buffers, the held estimate included: each increment is folded into
          Welford's moments inside the hook (``gradnoise.tap.welford_tap``); the
          spectrum and tail-index columns are NaN; no curvature proxy other than the
          empirical Fisher. Given an option those two buffers cannot honour
          (``OWN_MODE_OPTIONS``: ``streaming``, the sketch and tail settings, curvature
          proxies) it keeps the manual logger's own mode (K + 1 gradient copies, or
          streaming), spectrum and tail index included: the attach of before the tiers.
        - ``"full"``: the streaming estimate (spectrum of P_{t-1} C P_{t-1} / B, Hill
          tail index) and the curvature proxies asked for, three gradient-sized
          buffers on a logging step besides what it holds.
    **logger_options : passed to ``NoiseLogger`` (``log_interval``, ``streaming``, ``seed``,
        ``curvature``, ``sketch_width``, ...).

    Returns
    -------
    NoiseTap : ``.records``, ``.sums``, ``.step``, ``.skipped_steps``, ``.logger``,
        ``.add_injected(cov_diag)``, ``.detach()``; a context manager that detaches on exit.

    Notes
    -----
    Why the units of the applied gradient: the noise an update carries is that of
    the gradient the optimizer is given. Adam's P_t scales inversely with the gradient,
    so Tr(P C P) is the same for a summed and a mean loss; under SGD (P = I) a summed
    loss's update is m K times larger and so is its noise, which P-NE then shows.

    Limits: every backward pass through the parameters counts as a micro-batch
    (a gradient penalty or ``torch.autograd.grad`` in the loop would be counted;
    the logger's own curvature probes are not); the consistency check runs on
    logging steps, the count of backward passes on every step; DDP's communication
    hook cannot be removed by ``detach`` (it then only averages), and a model that
    already has one cannot be tapped under W > 1.
    """
    if loss_reduction not in LOSS_REDUCTIONS:
        raise ValueError(
            f"attach(loss_reduction={loss_reduction!r}): expected one of {LOSS_REDUCTIONS}"
        )
    if tier not in TIERS:
        raise ValueError(f"attach(tier={tier!r}): expected one of {TIERS}")
    if micro_batch_size is not None and (
        not isinstance(micro_batch_size, int) or micro_batch_size < 1
    ):
        raise ValueError(f"attach(micro_batch_size={micro_batch_size!r}): a positive integer")
    accepted = set(inspect.signature(NoiseLogger).parameters) - _SET_BY_TAP
    unknown = sorted(set(logger_options) - accepted)
    if unknown:
        raise TypeError(
            f"attach: unknown NoiseLogger option(s) {unknown}; accepted: {sorted(accepted)}"
        )
    if tier == "full" and not logger_options.setdefault("streaming", True):
        raise ValueError("attach(tier='full', streaming=False): the full tier is the streaming one")
    tap_class = {"economy": EconomyTap, "full": NoiseTap}.get(tier, NoiseTap)
    if tier == "standard" and not OWN_MODE_OPTIONS & set(logger_options):
        tap_class = WelfordTap
    return tap_class(
        model, optimizer, n_micro=n_micro, loss_reduction=loss_reduction,
        micro_batch_size=micro_batch_size,
        world_size=_world_size(world_size, process_group), process_group=process_group,
        scaler=scaler, on_record=on_record, logits_closure=logits_closure,
        logger_options=logger_options,
    )  # fmt: skip


def _world_size(world_size: int | None, process_group) -> int:
    """W as given, else the process group's size when torch.distributed is up, else 1."""
    if world_size is not None:
        return world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(process_group)
    return 1
