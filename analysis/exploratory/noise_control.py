"""How well each run of the causal arms met its registered noise (issue 10, items 1 and 3).

One row per run with added noise (``noise_form`` other than ``none``), from the
runs table (whose noise-control columns come from each run's ``meta.json``):

- ``tracking_ok``: median per-window tracking error <= 10 % (issue 10 item 1);
- ``ratio_ok``: integrated P-NE* at the stop within 5 % of the reference run's,
  |r - 1| <= 0.05 with r = ``pne_star_ratio_reference``;
- ``budget_vs_other_phases`` = b_i / mean_{j != i} b_j - 1, with b the realised
  budgets of the runs of the same seed and budget level in the other phases, and
  ``phase_budget_ok``: |budget_vs_other_phases| <= 5 % (issue 10 item 3: the
  realised budgets of the three phases at one level agree within 5 %).

A check without its quantity (no controller, no reference, no phase) is missing,
not passed. Excluded runs are listed with their flag set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats.inputs import require_columns, require_frame
from preregistration.tables import columns

TRACKING_LIMIT = 0.10  # median per-window tracking error (issue 10 item 1)
RATIO_LIMIT = 0.05  # integrated P-NE* at the stop against the reference (item 1)
PHASE_BUDGET_LIMIT = 0.05  # realised budgets of the phases of one level (item 3)
NOISE_CONTROL_COLUMNS = columns("noise_control")


def _flag(value: pd.Series, ok: pd.Series) -> pd.Series:
    """``ok`` where ``value`` is known, missing (None) where it is not."""
    return pd.Series(np.where(value.notna(), ok, None), index=value.index, dtype=object)


def budget_vs_other_phases(runs: pd.DataFrame, block: str = "seed") -> pd.Series:
    """b_i / mean of the other phases' b at the same ``block`` and budget level - 1.

    NaN for a run without phase or realised budget, or alone at its level.
    """
    out = pd.Series(np.nan, index=runs.index)
    phased = runs[(runs["phase"].fillna("") != "") & runs["realised_budget"].notna()]
    for _, group in phased.groupby([block, "pne_budget"]):
        b = group["realised_budget"].to_numpy(dtype=float)
        if len(b) < 2:
            continue
        others = (b.sum() - b) / (len(b) - 1)
        out.loc[group.index] = b / others - 1
    return out


def noise_control_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The noise-control table (contract ``noise_control``) of the runs with added noise.

    Examples
    --------
    >>> import pandas as pd
    >>> runs = pd.DataFrame({
    ...     "run_id": ["a", "b", "c"], "arm": "phase_schedule", "condition": ["e", "m", "l"],
    ...     "seed": 0, "noise_form": "gaussian", "phase": ["early", "mid", "late"],
    ...     "pne_budget": 1.0, "excluded": False, "tracking_error_median": 0.03,
    ...     "pne_star_ratio_reference": float("nan"), "realised_budget": [1.0, 1.0, 1.1]})
    >>> noise_control_table(runs)["phase_budget_ok"].tolist()
    [True, True, False]
    """
    func = "noise_control_table"
    require_frame(runs, func)
    need = ["run_id", "arm", "condition", "seed", "noise_form", "phase", "pne_budget"]
    need += ["excluded", "tracking_error_median", "pne_star_ratio_reference", "realised_budget"]
    require_columns(runs, need, func)
    data = runs[runs["noise_form"] != "none"].copy()
    data["budget_vs_other_phases"] = budget_vs_other_phases(data)
    tracking, ratio = data["tracking_error_median"], data["pne_star_ratio_reference"]
    deviation = data["budget_vs_other_phases"]
    data["tracking_ok"] = _flag(tracking, tracking <= TRACKING_LIMIT)
    data["ratio_ok"] = _flag(ratio, (ratio - 1).abs() <= RATIO_LIMIT)
    data["phase_budget_ok"] = _flag(deviation, deviation.abs() <= PHASE_BUDGET_LIMIT)
    data["excluded"] = data["excluded"].astype(bool)
    return data[NOISE_CONTROL_COLUMNS].reset_index(drop=True)


def summary_notes(table: pd.DataFrame) -> list[str]:
    """Lines for the Markdown copy: per arm and form the tracking error, the realised
    budgets and the failed checks."""
    notes = [
        f"Checks: tracking error <= {TRACKING_LIMIT:.0%}; integrated P-NE* within "
        f"{RATIO_LIMIT:.0%} of the reference; realised phase budgets of one seed and level "
        f"within {PHASE_BUDGET_LIMIT:.0%} of the other phases' mean. '–': not applicable.",
    ]
    for (arm, form), sub in table.groupby(["arm", "noise_form"], sort=True):
        te = sub["tracking_error_median"].dropna()
        failed = {
            c: int((sub[c] == False).sum())  # noqa: E712 (object column with None)
            for c in ("tracking_ok", "ratio_ok", "phase_budget_ok")
        }
        line = f"{arm}, {form}: {len(sub)} run(s)"
        if len(te):
            line += f", median tracking error {te.median():.3g} (max {te.max():.3g})"
        budget = sub["realised_budget"].dropna()
        if len(budget):
            line += f", realised budget {budget.min():.3g}-{budget.max():.3g} of the registered"
        line += "; failed: " + (", ".join(f"{c} x{n}" for c, n in failed.items() if n) or "none")
        notes.append(line + ".")
    if table.empty:
        notes.append("No run with added noise in the runs table.")
    return notes
