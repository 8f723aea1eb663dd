"""Simulated runs tables: the registered design with outcomes drawn from a known model.

Used to check the analysis where the truth is known (tests of size and power,
``analysis.power``) and to exercise the report and figures before any real run
exists. The table follows ``preregistration.tables.RUNS`` and the registered condition
names of ``preregistration.design.expand_design``.

Generative model (per run i of condition c and seed s):

    log E_cs  = log(lr_c / lr_base) + log(B_ref / B_c) + log_exposure_offset + 0.1 z
    icl_cs    = icl_mean + icl_slope (log E_cs - mean log E) + u_s + e_cs
    mem_cs    = mem_mean + mem_slope (log E_cs - mean log E) + v_s + f_cs

u_s ~ N(0, sd_seed^2), e ~ N(0, sd_resid^2) (likewise v, f), the final loss uniform
within the registered tolerance. Integrated P-NE* E grows with the learning rate
and with 1 / B, as the metric says it should (DESIGN §2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from preregistration.design import expand_design
from preregistration.tables import validate


def simulate_runs(
    plan: dict,
    scale: str,
    icl_slope: float = 0.0,
    mem_slope: float = 0.0,
    sd_seed: float = 0.02,
    sd_resid: float = 0.02,
    icl_mean: float = 0.45,
    mem_mean: float = 0.6,
    n_excluded: int = 0,
    seeds: list[int] | None = None,
    random_state: int = 0,
) -> pd.DataFrame:
    """A runs table (``preregistration.tables.RUNS``) of the design with simulated outcomes.

    Parameters
    ----------
    plan, scale : dict, str
        The pre-registration plan and the scale whose design is simulated.
    icl_slope, mem_slope : float
        True slopes of ``icl_auc`` and ``memorization`` per unit log(int_pne_star).
    sd_seed, sd_resid : float
        Standard deviations of the seed intercept and of the run residual.
    n_excluded : int
        The last ``n_excluded`` runs get status ``token_cap`` and are excluded by the
        registered ``missed_target`` rule (their outcomes are still filled in).
    seeds : list of int, optional
        Seeds to simulate instead of the registered ones (power analysis).
    """
    specs = expand_design(plan, scale)
    arms = plan["design"]["arms"]  # the regression family's arms are not simulated
    specs = [s for s in specs if arms.get(s.arm, {}).get("family") != "regression"]
    if seeds is not None:
        base = {(s.condition): s for s in specs}
        specs = [
            type(s)(**{**s.__dict__, "seed": int(seed)}) for s in base.values() for seed in seeds
        ]
    rng = np.random.default_rng(random_state)
    batches = np.array([s.global_batch for s in specs], dtype=float)
    lrs = np.array([s.lr_peak for s in specs])
    lr_base = float(plan["design"]["scales"][scale]["lr_base"])
    b_ref = math.sqrt(batches.min() * batches.max())
    log_e = np.log(lrs / lr_base) + np.log(b_ref / batches) + math.log(50.0)
    log_e = log_e + 0.1 * rng.normal(size=len(specs))
    seed_ids = sorted({s.seed for s in specs})
    u = dict(zip(seed_ids, sd_seed * rng.normal(size=len(seed_ids)), strict=True))
    v = dict(zip(seed_ids, sd_seed * rng.normal(size=len(seed_ids)), strict=True))
    centred = log_e - log_e.mean()
    n = len(specs)
    icl = icl_mean + icl_slope * centred + np.array([u[s.seed] for s in specs])
    icl = icl + sd_resid * rng.normal(size=n)
    mem = mem_mean + mem_slope * centred + np.array([v[s.seed] for s in specs])
    mem = mem + sd_resid * rng.normal(size=n)
    fact = mem + 0.01 * rng.normal(size=n)
    target = np.array([s.target_val_loss for s in specs])
    tol = np.array([s.target_tolerance for s in specs])
    loss = target + tol * rng.uniform(-1, 1, size=n)
    status = np.array(["reached_target"] * n, dtype=object)
    if n_excluded:
        status[-n_excluded:] = "token_cap"
        loss[-n_excluded:] = target[-n_excluded:] + 3 * tol[-n_excluded:]
    excluded = status != "reached_target"
    steps = (4000 * b_ref / batches).astype(int)
    clip = rng.uniform(0.6, 1.0, size=n)
    runs = pd.DataFrame(
        {
            "run_id": [s.run_id for s in specs],
            "condition": [s.condition for s in specs],
            "arm": [s.arm for s in specs],
            "seed": [s.seed for s in specs],
            "global_batch": batches.astype(int),
            "lr_peak": lrs,
            "lr_rule": [s.lr_rule for s in specs],
            "status": status.astype(str),
            "excluded": excluded,
            "exclusion_reason": np.where(excluded, "missed_target", ""),
            "steps": steps,
            "tokens": steps * batches.astype(int) * 64,
            "final_val_loss": loss,
            "int_pne": np.exp(log_e) * 3.0,
            "int_pne_star": np.exp(log_e),
            "int_pne_eff": np.exp(log_e) * 3.0 * clip,
            "int_pne_star_eff": np.exp(log_e) * clip,
            "int_pne_eta2": np.exp(log_e) * lrs,
            "b_simple_run": batches * rng.uniform(0.5, 2.0, size=n),
            "icl_auc": icl,
            "icl_acc_max_shots": icl + 0.1,
            "icl_acc_zero_shot": np.full(n, 0.125),
            "fact_recall": fact,
            "in_weights_accuracy": 2 * mem - fact,
            "memorization": mem,
            "induction_score": 0.5 + 0.1 * centred + 0.05 * rng.normal(size=n),
            "reg_icl_area": np.full(n, np.nan),
            "reg_excess_area": np.full(n, np.nan),
            "plan_hash": "0" * 64,
            "wall_time_s": rng.uniform(50, 100, size=n),
        }
    )
    return validate(runs, "runs", source="simulate_runs")
