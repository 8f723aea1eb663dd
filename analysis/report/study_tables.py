"""The study's tables, regenerated from the runs table and the plan (DESIGN §5).

``build_tables`` writes under ``out_dir`` (CSV at full precision, Markdown rounded
for people); every CSV is written through its contract in
``preregistration/report_tables.py``, named in brackets:

- ``h1.csv/.md``              every H1 analysis (confirmatory slope, exploratory rest) [h1]
- ``t1_confirmatory.csv/.md`` one row per test [tests];
                              Holm over the registered family, registered decisions
- ``t2_inventory.csv/.md``    every run, excluded ones included with their reason [inventory]
- ``t3_equivalence.csv/.md``  H3 paired TOSTs (ICL, and final loss as control) [equivalence]
- ``t4_loss_matching.csv/.md`` loss-matching control: TOST of each condition's
                              final loss against target +- tolerance [loss_matching]

Excluded runs never enter a test. A hypothesis whose registered arms have no
included run is reported as "not run (no runs of arm X)", or "not run (all N runs
of arm X excluded: ...)" when they exist but a registered rule excluded them. Each
test uses only its registered arms' runs (``analysis.hypotheses.arm_tests``). Only the plan's
hypotheses are confirmatory and only its controls are controls; every other row is
labelled exploratory.

CLI: ``python -m analysis.report.study_tables --runs R --plan P --scale S --out DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.hypotheses.arm_tests import (
    EQUIVALENCE_COLUMNS,
    arm_runs,
    confirmatory_form,
    h2_result,
    h3_result,
    h3_tests,
)
from analysis.hypotheses.h1_monotonicity import H1_COLUMNS, h1_summary
from analysis.hypotheses.h3_equivalence import tost_against_target
from analysis.hypotheses.h4_tradeoff import memorization_slope
from analysis.report.formatting import format_value
from analysis.stats.multiplicity import holm
from preregistration.design import expand_design
from preregistration.plan import (
    REGISTERED_FIELDS,
    PlanError,
    decide,
    load_plan,
    registered_tests,
    resolve_margin,
    scale_design,
)
from preregistration.tables import columns, read_table, validate, write_table

INVENTORY_COLUMNS = columns("inventory")  # T2


def _confirmatory(key: str, hyp: dict, runs: pd.DataFrame, h1: pd.DataFrame, t3) -> tuple:
    """(estimate, ci_low, ci_high, p, n_runs, reason) of one registered hypothesis.

    ``runs`` is the whole runs table: each test takes the included runs of its
    registered arms (``analysis.hypotheses.arm_tests.arm_runs``).
    """
    data, reason, _ = arm_runs(runs, hyp)
    if reason:
        return np.nan, np.nan, np.nan, np.nan, 0, reason
    if key == "H1":
        r = h1[h1["label"] == "confirmatory"].iloc[0]
        return r.estimate, r.ci_low, r.ci_high, r.p, int(r.n_runs), None
    if hyp["test"] == "mixed_effects_slope":
        exposure = str(hyp["predictor"])[4:-1]
        r = memorization_slope(
            data, hyp["outcome"], exposure, hyp.get("covariates", []), hyp["random_effect"],
            hyp["sidedness"], float(hyp["alpha"]),
        ).iloc[0]  # fmt: skip
        return r.slope, r.ci_low, r.ci_high, r.p, int(r.n_runs), None
    if hyp["test"] == "two_way_anova_late_minus_early":
        return h2_result(data, hyp)
    if hyp["test"] == "paired_tost":
        return h3_result(t3)
    raise PlanError(f"plan: hypotheses.{key}.test {hyp['test']!r} has no implementation")


def tests_table(
    runs: pd.DataFrame,
    plan: dict,
    scale: str,
    h1: pd.DataFrame,
    t4: pd.DataFrame,
    t3: pd.DataFrame,
) -> pd.DataFrame:
    """Table T1 (schema TESTS): registered hypotheses and controls, then exploratory rows.

    The registered fields of each row come from ``preregistration.plan.registered_tests``;
    decisions from ``preregistration.plan.decide`` (the plan's ``supported_if``).
    """
    registered = registered_tests(plan, scale)
    rows = []
    for reg in registered.to_dict("records"):
        key = reg["hypothesis"]
        row = {k: reg[k] for k in ["hypothesis", *REGISTERED_FIELDS]}
        if reg["label"] == "confirmatory":
            hyp = plan["hypotheses"][key]
            est, low, high, p, n, reason = _confirmatory(key, hyp, runs, h1, t3)
        else:
            arms = reg["arms"].split(",")
            sub = t4[t4["arm"].isin(arms)].dropna(subset=["p"])
            _, why, _ = arm_runs(runs, {"arms": arms})
            if why:
                est = low = high = p = np.nan
                n, reason = 0, why
            elif len(sub):
                worst = sub.loc[sub["p"].idxmax()]  # intersection-union over conditions
                est, low, high, p = worst.estimate, worst.ci_low, worst.ci_high, worst.p
                n, reason = int(sub["n_runs"].sum()), None
            else:
                est = low = high = p = np.nan
                n, reason = 0, f"not run (no condition of arm(s) {reg['arms']} with >= 2 runs)"
        row |= {"estimate": est, "ci_low": low, "ci_high": high, "p": p, "n_runs": n}
        row["decision"] = reason or ""
        rows.append(row)
    alpha = float(plan["hypotheses"]["H1"]["alpha"])
    for r in h1[h1["label"] == "exploratory"].itertuples():
        rows.append(
            {
                "hypothesis": f"H1 {r.analysis}",
                "label": "exploratory",
                "test": r.analysis,
                "outcome": r.outcome,
                "sidedness": r.alternative,
                "alpha": alpha,
                "margin": np.nan,
                "family": "",
                "estimate": r.estimate,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p": r.p,
                "n_runs": int(r.n_runs),
                "decision": "exploratory",
            }  # fmt: skip
        )
    rows += _h3_exploratory_rows(t3, plan)
    correction = plan["correction"]
    t1 = pd.DataFrame(rows)
    in_family = t1["family"] == correction["name"]
    adjusted = holm(t1[in_family], members=list(correction["family"]))["p_holm"]
    t1["p_holm"] = np.nan
    t1.loc[in_family, "p_holm"] = adjusted
    for i, r in t1.iterrows():
        if not r["decision"]:
            t1.at[i, "decision"] = decide(plan, r)
    t1["n_runs"] = t1["n_runs"].astype(int)
    return validate(t1, "tests")[columns("tests")]


def _h3_exploratory_rows(t3: pd.DataFrame, plan: dict) -> list[dict]:
    """T1 rows of H3's pairings of the unregistered noise forms (exploratory, no family)."""
    hyp = plan["hypotheses"].get("H3")
    rows = []
    for r in t3[(t3["label"] == "exploratory") & t3["p"].notna()].itertuples(index=False):
        rows.append({
            "hypothesis": f"H3 {r.noise_form}", "label": "exploratory", "test": hyp["test"],
            "outcome": r.outcome, "sidedness": hyp["sidedness"], "alpha": float(hyp["alpha"]),
            "margin": r.margin, "family": "", "estimate": r.estimate, "ci_low": r.ci_low,
            "ci_high": r.ci_high, "p": r.p, "n_runs": int(2 * r.n_pairs),
            "decision": "exploratory",
        })  # fmt: skip
    return rows


def equivalence_table(runs: pd.DataFrame, plan: dict, margin_loss: float) -> pd.DataFrame:
    """Table T3: each H3 pairing's paired TOST on ICL, and on final loss (control)."""
    hyp = plan["hypotheses"].get("H3")
    if hyp is None:
        return pd.DataFrame(columns=EQUIVALENCE_COLUMNS)
    return h3_tests(runs, hyp, margin_loss)


def loss_matching_table(included: pd.DataFrame, plan: dict, design: dict) -> pd.DataFrame:
    """Table T4: each condition's final loss against target +- tolerance (one-sample TOST)."""
    control = plan.get("controls", {}).get("loss_matching", {})
    alpha = float(control.get("alpha", 0.05))
    dv = control.get("outcome", "final_val_loss")
    if included.empty:
        return pd.DataFrame(columns=["condition", "arm", "n_runs", "p"])
    parts = []
    for arm, sub in included.groupby("arm", sort=False):  # a condition may recur in two arms
        # an arm whose scale block registers its own target (the regression family's
        # squared error) is held to that target and tolerance, as its runs were trained
        block = design.get("arms", {}).get(arm)
        own = design | block if isinstance(block, dict) else design
        arm_margin = resolve_margin(control.get("margin", "target_tolerance"), own)
        target = float(own["target_val_loss"])
        part = tost_against_target(sub, dv, target, arm_margin, alpha=alpha)
        part.insert(1, "arm", arm)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def inventory_table(runs: pd.DataFrame, plan: dict, scale: str) -> tuple[pd.DataFrame, list]:
    """Table T2: every run (excluded ones with reason), in design order; and missing runs."""
    specs = expand_design(plan, scale)
    order: dict[str, int] = {}
    for i, s in enumerate(specs):  # first place: a reference condition recurs in a later arm
        order.setdefault(s.condition, i)
    registered = {(s.condition, s.seed) for s in specs}
    t2 = runs.copy()
    t2["in_design"] = [(c, s) in registered for c, s in zip(t2.condition, t2.seed, strict=True)]
    t2["_order"] = t2["condition"].map(order).fillna(len(order))
    t2 = t2.sort_values(["_order", "condition", "seed"], kind="mergesort")
    seen = set(zip(runs.condition, runs.seed, strict=True))
    missing = sorted(f"{c}_s{s}" for c, s in registered - seen)
    return t2[INVENTORY_COLUMNS].reset_index(drop=True), missing


def markdown(df: pd.DataFrame, title: str, notes: list[str] = ()) -> str:
    """A table for people: each cell by ``analysis.report.formatting.format_value`` (4 significant
    digits, 3 below 1e-3, NaN as '–', bools as yes/no)."""
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = df.itertuples(index=False)
    body = ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
    return "\n".join([f"# {title}", "", head, rule, *body, "", *[f"- {n}" for n in notes], ""])


def write_csv_and_markdown(
    df: pd.DataFrame,
    out_dir: Path,
    stem: str,
    title: str,
    notes: list[str],
    table: str,
    plan: dict | None = None,
) -> list[Path]:
    """Write ``stem``.csv (full precision, validated as the contract ``table``) and
    ``stem``.md (rounded, for people) under ``out_dir``."""
    out_dir = Path(out_dir)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_table(df, table, csv, plan=plan)
    shown = df.copy()
    if "plan_hash" in shown:  # the CSV keeps the full SHA-256
        shown["plan_hash"] = shown["plan_hash"].str.slice(0, 12)
    md.write_text(markdown(shown, title, notes))
    return [csv, md]


def build_tables(
    runs_path: str | Path,
    plan_path: str | Path,
    scale: str,
    out_dir: str | Path,
    n_boot: int = 2000,
    n_perm: int = 999,
    random_state: int | None = None,
) -> list[Path]:
    """Write tables H1, T1-T4 (CSV and Markdown) under ``out_dir``; return their paths.

    ``random_state`` seeds every bootstrap and permutation (default: the plan's
    ``random_seeds.analysis``), so the tables are deterministic.
    """
    plan = load_plan(plan_path)
    design = scale_design(plan, scale, plan_path)
    if random_state is None:
        random_state = int(plan.get("random_seeds", {}).get("analysis", 0))
    runs = read_table(runs_path, "runs", plan=plan)
    included = runs[~runs["excluded"].astype(bool)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    h1_hyp = plan["hypotheses"]["H1"]
    h1_data, reason, _ = arm_runs(runs, h1_hyp)
    if reason:
        h1 = pd.DataFrame([{"hypothesis": "H1", "label": "confirmatory", "method": reason}])
        h1 = h1.reindex(columns=H1_COLUMNS)
    else:
        h1 = h1_summary(h1_data, h1_hyp, n_boot=n_boot, n_perm=n_perm, random_state=random_state)
    tolerance = float(design["target_tolerance"])
    t4 = loss_matching_table(included, plan, design)
    t3 = equivalence_table(runs, plan, tolerance)
    t1 = tests_table(runs, plan, scale, h1, t4, t3)
    t2, missing = inventory_table(runs, plan, scale)
    excluded_notes = [
        f"{key}: {note} (included runs only)."
        for key, hyp in {**plan["hypotheses"], **plan.get("controls", {})}.items()
        if (note := arm_runs(runs, hyp)[2])
    ]

    alpha = float(h1_hyp["alpha"])
    paths = []
    paths += write_csv_and_markdown(h1, out_dir, "h1", f"H1: {h1_hyp['statement']}", [
        f"n runs: {int(h1['n_runs'].max()) if h1['n_runs'].notna().any() else 0} included runs "
        f"of arm(s) {', '.join(h1_hyp['arms'])} ({int(runs['excluded'].sum())} excluded).",
        "confirmatory: the registered test (plan hypotheses.H1), p one-sided "
        f"({h1_hyp['sidedness']}), CI two-sided {1 - alpha:.0%}; Holm-adjusted p in T1.",
        "exploratory: not registered as a test; companions the plan lists as exploratory.",
    ], table="h1")  # fmt: skip
    paths += write_csv_and_markdown(t1, out_dir, "t1_confirmatory", "T1: statistical tests", [
        f"Holm over the registered family {plan['correction']['family']}; a member not run "
        "enters with p = 1 so the family size stays as registered.",
        "Decisions follow each hypothesis' registered decision criterion.",
        "Each test uses the included runs of its registered arms only (plan `arms`).",
        f"H3: the pairing of noise form {confirmatory_form(plan['hypotheses']['H3'])!r} with "
        "its reference runs is the registered test; the other forms' pairings are "
        "exploratory rows (details in T3). loss_matching: the condition with the largest "
        "TOST p (details in T4).",
        "Rows labelled exploratory are not registered tests; their p are not corrected.",
        *excluded_notes,
    ], table="tests")  # fmt: skip
    paths += write_csv_and_markdown(t2, out_dir, "t2_inventory", "T2: run inventory", [
        f"{len(runs)} runs, {int(runs['excluded'].sum())} excluded by a registered rule.",
        "Registered runs without a record: " + (", ".join(missing) if missing else "none") + ".",
    ], table="inventory", plan=plan)  # fmt: skip
    paths += write_csv_and_markdown(t3, out_dir, "t3_equivalence", "T3: equivalence tests (H3)", [
        "Paired TOST of each injected run with its reference run (same seed); estimate "
        "reference - injected; CI at 1 - 2 alpha (90%) against +- margin.",
        "final_val_loss rows: loss-matching control of each pairing (margin: target tolerance).",
    ], table="equivalence")  # fmt: skip
    paths += write_csv_and_markdown(t4, out_dir, "t4_loss_matching", "T4: loss matching", [
        f"One-sample TOST of each condition's final validation loss against the target "
        f"{design['target_val_loss']} +- {tolerance} (plan controls.loss_matching), "
        "included runs only; CI at 90%.",
    ], table="loss_matching")  # fmt: skip
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="runs table (Parquet or CSV)")
    parser.add_argument("--plan", required=True, help="preregistration/plan.yaml")
    parser.add_argument("--scale", required=True, help="scale of the design (smoke, cpu, gpu)")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    for path in build_tables(args.runs, args.plan, args.scale, args.out):
        print(path)


if __name__ == "__main__":
    main()
