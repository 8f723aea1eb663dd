"""Which runs each registered test uses, and the tests of the causal arms (H2, H3).

A registered test uses the included runs of the arms the plan lists for it
(``hypotheses.<H>.arms``, ``controls.<C>.arms``) and no other: H1, H4 and loss
matching the batch sweep, H2 the phase schedules, H3 the noise injection.
``arm_runs`` selects them and says why a test cannot run (no runs of an arm, or
all of them excluded, naming the rules).

H3 (plan ``hypotheses.H3``, DESIGN §5): every injected run of the arm is paired
with its registered reference run (``reference_run``, the small-batch run of the
same seed); one paired TOST per pairing (injected condition, reference condition),
the difference reference - injected against +-margin. The pairing of the
registered noise form (``confirmatory_form``) is the confirmatory test; the other
forms' pairings are exploratory rows. A pair whose reference is excluded or
missing leaves the test, and the table says how many did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.hypotheses.h2_phase import late_minus_early
from analysis.hypotheses.h3_equivalence import paired_tost
from preregistration.tables import columns

EQUIVALENCE_COLUMNS = columns("equivalence")
# The confirmatory noise form of H3 when the plan does not name one: the Gaussian
# diagonal form, the first form of DESIGN §3 and the confirmatory one of issue 10.
DEFAULT_H3_FORM = "gaussian"
PAIR_METHOD = "paired TOST, injected run with its reference run (pingouin tost, paired=True)"


def _counts(frame: pd.DataFrame) -> str:
    reasons = frame["exclusion_reason"].value_counts()
    return ", ".join(f"{r} x{n}" for r, n in reasons.items())


def arm_runs(runs: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, str | None, str]:
    """Included runs of the arms of a registered test, why it cannot run, and a note.

    Returns ``(data, reason, note)``: ``reason`` is ``None`` when every registered
    arm has included runs, else "not run (no runs of arm X)" or "not run (all N
    runs of arm X excluded: rule xN)"; ``note`` counts the excluded runs of the
    arms ('' when none).
    """
    arms = list(spec.get("arms", []))
    if not arms:
        return runs.iloc[0:0], "not run (the plan lists no arm for it)", ""
    excluded = runs["excluded"].astype(bool)
    mine = runs["arm"].isin(arms)
    absent = [a for a in arms if not (runs["arm"] == a).any()]
    if absent:
        return runs.iloc[0:0], f"not run (no runs of arm {', '.join(absent)})", ""
    gone = [a for a in arms if not ((runs["arm"] == a) & ~excluded).any()]
    if gone:
        sub = runs[runs["arm"].isin(gone)]
        why = f"all {len(sub)} runs of arm {', '.join(gone)} excluded: {_counts(sub)}"
        return runs.iloc[0:0], f"not run ({why})", ""
    out = runs[mine & ~excluded]
    dropped = runs[mine & excluded]
    note = f"{len(dropped)} of {int(mine.sum())} runs excluded ({_counts(dropped)})"
    return out, None, note if len(dropped) else ""


def confirmatory_form(hypothesis: dict) -> str:
    """The noise form whose pairing is H3's registered test (``noise_form`` of the plan's
    hypothesis; ``DEFAULT_H3_FORM`` when it names none)."""
    return str(hypothesis.get("noise_form", DEFAULT_H3_FORM))


def h3_pairs(runs: pd.DataFrame, hypothesis: dict, dv: str) -> tuple[pd.DataFrame, int]:
    """Wide table of H3's complete pairs, and the number of pairs left out.

    One row per pair: ``pair`` (the injected run_id), ``seed``, ``noise_form`` (the
    injected run's), ``reference`` and ``injected`` (their conditions), ``y_reference``
    and ``y_injected`` (their ``dv``). Injected runs are the included runs of the
    hypothesis' arms that name a ``reference_run``; a pair is left out when its
    reference run is not among the included ``runs`` (excluded, or not recorded).
    """
    included = runs[~runs["excluded"].astype(bool)]
    arms = list(hypothesis["arms"])
    inj = included[included["arm"].isin(arms) & (included["reference_run"].fillna("") != "")]
    by_id = included.set_index("run_id")
    rows, left_out = [], 0
    for r in inj.itertuples(index=False):
        if r.reference_run not in by_id.index:
            left_out += 1
            continue
        ref = by_id.loc[r.reference_run]
        rows.append({
            "pair": r.run_id, "seed": int(r.seed), "noise_form": r.noise_form,
            "reference": ref["condition"], "injected": r.condition,
            "y_reference": float(ref[dv]), "y_injected": float(getattr(r, dv)),
        })  # fmt: skip
    cols = ["pair", "seed", "noise_form", "reference", "injected", "y_reference", "y_injected"]
    return pd.DataFrame(rows, columns=cols), left_out


def _pairing_tost(wide: pd.DataFrame, dv: str, margin: float, alpha: float) -> pd.Series:
    """``paired_tost`` of one pairing's wide pairs (reference - injected)."""
    ref, inj = wide["reference"].iloc[0], wide["injected"].iloc[0]
    long = pd.concat([
        pd.DataFrame({"pair": wide["pair"], "condition": ref, dv: wide["y_reference"]}),
        pd.DataFrame({"pair": wide["pair"], "condition": inj, dv: wide["y_injected"]}),
    ])  # fmt: skip
    return paired_tost(long, dv, (ref, inj), margin, subject="pair", alpha=alpha).iloc[0]


def h3_tests(runs: pd.DataFrame, hypothesis: dict, margin_loss: float) -> pd.DataFrame:
    """Table T3: per H3 pairing the paired TOST on the outcome and on final loss.

    Labels: ``confirmatory`` for the outcome of the registered form's pairing,
    ``exploratory`` for the other forms', ``control`` for the final-loss TOSTs
    (margin ``margin_loss``, the target tolerance). Estimates are reference -
    injected. ``runs`` is the whole runs table (excluded runs are left out here).
    """
    dv, margin = hypothesis["outcome"], float(hypothesis["margin"])
    alpha = float(hypothesis["alpha"])
    form = confirmatory_form(hypothesis)
    base = {"hypothesis": "H3", "outcome": dv, "margin": margin}
    _, reason, _ = arm_runs(runs, hypothesis)
    if reason:
        row = base | {"label": "confirmatory", "noise_form": form, "method": reason}
        return pd.DataFrame([row]).reindex(columns=EQUIVALENCE_COLUMNS)
    rows = []
    for outcome, delta in ((dv, margin), ("final_val_loss", margin_loss)):
        wide, left_out = h3_pairs(runs, hypothesis, outcome)
        method = PAIR_METHOD + (
            f"; {left_out} pair(s) without an included reference run left out" if left_out else ""
        )
        order = sorted(
            wide.groupby(["noise_form", "reference", "injected"]).groups,
            key=lambda k: (k[0] != form, k),
        )
        for noise_form, ref, inj in order:
            mine = wide[(wide["reference"] == ref) & (wide["injected"] == inj)]
            label = "confirmatory" if noise_form == form else "exploratory"
            info = {"hypothesis": "H3", "label": label if outcome == dv else "control"}
            info |= {"noise_form": noise_form, "outcome": outcome, "margin": delta}
            info |= {"condition_a": ref, "condition_b": inj, "n_pairs": len(mine)}
            if len(mine) < 2:
                rows.append(info | {"method": f"not run ({len(mine)} pair(s); the TOST needs 2)"})
                continue
            res = _pairing_tost(mine, outcome, delta, alpha)
            rows.append(res.to_dict() | info | {"method": method})
    t3 = pd.DataFrame(rows).reindex(columns=EQUIVALENCE_COLUMNS)
    if not (t3["label"] == "confirmatory").any():
        why = f"not run (no included pair of noise form {form!r})"
        row = base | {"label": "confirmatory", "noise_form": form, "method": why}
        t3 = pd.concat([pd.DataFrame([row]).reindex(columns=EQUIVALENCE_COLUMNS), t3])
    return t3.reset_index(drop=True)


def h3_result(t3: pd.DataFrame) -> tuple:
    """(estimate, ci_low, ci_high, p, n_runs, reason) of H3's registered pairing in T3."""
    row = t3[t3["label"] == "confirmatory"].iloc[0]
    if pd.isna(row["p"]):
        return np.nan, np.nan, np.nan, np.nan, 0, str(row["method"])
    return row["estimate"], row["ci_low"], row["ci_high"], row["p"], int(2 * row["n_pairs"]), None


def h2_result(data: pd.DataFrame, hypothesis: dict) -> tuple:
    """(estimate, ci_low, ci_high, p, n_runs, reason) of H2's late - early contrast."""
    budget, phase = hypothesis.get("factors", ["pne_budget", "phase"])
    sub = data[data[phase].fillna("").isin(["early", "late"])]
    seeds = sub.groupby(hypothesis["block"])[phase].nunique()
    if int((seeds == 2).sum()) < 2:
        return np.nan, np.nan, np.nan, np.nan, 0, (
            f"not run ({int((seeds == 2).sum())} seed(s) with both early and late runs; "
            "the contrast needs 2)"
        )  # fmt: skip
    r = late_minus_early(
        data, hypothesis["outcome"], budget, phase, hypothesis["block"], float(hypothesis["alpha"]),
        hypothesis["sidedness"],
    ).iloc[0]  # fmt: skip
    return r.estimate, r.ci_low, r.ci_high, r.p, int(r.n_runs), None
