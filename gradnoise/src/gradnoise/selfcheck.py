"""Can I trust the P-NE estimate on my model? The logger against exact per-example gradients.

``selfcheck`` runs the ``NoiseLogger`` (manual mode: four calls per step) on a deep
copy of the user's model and optimizer, on one batch of B examples split at random
into K micro-batches of m = B / K, and compares its estimates with their exact
values, computed from every per-example gradient g_i of the batch
(``torch.func``: ``vmap(grad_and_value(functional_call))``).

What is exact. With the parameters fixed, the batch is a finite population of B
examples; a random split into K micro-batches of m draws them without
replacement, and the estimators of ``gradnoise.estimation.formulas`` are then
exactly unbiased (the finite-population factor cancels, see ``covariance_diag``):

    E[m Var_j(g_bar_j)]       = S = (1 / (B - 1)) sum_i (g_i - G)^2   (diag, per coordinate)
    E[Tr(P C_hat P) / B]      = Tr(P S P) / B                          (P-NE_t / eta_t)
    E[Tr(P F_hat P)]          = Tr(P F P),  F = (1 / B) sum_i g_i^2    (P-NE* denominator)

P is the optimizer's preconditioner after the step (Adam/AdamW: 1 / (sqrt(v_hat) + eps);
SGD: I), read by the same ``preconditioner`` on both sides. Every check step starts
from the same optimizer state (restored before each step) and the learning rate
of the copy is 0, so P and the exact values are the same at every step and only
the split changes: step t's relative error r_t = estimate_t / exact - 1 has mean 0.

Verdict per quantity, from T steps: the mean relative error r_bar and its standard
error se = sd(r_t) / sqrt(T); ``pass`` when |r_bar| <= n_se * se + bias_allowance
(the allowance covers float32 rounding of the accumulated micro-batch gradients),
``fail`` otherwise, ``inconclusive`` when the mean estimate's own relative spread
se / (1 + r_bar) exceeds max_std_error (too few steps or K to tell; for Gaussian
micro-batch means se = sqrt(2 / ((K - 1) r_eff T)), r_eff the effective rank of
P S P, so raise ``steps`` or ``n_micro``). The defaults detect
convention errors (a factor m, K or B, a summed loss), not biases of a few percent.
The check also compares loss_fn(model, batch) with the mean of the per-example
losses: the logger assumes each micro-batch loss is a mean over its examples.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch.func import functional_call, grad_and_value, vmap

from gradnoise.estimation.curvature import fisher_diag
from gradnoise.estimation.formulas import (
    covariance_diag,
    grad_sq_diag,
    precond_diag_product,
    preconditioner,
)
from gradnoise.estimation.logger import NoiseLogger
from gradnoise.selfcheck_report import CheckRow, SelfCheckReport, check_row, notes_on

__all__ = ["CheckRow", "SelfCheckReport", "selfcheck"]

Batch = torch.Tensor | tuple[torch.Tensor, ...]
OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
RESERVED = (
    "n_micro", "micro_batch_size", "world_size", "log_interval", "process_group", "loss_reduction",
)  # fmt: skip
QUANTITIES = (  # (row name, the logger's record key)
    ("Tr(P C P)/B", "trace_pcp"),
    ("Tr(P F P)", "trace_pfp_fisher"),
)
TORCH_FUNC_HINT = (
    "Common causes: batch norm in training mode or another in-place update of a buffer "
    "(use eval_mode=True, the default, or GroupNorm/LayerNorm), dropout or other random "
    "operations (eval_mode=True), .item() or data-dependent Python control flow in forward "
    "(see the 'UX limitations' page of torch.func)."
)


def selfcheck(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
    batch: Batch,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    n_micro: int = 4,
    steps: int = 50,
    warmup_steps: int | None = None,
    seed: int = 0,
    n_se: float = 4.0,
    bias_allowance: float = 0.01,
    max_std_error: float = 0.1,
    eval_mode: bool = True,
    chunk_size: int = 64,
    **logger_options,
) -> SelfCheckReport:
    """Compare the ``NoiseLogger`` estimate on ``model`` with the exact per-example computation.

    Parameters
    ----------
    model : the model (a DDP wrapper's ``.module`` is used); never modified.
    loss_fn : ``loss_fn(model, examples)`` -> the mean loss over ``examples`` (a tensor,
        or a tuple of tensors, like ``batch``); called on micro-batches and on single examples.
    batch : a tensor or tuple of tensors, examples along dim 0, B divisible by ``n_micro``.
    optimizer : Adam, AdamW or SGD over the model's parameters, never modified; its
        state is copied, so P is that of its next step. None: a fresh Adam.
    n_micro : K, micro-batches per step (>= 2).
    steps : T, random splits of the batch, one logging step each (>= 2).
    warmup_steps : optimizer steps (lr 0) on random micro-batches before the check, so
        a fresh Adam's v_hat is a gradient second moment, not one batch's G^2
        (None: 16 when the optimizer is Adam(W) without state, else 0).
    seed : seed of the splits and of the logger; the global RNG is not used.
    n_se, bias_allowance, max_std_error : the verdict (module docstring).
    eval_mode : run the copy in eval mode (no dropout; batch norm on running statistics),
        which torch.func needs for such layers.
    chunk_size : examples per vmap call (memory: chunk_size x parameters floats).
    logger_options : further ``NoiseLogger`` options (e.g. ``streaming=True``).

    Returns
    -------
    SelfCheckReport, one ``CheckRow`` per quantity (``Tr(P C P)/B``, ``Tr(P F P)``);
    ``print(report)`` gives a table.
    """
    examples = _as_examples(batch)
    batch_size = examples[0].shape[0]
    _check_settings(batch_size, n_micro, steps, chunk_size, logger_options)
    micro = batch_size // n_micro
    user_model = getattr(model, "module", model)
    twin = copy.deepcopy(user_model)
    twin.train(user_model.training and not eval_mode)
    device = next(twin.parameters()).device
    examples = tuple(e.to(device) for e in examples)
    is_tuple = isinstance(batch, tuple | list)
    twin_optimizer = _copy_optimizer(optimizer, user_model, twin)
    for group in twin_optimizer.param_groups:
        group["lr"] = 0.0  # the parameters stay where the user's model is
    generator = torch.Generator().manual_seed(seed)

    def loss_on(index: torch.Tensor) -> torch.Tensor:
        chosen = tuple(e[index.to(device)] for e in examples)
        return loss_fn(twin, chosen if is_tuple else chosen[0])

    if warmup_steps is None:
        adam = isinstance(twin_optimizer, torch.optim.Adam | torch.optim.AdamW)
        warmup_steps = 16 if adam and not twin_optimizer.state else 0
    for p in twin.parameters():
        p.grad = None
    for _ in range(warmup_steps):  # lr 0: only the optimizer's moments move
        loss_on(torch.randperm(batch_size, generator=generator)[:micro]).backward()
        twin_optimizer.step()
        twin_optimizer.zero_grad(set_to_none=True)

    exact, loss_ratio = _exact(twin, loss_fn, examples, is_tuple, chunk_size)
    logger = NoiseLogger(
        twin, twin_optimizer, n_micro=n_micro, micro_batch_size=micro, seed=seed, **logger_options
    )
    logged, truth = _splits(logger, loss_on, exact, batch_size, steps, generator)
    rows = tuple(
        check_row(name, logged[key], truth[key], n_se, bias_allowance, max_std_error)
        for name, key in QUANTITIES
    )
    notes = notes_on(rows, loss_ratio, batch_size)
    return SelfCheckReport(
        rows, steps, n_micro, micro, batch_size, type(twin_optimizer).__name__,
        warmup_steps, loss_ratio, notes,
    )  # fmt: skip


def _splits(logger, loss_on, exact, batch_size, steps, generator) -> tuple[dict, dict]:
    """The logger's values and the exact ones over ``steps`` random splits, each a logging step.

    Every step starts from the optimizer state of the first, so P is the same at every step.
    """
    optimizer, n_micro, micro = logger.optimizer, logger.n_micro, logger.micro_batch_size
    saved = copy.deepcopy(optimizer.state_dict())
    logged: dict[str, list[float]] = {key: [] for _, key in QUANTITIES}
    truth: dict[str, list[float]] = {key: [] for _, key in QUANTITIES}
    for step in range(1, steps + 1):
        optimizer.load_state_dict(copy.deepcopy(saved))
        logger.begin_step(step, log=True)
        order = torch.randperm(batch_size, generator=generator)
        for j in range(n_micro):
            (loss_on(order[j * micro : (j + 1) * micro]) / n_micro).backward()
            logger.after_micro_backward()
        grads = [p.grad for p in logger.params if p.grad is not None]
        grad_norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        optimizer.step()
        record = logger.after_update(1.0, grad_norm, 1.0)  # eta = 1: P-NE / eta is the trace
        optimizer.zero_grad(set_to_none=True)
        precond = torch.cat([p.reshape(-1) for p in preconditioner(optimizer, logger.params)])
        exact_step = _exact_traces(precond.double(), exact, batch_size)
        for _, key in QUANTITIES:
            logged[key].append(float(record[key]))
            truth[key].append(exact_step[key])
    return logged, truth


def _as_examples(batch: Batch) -> tuple[torch.Tensor, ...]:
    """The batch as a tuple of tensors sharing their first (example) dimension."""
    parts = tuple(batch) if isinstance(batch, tuple | list) else (batch,)
    if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
        raise TypeError(
            "selfcheck: batch must be a tensor or a tuple of tensors, got "
            f"{type(batch).__name__} of {[type(p).__name__ for p in parts]}"
        )
    sizes = [p.shape[0] if p.dim() else None for p in parts]
    if None in sizes or len(set(sizes)) != 1:
        raise ValueError(
            "selfcheck: every tensor of batch needs the same first (example) dimension, "
            f"got shapes {[tuple(p.shape) for p in parts]}"
        )
    return parts


def _check_settings(batch_size, n_micro, steps, chunk_size, logger_options) -> None:
    if int(n_micro) != n_micro or n_micro < 2:
        raise ValueError(f"selfcheck: n_micro must be an integer >= 2, got {n_micro!r}")
    if batch_size % n_micro:
        raise ValueError(
            f"selfcheck: the batch of {batch_size} examples does not split into "
            f"n_micro={n_micro} equal micro-batches; pass a batch whose size is a multiple "
            f"of n_micro (e.g. the first {batch_size - batch_size % n_micro} examples)"
        )
    if int(steps) != steps or steps < 2:
        raise ValueError(
            f"selfcheck: steps must be an integer >= 2 (for a standard error), got {steps!r}"
        )
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"selfcheck: chunk_size must be a positive integer, got {chunk_size!r}")
    reserved = sorted(set(logger_options) & set(RESERVED))
    if reserved:
        raise TypeError(f"selfcheck sets {reserved} itself; do not pass them as logger options")


def _copy_optimizer(
    optimizer: torch.optim.Optimizer | None, model: torch.nn.Module, twin: torch.nn.Module
) -> torch.optim.Optimizer:
    """The optimizer rebuilt over ``twin``'s parameters, with a copy of its state."""
    if optimizer is None:
        return torch.optim.Adam(twin.parameters(), lr=0.0)
    if not isinstance(optimizer, OPTIMIZERS):
        raise TypeError(
            "selfcheck: the logger knows the preconditioner of Adam, AdamW and SGD only, "
            f"got {type(optimizer).__name__}"
        )
    twin_of = {id(p): q for p, q in zip(model.parameters(), twin.parameters(), strict=True)}
    groups = []
    for i, group in enumerate(optimizer.param_groups):
        foreign = [tuple(p.shape) for p in group["params"] if id(p) not in twin_of]
        if foreign:
            raise ValueError(
                f"selfcheck: parameter group {i} of the optimizer holds tensors of shapes "
                f"{foreign} that are not parameters of the model"
            )
        settings = {k: v for k, v in group.items() if k != "params"}
        groups.append({"params": [twin_of[id(p)] for p in group["params"]], **settings})
    twin_optimizer = type(optimizer)(groups)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return twin_optimizer


class _LossModule(torch.nn.Module):
    """``loss_fn(model, examples)`` as a module, so ``functional_call`` can swap parameters."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, is_tuple: bool):
        super().__init__()
        self.model, self.loss_fn, self.is_tuple = model, loss_fn, is_tuple

    def forward(self, *examples: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model, examples if self.is_tuple else examples[0])


def _exact(model, loss_fn, examples, is_tuple, chunk_size) -> tuple[dict, float]:
    """Exact diag S (unbiased, 1 / (B - 1)), G and the loss ratio, from per-example gradients.

    Chunks of examples are merged with Chan et al.'s (1979) pairwise update of the
    mean and the sum of squared deviations, in float64.
    """
    wrapper = _LossModule(model, loss_fn, is_tuple)
    trainable = {n: p.detach() for n, p in wrapper.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in wrapper.named_parameters() if not p.requires_grad}
    fixed |= {n: b.detach() for n, b in wrapper.named_buffers()}

    def loss_one(params: dict, *example: torch.Tensor) -> torch.Tensor:
        return functional_call(wrapper, (params, fixed), tuple(e.unsqueeze(0) for e in example))

    per_example = vmap(grad_and_value(loss_one), in_dims=(None, *[0] * len(examples)))
    count, mean, m2, losses = 0, None, None, []
    batch_size = examples[0].shape[0]
    for start in range(0, batch_size, chunk_size):
        chunk = tuple(e[start : start + chunk_size] for e in examples)
        try:
            grads, values = per_example(trainable, *chunk)
        except (RuntimeError, ValueError, NotImplementedError) as err:
            raise RuntimeError(
                "selfcheck: torch.func could not take per-example gradients of this model "
                f"({type(err).__name__}: {err}). {TORCH_FUNC_HINT}"
            ) from err
        n = chunk[0].shape[0]
        flat = torch.cat([grads[k].reshape(n, -1) for k in trainable], 1).double()
        chunk_mean = flat.mean(0)
        chunk_m2 = ((flat - chunk_mean) ** 2).sum(0)
        if mean is None:
            mean, m2 = chunk_mean, chunk_m2
        else:
            delta, total = chunk_mean - mean, count + n
            mean = mean + delta * (n / total)
            m2 = m2 + chunk_m2 + delta**2 * (count * n / total)
        count += n
        losses.append(values.detach().double().reshape(-1))
    with torch.no_grad():
        batch_loss = float(wrapper(*examples))
    example_mean = float(torch.cat(losses).mean())
    ratio = batch_loss / example_mean if example_mean != 0 else math.nan
    # an example is a micro-batch of one: diag(C) = 1 * (unbiased variance of the g_i)
    return {"cov": covariance_diag(m2 / (batch_size - 1), 1), "mean": mean}, ratio


def _exact_traces(precond: torch.Tensor, exact: dict, batch_size: int) -> dict[str, float]:
    """Tr(P S P) / B and Tr(P F P), F = S + (G^2 - S / B) = (1 / B) sum_i g_i^2."""
    cov = exact["cov"]
    fisher = fisher_diag(cov, grad_sq_diag(exact["mean"], cov, batch_size))
    return {
        "trace_pcp": float(precond_diag_product(precond, cov).sum()) / batch_size,
        "trace_pfp_fisher": float(precond_diag_product(precond, fisher).sum()),
    }
