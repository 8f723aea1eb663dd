"""The P-NE logger's output rows and its input checks (``gradnoise.estimation.logger``).

``step_record`` builds one row of ``preregistration.tables.STEPS`` from a logging
step's estimate, and its per-module rows (``preregistration.tables.LAYERS``); the
``check_*`` functions reject settings the estimator cannot honour, with a message.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gradnoise.estimation.curvature import PROXIES
from gradnoise.estimation.formulas import (
    b_simple,
    curvature_floor,
    effective,
    pne,
    pne_eta2,
    pne_star,
)
from gradnoise.estimation.integrals import DIAGONAL_CURVATURES

# Per-coordinate quantities summed per layer, in the order ``NoiseLogger._estimate`` stacks them.
LAYER_TRACES = ("trace_pcp", "trace_pfp_fisher", "trace_cov", "grad_sq")


def step_record(
    estimate: dict,
    trace_pfp: float,
    sums: dict[str, float],
    b_window: Iterable[tuple[float, float]],
    lr: float,
    clip_coef: float,
    eps_rel: float,
    clip_rate: float,
    layers: list[tuple[str, int]],
) -> dict:
    """The steps-table row of a logging step; per-module rows under ``layers``.

    ``trace_pfp`` is the registered proxy's Tr(P F P); ``sums`` the integrals
    through this step; ``b_window`` the (Tr(C), |G|^2) pairs of the latest logged
    estimates, pooled as a ratio of sums into ``b_simple_window``; ``layers`` the
    (module name, parameter count) pairs in the order of ``estimate["layer_sums"]``.
    """
    trace, fisher = estimate["trace_pcp"], estimate["trace_pfp_fisher"]
    floor = curvature_floor(eps_rel, fisher)
    pne_value = pne(lr, trace)
    pne_star_value = pne_star(pne_value, trace_pfp, floor)
    window = list(b_window)
    ggn, true_fisher = estimate["trace_pgp_ggn"], estimate["trace_pfp_true_fisher"]
    return {
        "trace_pcp": trace,
        "trace_pfp": trace_pfp,
        "pne": pne_value,
        "pne_star": pne_star_value,
        "pne_eff": effective(pne_value, clip_coef),
        "pne_star_eff": effective(pne_star_value, clip_coef),
        "pne_eta2": pne_eta2(lr, trace),
        "b_simple": b_simple(estimate["trace_cov"], estimate["grad_sq"]),
        "b_simple_window": b_simple(sum(c for c, _ in window), sum(g for _, g in window)),
        "b_simple_run": b_simple(sums["int_trace_cov"], sums["int_grad_sq"]),
        **sums,
        "clip_rate": clip_rate,
        "trace_cov": estimate["trace_cov"],
        "grad_sq": estimate["grad_sq"],
        "trace_pfp_fisher": fisher,
        "pne_star_fisher": pne_star(pne_value, fisher, floor),
        "trace_pgp_ggn": ggn,
        "pne_star_ggn": pne_star(pne_value, ggn, floor),
        "trace_pfp_true_fisher": true_fisher,
        "pne_star_true_fisher": pne_star(pne_value, true_fisher, floor),
        "trace_php_hessian": estimate["trace_php_hessian"],
        "spectrum_top": estimate["spectrum_top"],
        "spectrum_top_share": estimate["spectrum_top_share"],
        "eff_rank": estimate["eff_rank"],
        "hill_tail_index": estimate["hill_tail_index"],
        "layers": layer_rows(estimate["layer_sums"], layers, lr, clip_coef, trace_pfp, floor),
    }


def layer_rows(
    layer_sums: torch.Tensor,
    layers: list[tuple[str, int]],
    lr: float,
    clip_coef: float,
    trace_pfp: float,
    floor: float,
) -> list[dict]:
    """One row per module; trace_pcp, pne, pne_star, pne_eff sum to the step's totals.

    A layer's ``pne_star`` divides its P-NE by the whole model's curvature
    trace (its share of P-NE*); its ``trace_pfp`` is its empirical Fisher trace.
    """
    rows = []
    for (name, n_params), column in zip(layers, layer_sums.T.tolist(), strict=True):
        values = dict(zip(LAYER_TRACES, column, strict=True))
        layer_pne = pne(lr, values["trace_pcp"])
        rows.append(
            {
                "layer": name,
                "n_params": n_params,
                "trace_pcp": values["trace_pcp"],
                "trace_pfp": values["trace_pfp_fisher"],
                "trace_cov": values["trace_cov"],
                "grad_sq": values["grad_sq"],
                "pne": layer_pne,
                "pne_star": pne_star(layer_pne, trace_pfp, floor),
                "pne_eff": effective(layer_pne, clip_coef),
            }
        )
    return rows


def check_settings(optimizer, n_micro, micro_batch_size, world_size, log_interval, curvature):
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW | torch.optim.SGD):
        raise TypeError(
            f"NoiseLogger supports Adam, AdamW and SGD (their preconditioner is known); "
            f"got {type(optimizer).__name__}"
        )
    for name, value in (
        ("n_micro", n_micro),
        ("micro_batch_size", micro_batch_size),
        ("world_size", world_size),
        ("log_interval", log_interval),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"NoiseLogger: {name} must be a positive integer, got {value!r}")
    if n_micro * world_size < 2:
        raise ValueError(
            "NoiseLogger needs at least two micro-batches per step (n_micro * world_size >= 2) "
            "to estimate their variance"
        )
    if curvature not in DIAGONAL_CURVATURES:
        raise ValueError(
            f"NoiseLogger: curvature must be one of {DIAGONAL_CURVATURES} (positive "
            f"semi-definite; the raw Hessian is only reported, with proxies=('hessian',)), "
            f"got {curvature!r}"
        )


def check_proxies(proxies, curvature_probes, b_simple_window, eps_rel, precond_interval) -> None:
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown:
        raise ValueError(f"NoiseLogger: proxies must be among {PROXIES}, got {unknown}")
    for name, value in (
        ("curvature_probes", curvature_probes),
        ("b_simple_window", b_simple_window),
        ("precond_interval", precond_interval),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"NoiseLogger: {name} must be a positive integer, got {value!r}")
    if not 0 < eps_rel < 1:
        raise ValueError(f"NoiseLogger: eps_rel must lie in (0, 1), got {eps_rel!r}")


def check_one_lr(optimizer: torch.optim.Optimizer) -> None:
    rates = {float(g["lr"]) for g in optimizer.param_groups}
    if len(rates) > 1:
        raise ValueError(
            f"NoiseLogger assumes one learning rate for all parameter groups, found {sorted(rates)}"
        )
