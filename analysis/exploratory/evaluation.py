"""What each evaluation measure shows against integrated P-NE*, at matched loss (exploratory).

For every end-of-run measure of the runs table (the zero-shot skill control, ICL and
memorization by each of their measures, the probes, the lm-eval tasks), the slope of
the measure on log integrated P-NE* in the random-intercept mixed model of H1 with the
final validation loss as covariate (``analysis.stats.mixed_model.mixed_slope``, two-sided),
and Spearman's rho. The zero-shot control is the DESIGN §1 control "zero-shot
(non-ICL) skill equal at equal loss": ``format_accuracy`` (``training.evaluation.memorization``),
whose slope at matched loss should be near 0 if noise changes ICL and not general
competence. No test here is registered: p values are uncorrected and only describe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis.stats.inputs import require_columns
from analysis.stats.mixed_model import mixed_slope
from preregistration.tables import LM_EVAL_RUN_MEASURES

EXPOSURE = "int_pne_star"
ROLES = {  # measure -> role, in the order of the table
    "format_accuracy": "zero_shot_control",
    "format_accuracy_icl": "zero_shot_control",
    "format_accuracy_facts": "zero_shot_control",
    "icl_auc": "icl",
    "accuracy_icl": "icl",
    "order_std_icl": "icl",
    "overlap_cos_gd": "icl",
    "overlap_cos_adam": "icl",
    "memorization": "memorization",
    "fact_logprob": "memorization",
    "in_weights_logprob": "memorization",
    "induction_score": "probe",
    "induction_head_score": "probe",
    "induction_head_copying": "probe",
    "hessian_top_eigenvalue": "probe",
    "sam_sharpness": "probe",
    "fisher_trace": "probe",
    **dict.fromkeys(LM_EVAL_RUN_MEASURES, "lm_eval"),
}


def evaluation_slopes(runs: pd.DataFrame, arms: list[str] | None = None) -> pd.DataFrame:
    """Slope of each evaluation measure on log integrated P-NE* at matched loss.

    Parameters
    ----------
    runs : DataFrame
        The runs table; excluded runs are left out.
    arms : list of str, optional
        Arms whose runs enter (default: every arm).

    Returns
    -------
    DataFrame
        One row per measure of ``ROLES`` (``preregistration.tables`` EVALUATION):
        ``measure``, ``role``, ``predictor``, ``slope``, ``se``, ``ci_low``, ``ci_high``
        (95%), ``p`` (two-sided), ``spearman_rho``, ``n_runs``, ``n_missing``, ``method``.
        A measure no included run has gets NaN estimates and ``method`` saying so.
    """
    require_columns(runs, ["arm", "excluded", "seed", "final_val_loss", EXPOSURE], "evaluation")
    data = runs[~runs["excluded"].astype(bool)]
    if arms is not None:
        data = data[data["arm"].isin(arms)]
    data = data[data[EXPOSURE] > 0]
    rows = []
    for measure, role in ROLES.items():
        row = {"measure": measure, "role": role, "predictor": f"log({EXPOSURE})"}
        values = pd.to_numeric(data.get(measure, pd.Series(np.nan, index=data.index)))
        present = data[np.isfinite(values.to_numpy(dtype=float))]
        if len(present) < 4 or present[measure].nunique() < 2:
            row |= dict.fromkeys(["slope", "se", "ci_low", "ci_high", "p", "spearman_rho"], np.nan)
            row |= {"n_runs": len(present), "n_missing": len(data) - len(present)}
            row["method"] = (
                f"not estimated: {len(present)} included run(s) with the measure, "
                f"{present[measure].nunique()} distinct value(s); needs 4 runs and 2 values"
            )
            rows.append(row)
            continue
        fit = mixed_slope(present, measure, EXPOSURE, ("final_val_loss",), alternative="two-sided")
        fit = fit.iloc[0]
        row |= {k: float(fit[k]) for k in ("slope", "se", "ci_low", "ci_high", "p")}
        row["spearman_rho"] = float(spearmanr(np.log(present[EXPOSURE]), present[measure])[0])
        row |= {"n_runs": len(present), "n_missing": len(data) - len(present)}
        row["method"] = str(fit["method"])
        rows.append(row)
    return pd.DataFrame(rows)
