"""The precision H2 and H3 achieved and their power on the runs' variance (issue 22, item 5).

Exploratory; changes no decision and no registered seed count. For each of H2 and H3
``precision_table`` reports:

- the width of the confidence interval the registered test gave (H2: the two-sided
  1 - alpha CI of the late - early contrast; H3: the 1 - 2 alpha CI of the paired
  difference) against what the plan registers for it: H3 its equivalence margin, whose
  region (-margin, margin) is 2 x margin wide (a CI wider than that cannot lie inside
  it); H2 registers no margin, but its power analysis names the smallest late - early
  contrast of interest (plan ``power.H2.effect``, the H3 margin), which the width is
  set against;
- the number of included runs and of seeds (H2) or pairs (H3) the test used;
- the power of the registered test at the scale's registered number of seeds,
  simulated by ``analysis.exploratory.power_phase.power_h2`` and
  ``analysis.exploratory.power.power_h3`` (the registered power analysis's code) with
  the SD observed in the runs in place of the pilot's, at the effect the registered
  power analysis assumed.

The SD the simulation takes is that of the per-seed differences the test is computed
from: H3's paired differences directly (``power_h3``'s ``sd_diff``); for H2 the
residual SD that gives the observed SD of the per-seed contrasts d_s, the mean over
L budget levels of late - early: sd(d_s) = sd_resid sqrt(2 / L), so sd_resid =
sd(d_s) sqrt(L / 2) with the L levels observed (``power_h2``'s model).

``precision_sentences`` words each row from its numbers, for the report beside H2 and
H3. Built on ``analysis.exploratory.power``; independent of ``analysis.hypotheses``
(``analysis.report.precision_tables`` computes the inputs with the registered tests).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.exploratory.power import power_h3
from analysis.exploratory.power_phase import power_h2
from analysis.stats.inputs import require_columns, require_frame

# One row per hypothesis: what the registered test gave, and the registered design.
INPUT_COLUMNS = (
    "hypothesis",  # H2 | H3
    "test",  # the plan's test name
    "outcome",  # the outcome column
    "estimate",  # late - early contrast (H2), mean paired difference (H3)
    "ci_low",
    "ci_high",
    "ci_level",  # 1 - alpha (H2), 1 - 2 alpha (H3)
    "alpha",
    "alternative",  # the registered sidedness (power_h2's alternative; H3: equivalence)
    "margin",  # H3's equivalence margin (NaN for H2)
    "n_runs",  # included runs the test used
    "n_units",  # seeds with both phases (H2), pairs (H3)
    "sd_difference",  # SD of the per-seed contrasts (H2) or paired differences (H3)
    "n_budgets",  # H2: budget levels averaged in d_s; H3: NaN
    "n_budgets_registered",  # H2: budget levels of the registered design; H3: NaN
    "n_seeds_registered",  # seeds the scale registers for the test's conditions
    "effect",  # effect the registered power analysis assumed (H2: smallest contrast of
    # interest; H3: the true difference under which equivalence is to be shown)
    "effect_source",  # where ``effect`` comes from (plan key or default)
    "sd_planned",  # the registered power analysis's SD on the scale of ``sd_power``
    "method",  # the test's method, or why it did not run ("not run (...)")
)
COLUMNS = (
    "hypothesis", "test", "outcome", "estimate", "ci_low", "ci_high", "ci_level", "ci_width",
    "reference", "reference_measure", "width_ratio", "n_runs", "n_units", "unit",
    "sd_difference", "sd_power", "sd_planned", "n_seeds_registered", "effect", "effect_source",
    "power", "mc_se", "n_sim", "method",
)  # fmt: skip


def _power(row: pd.Series, sd: float, n_sim: int | None, random_state: int) -> tuple:
    """(power, mc_se, n_sim, why-not) of the registered test at the registered seeds."""
    n = row["n_seeds_registered"]
    if not np.isfinite(sd):
        return np.nan, np.nan, 0, "no observed SD"
    if not np.isfinite(n) or n < 2:
        seeds = int(n) if np.isfinite(n) else 0
        return np.nan, np.nan, 0, f"the scale registers {seeds} seed(s); the test needs 2"
    kwargs = {"random_state": random_state} | ({"n_sim": n_sim} if n_sim else {})
    if row["hypothesis"] == "H2":
        res = power_h2(
            float(row["effect"]), sd, int(n), int(row["n_budgets_registered"]),
            float(row["alpha"]), str(row["alternative"]), **kwargs,
        ).iloc[0]  # fmt: skip
    else:
        res = power_h3(
            sd, float(row["margin"]), int(n), float(row["effect"]), float(row["alpha"]), **kwargs
        ).iloc[0]
    return float(res.power), float(res.mc_se), int(res.n_sim), ""


def precision_table(
    achieved: pd.DataFrame, n_sim: int | None = None, random_state: int = 0
) -> pd.DataFrame:
    """Precision achieved and power on the observed variance, one row per hypothesis.

    Parameters
    ----------
    achieved : pandas.DataFrame
        ``INPUT_COLUMNS``, one row per hypothesis (H2 and/or H3); a row whose test did not
        run has NaN numbers and its reason in ``method``.
    n_sim : int, optional
        Simulated studies per power value (the power functions' default when None).
    random_state : int
        Seed of the simulations.

    Returns
    -------
    pandas.DataFrame
        ``COLUMNS`` (contract ``precision``): ``ci_width`` = ci_high - ci_low;
        ``reference`` the width it is set against (H3: 2 x margin; H2: ``effect``, the
        smallest contrast of interest), named in ``reference_measure``; ``width_ratio`` =
        ci_width / reference; ``unit`` seeds (H2) or pairs (H3); ``sd_power`` the SD
        the power simulation takes (H2: sd_difference sqrt(n_budgets / 2); H3:
        sd_difference); ``power``, ``mc_se``, ``n_sim`` of the registered test at
        ``n_seeds_registered`` seeds (NaN, with the reason in ``method``, when the test
        did not run or the scale registers fewer than 2 seeds).

    Examples
    --------
    >>> row = dict(hypothesis="H3", test="paired_tost", outcome="icl_auc", estimate=0.0,
    ...     ci_low=-0.01, ci_high=0.01, ci_level=0.9, alpha=0.05, alternative="equivalence",
    ...     margin=0.02, n_runs=26, n_units=13, sd_difference=0.001, n_budgets=np.nan,
    ...     n_budgets_registered=np.nan, n_seeds_registered=13, effect=0.0,
    ...     effect_source="power.H3.effect", sd_planned=0.02, method="paired TOST")
    >>> out = precision_table(pd.DataFrame([row]), n_sim=200).iloc[0]
    >>> float(out.width_ratio), float(out.power)
    (0.5, 1.0)
    """
    func = "precision_table"
    require_frame(achieved, func)
    require_columns(achieved, list(INPUT_COLUMNS), func)
    unknown = set(achieved["hypothesis"]) - {"H2", "H3"}
    if unknown:
        raise ValueError(f"{func}: rows for H2 and H3 only, got {sorted(unknown)}")
    rows = []
    for _, r in achieved.iterrows():
        h2 = r["hypothesis"] == "H2"
        out = {c: r[c] for c in COLUMNS if c in INPUT_COLUMNS}
        out["ci_width"] = float(r["ci_high"] - r["ci_low"])
        if h2:
            out["reference"] = float(r["effect"])
            out["reference_measure"] = f"smallest contrast of interest ({r['effect_source']})"
            out["unit"] = "seeds"
            out["sd_power"] = float(r["sd_difference"] * np.sqrt(r["n_budgets"] / 2))
        else:
            out["reference"] = 2 * float(r["margin"])
            out["reference_measure"] = "2 x margin (the equivalence region's width)"
            out["unit"] = "pairs"
            out["sd_power"] = float(r["sd_difference"])
        out["width_ratio"] = out["ci_width"] / out["reference"] if out["reference"] > 0 else np.nan
        power, mc_se, n, why = _power(r, out["sd_power"], n_sim, random_state)
        out |= {"power": power, "mc_se": mc_se, "n_sim": n}
        if why and not str(r["method"]).startswith("not run"):
            out["method"] = f"{r['method']}; power not computed ({why})"
        rows.append(out)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for c in ("n_runs", "n_units", "n_seeds_registered", "n_sim"):
        table[c] = pd.to_numeric(table[c]).fillna(0).astype(int)
    return table


def _num(value: float) -> str:
    """Three significant digits (the words' numbers; the CSV keeps full precision)."""
    return f"{float(value):.3g}"


def precision_sentence(row: pd.Series) -> str:
    """One row of ``precision_table`` in words, every number taken from the row."""
    h = row["hypothesis"]
    if str(row["method"]).startswith("not run") or not np.isfinite(row["ci_width"]):
        return f"{h}: {row['method']}; no precision or power from the runs."
    what = "late - early contrast" if h == "H2" else "paired TOST"
    level = f"{100 * float(row['ci_level']):g} %"
    text = (
        f"{h} ({what} of {row['outcome']}, {row['n_units']} {row['unit']}, {row['n_runs']} "
        f"runs): {level} CI width {_num(row['ci_width'])} against "
    )
    if h == "H3":
        margin = float(row["reference"]) / 2
        text += f"the equivalence region's {_num(row['reference'])} (2 x margin {_num(margin)})"
    else:
        text += f"the {row['reference_measure']} {_num(row['reference'])}"
    text += f", ratio {_num(row['width_ratio'])}; "
    sd = "SD of the paired differences" if h == "H3" else "residual SD"
    if not np.isfinite(row["power"]):
        why = str(row["method"]).rsplit("power not computed (", 1)[-1].rstrip(")")
        return text + f"power at the registered seeds not computed ({why})."
    seeds = f"the registered {row['n_seeds_registered']} seeds"
    planned = (
        f" (the registered power analysis assumed {_num(row['sd_planned'])})"
        if np.isfinite(row["sd_planned"])
        else ""
    )
    effect = "no true difference" if h == "H3" and row["effect"] == 0 else (
        f"a true {'difference' if h == 'H3' else 'contrast'} of {_num(row['effect'])}"
    )  # fmt: skip
    return text + (
        f"power at {seeds} with the observed {sd} {_num(row['sd_power'])}{planned}, under "
        f"{effect}: {_num(row['power'])} (Monte-Carlo SE {_num(row['mc_se'])})."
    )


def precision_sentences(table: pd.DataFrame) -> list[str]:
    """The report's words beside H2 and H3: one sentence per row of ``precision_table``."""
    return [precision_sentence(row) for _, row in table.iterrows()]
