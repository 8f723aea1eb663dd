"""Run-level summaries of a scores table: the score columns of the runs table.

The scores table (one row per run, measure and shots; ``preregistration.tables``
SCORES) is what training's scoring writes; the runs table's ``icl_auc``,
``icl_acc_*``, ``fact_recall``, ``in_weights_accuracy``, ``memorization`` and
``induction_score`` are these functions of it. They live in the root layer because
both sides of the exchange depend on the definition: the analysis computes them
when it collects runs, and anyone feeding released traces must get the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def icl_auc(shots: list[int], accuracy: list[float]) -> float:
    """Trapezoid area under accuracy vs log2(1 + shots), divided by the x-range: in [0, 1]."""
    x = np.log2(1 + np.asarray(shots, dtype=float))
    y = np.asarray(accuracy, dtype=float)
    order = np.argsort(x)
    return float(np.trapezoid(y[order], x[order]) / (x.max() - x.min()))


def summarize_scores(scores: pd.DataFrame) -> dict[str, float]:
    """Run-level summaries of a scores table (the score columns of the runs table).

    memorization = (fact_recall + in_weights_accuracy) / 2; ``icl_auc`` needs at
    least two shot counts (NaN otherwise); a measure the table lacks is NaN.
    """
    icl = scores[scores.measure == "icl_accuracy"].sort_values("shots")
    one = scores.set_index("measure")["value"]
    fact, iw = float(one.get("fact_recall", np.nan)), float(one.get("in_weights_accuracy", np.nan))
    return {
        "icl_auc": icl_auc(icl.shots.tolist(), icl.value.tolist()) if len(icl) > 1 else np.nan,
        "icl_acc_max_shots": float(icl.value.iloc[-1]) if len(icl) else np.nan,
        "icl_acc_zero_shot": float(icl[icl.shots == 0].value.mean()) if len(icl) else np.nan,
        "fact_recall": fact,
        "in_weights_accuracy": iw,
        "memorization": (fact + iw) / 2,
        "induction_score": float(one.get("induction_score", np.nan)),
    } | regression_summaries(scores)


def regression_summaries(scores: pd.DataFrame) -> dict[str, float]:
    """ICL summaries of an in-context regression run (``training.regression.scores``).

    Over the shots k = 1 .. k_max - 1 (k = 0 has no demonstration), with e_m(k) the
    model's squared error, e_r(k) Bayes ridge's and e_0(k) the zero predictor's:

    - ``reg_excess_area`` = mean_k [e_m(k) - e_r(k)], the excess error over the
      Bayes-optimal predictor; >= 0 up to sampling error, lower is better ICL;
    - ``reg_icl_area`` = 1 - sum_k [e_m(k) - e_r(k)] / sum_k [e_0(k) - e_r(k)], the share
      of the prior-mean predictor's excess error the model removes: 1 is Bayes-optimal,
      0 no better than predicting 0, larger is better ICL (the analogue of ``icl_auc``).

    NaN for a run without regression scores (any other task family).
    """
    wide = scores[scores["measure"].str.startswith("reg_")].pivot_table(
        index="shots", columns="measure", values="value"
    )
    needed = ["reg_model_error", "reg_ridge_error", "reg_zero_error"]
    if wide.empty or any(m not in wide for m in needed):
        return {"reg_icl_area": np.nan, "reg_excess_area": np.nan}
    wide = wide[wide.index >= 1]
    excess = wide["reg_model_error"] - wide["reg_ridge_error"]
    room = float((wide["reg_zero_error"] - wide["reg_ridge_error"]).sum())
    return {
        "reg_icl_area": 1.0 - float(excess.sum()) / room,
        "reg_excess_area": float(excess.mean()),
    }
