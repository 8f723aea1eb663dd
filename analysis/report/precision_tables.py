"""The precision H2 and H3 achieved and their power on the runs (issue 22, item 5; exploratory).

``precision_inputs`` runs H2's and H3's registered tests on the runs table as the
confirmatory tables do (``analysis.hypotheses.arm_tests``: the included runs of each
test's registered arms; H3's registered pairing) and collects, beside each test's CI,
the SD of the per-seed differences it is computed from and what the plan registers:
the scale's seeds for the test's conditions, H2's budget levels, the effect and the SD
of the registered power analysis (plan ``power``). ``analysis.exploratory.precision``
turns that into the table; ``write_precision`` writes ``precision.csv/.md`` (contract
``precision``), whose notes are the report's words beside H2 and H3. No registered
seed count or decision changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.exploratory.precision import INPUT_COLUMNS, precision_sentences, precision_table
from analysis.hypotheses.arm_tests import (
    arm_runs,
    confirmatory_form,
    h2_result,
    h3_pairs,
    h3_tests,
)
from analysis.hypotheses.h2_phase import late_minus_early
from analysis.report.study_tables import write_csv_and_markdown
from preregistration.design import expand_design
from preregistration.plan import load_plan, scale_design


def _planned(plan: dict, key: str) -> tuple[float, str, float]:
    """(effect, its source, residual SD) of the registered power analysis of ``key``.

    Without a ``power`` block the effects are ``analysis.exploratory.power.seeds_needed``'s
    defaults (H2: the H3 margin; H3: no difference) and the SD is NaN.
    """
    power = plan.get("power", {})
    sd = float(power.get("variance_components", {}).get("sd_residual", np.nan))
    effect = power.get(key, {}).get("effect")
    if effect is not None:
        return float(effect), f"power.{key}.effect", sd
    if key == "H2":
        return float(plan["hypotheses"]["H3"]["margin"]), "H3 margin", sd
    return 0.0, "no difference", sd


def _registered_h2(plan: dict, scale: str, hyp: dict) -> tuple[int, int]:
    """(seeds, budget levels) the scale registers for H2's early and late conditions."""
    specs = [
        s for s in expand_design(plan, scale)
        if s.arm in hyp["arms"] and s.phase in ("early", "late")
    ]  # fmt: skip
    budgets = {s.pne_budget for s in specs if s.pne_budget is not None}
    return len({s.seed for s in specs}), len(budgets)


def _registered_h3(plan: dict, scale: str, hyp: dict) -> int:
    """Seeds the scale registers for H3's registered pairing (its noise form's runs)."""
    form = confirmatory_form(hyp)
    seeds = {
        s.seed for s in expand_design(plan, scale)
        if s.arm in hyp["arms"] and s.noise.get("form") == form and s.reference
    }  # fmt: skip
    return len(seeds)


def _h2_row(runs: pd.DataFrame, plan: dict, scale: str) -> dict:
    hyp = plan["hypotheses"]["H2"]
    effect, source, sd = _planned(plan, "H2")
    n_seeds, n_budgets = _registered_h2(plan, scale, hyp)
    alpha = float(hyp["alpha"])
    row = {"hypothesis": "H2", "test": hyp["test"], "outcome": hyp["outcome"], "alpha": alpha,
           "alternative": hyp["sidedness"], "margin": np.nan, "effect": effect,
           "effect_source": source, "sd_planned": sd, "n_seeds_registered": n_seeds,
           "n_budgets_registered": n_budgets, "ci_level": 1 - alpha}  # fmt: skip
    data, reason, _ = arm_runs(runs, hyp)
    if not reason:
        reason = h2_result(data, hyp)[-1]
    if reason:
        return row | {"n_runs": 0, "n_units": 0, "method": reason}
    budget, phase = hyp.get("factors", ["pne_budget", "phase"])
    r = late_minus_early(
        data, hyp["outcome"], budget, phase, hyp["block"], alpha, hyp["sidedness"]
    ).iloc[0]
    in_contrast = data[data[phase].fillna("").isin(["early", "late"])]
    return row | {
        "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
        "ci_level": r.ci_level, "n_runs": int(r.n_runs), "n_units": int(r.n_blocks),
        "sd_difference": float(r.se * np.sqrt(r.n_blocks)),
        "n_budgets": int(in_contrast[budget].nunique()), "method": r.method,
    }  # fmt: skip


def _h3_row(runs: pd.DataFrame, plan: dict, scale: str) -> dict:
    hyp = plan["hypotheses"]["H3"]
    effect, source, sd = _planned(plan, "H3")
    alpha, margin = float(hyp["alpha"]), float(hyp["margin"])
    row = {"hypothesis": "H3", "test": hyp["test"], "outcome": hyp["outcome"], "alpha": alpha,
           "alternative": hyp["sidedness"], "margin": margin, "effect": effect,
           "effect_source": source, "sd_planned": np.sqrt(2) * sd,
           "n_seeds_registered": _registered_h3(plan, scale, hyp), "n_budgets": np.nan,
           "n_budgets_registered": np.nan, "ci_level": 1 - 2 * alpha}  # fmt: skip
    tolerance = float(scale_design(plan, scale)["target_tolerance"])
    t3 = h3_tests(runs, hyp, tolerance)
    r = t3[t3["label"] == "confirmatory"].iloc[0]
    if pd.isna(r["p"]):
        return row | {"n_runs": 0, "n_units": 0, "method": str(r["method"])}
    wide, _ = h3_pairs(runs, hyp, hyp["outcome"])
    mine = wide[(wide["reference"] == r["condition_a"]) & (wide["injected"] == r["condition_b"])]
    diffs = (mine["y_reference"] - mine["y_injected"]).to_numpy(dtype=float)
    return row | {
        "estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
        "ci_level": r["ci_level"], "n_runs": 2 * int(r["n_pairs"]), "n_units": int(r["n_pairs"]),
        "sd_difference": float(np.std(diffs, ddof=1)),
        "method": f"{r['method']} ({r['condition_a']} - {r['condition_b']})",
    }  # fmt: skip


def precision_inputs(runs: pd.DataFrame, plan: dict, scale: str) -> pd.DataFrame:
    """``analysis.exploratory.precision.INPUT_COLUMNS`` for H2 and H3 (those the plan has)."""
    builders = {"H2": _h2_row, "H3": _h3_row}
    rows = [
        build(runs, plan, scale) for key, build in builders.items() if key in plan["hypotheses"]
    ]
    return pd.DataFrame(rows).reindex(columns=list(INPUT_COLUMNS))


def write_precision(
    runs: pd.DataFrame, plan_path: str | Path, scale: str, out_dir: str | Path
) -> list[Path]:
    """``precision.csv/.md``: H2's and H3's CI width against what the plan registers, and
    the power of their registered tests at the registered seeds with the runs' SD."""
    plan = load_plan(plan_path)
    n_sim = plan.get("power", {}).get("n_sim")
    seed = int(plan.get("random_seeds", {}).get("analysis", 0))
    table = precision_table(precision_inputs(runs, plan, scale), n_sim=n_sim, random_state=seed)
    notes = precision_sentences(table) + [
        "Exploratory (issue 22, item 5): beside the registered tests of H2 and H3, the width "
        "of the CI each gave against what the plan registers (H3: the equivalence region, 2 "
        "x margin; H2: the smallest late - early contrast of interest of the registered power "
        "analysis), and the power of the registered test at the scale's registered number of "
        "seeds, simulated by the registered power analysis's code with the SD observed in the "
        "runs. No seed count and no decision changes.",
        "sd_difference: SD of the per-seed late - early contrasts (H2) or of the paired "
        "differences (H3); sd_power: the SD the simulation takes (H2: the residual SD, "
        "sd_difference x sqrt(budget levels / 2)); sd_planned: the registered power "
        "analysis's, on the same scale.",
    ]
    title = "Precision achieved and power on the runs: H2 and H3 (exploratory)"
    return write_csv_and_markdown(table, Path(out_dir), "precision", title, notes, "precision")
