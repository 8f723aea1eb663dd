"""Counterfactual Noise Replay (CNR; seed 002 §4, issue 21, deviation D10): its predictions
against retraining. Exploratory: nothing here is a registered test or enters the Holm family.

From a finished base run, the replay job (``training/replay/``) predicts by linearisation
how each metric would change, ``horizon`` steps after a switch point, had the injected
noise been another (a *candidate*), and retrains from the switch point with each candidate
to measure the change. A *case* is one switch point of one base run, (base_run,
switch_fraction). Per base run the job writes ``predictions.csv`` (table
``cnr_predictions``: per case, horizon, candidate, method and metric the predicted change
and its interval) and ``retrains.csv`` (table ``cnr_retrains``: per case, horizon,
retrained candidate and metric the value and the realised change against the retrain with
the recorded noise). A prediction and its retrain share the key
(base_run, switch_fraction, horizon, candidate, metric).

- ``gather_cnr`` reads the files of every case directory through their contracts, and
  stops on a duplicate key or a prediction without its retrain, naming the file;
- ``cnr_validation`` sets the predictions of each method against the realised changes,
  per (method, metric, horizon), over the registered candidates (role ``candidate``):

  * spearman: Spearman's rho of predicted d_hat and realised d, pooled over the
    candidates of every case, with a percentile bootstrap CI that resamples whole cases
    (the cluster: a case's candidates share a checkpoint and a retrain of the recorded
    noise); median_case_spearman: rho within each case across its candidates, the median
    over cases;
  * coverage = mean 1[low <= d <= high]; sign_agreement = mean 1[sign d_hat = sign d];
    both NaN for ``no_change``, which has no interval and no sign;
  * mae = mean |d_hat - d|; relative_error = mae / mean |d| (1 for ``no_change``);
  * noise_floor_sd = sqrt(mean d_f^2) over the fresh draws' realised changes d_f
    (role ``noise_floor``) of every case at that metric and horizon: how much a fresh
    draw of the recorded noise alone moves the metric; share_above_floor = mean
    1[|d| > 2 noise_floor_sd] over the candidates;
  * replay_s = mean over cases of the method's cost_s (one value per case and method);
    retrain_s = mean over cases of sum over the candidates' retrains of their cost_s,
    each retrain counted once (a retrain's cost_s is repeated on its rows of every
    horizon and metric); cost_ratio = replay_s / retrain_s;

- ``cnr_sentences`` words the largest horizon of that table from its numbers, for the
  report.

The methods: ``adamw`` (CNR: the AdamW update linearised), ``sgd`` (the Jacobian of a
plain SGD step), ``identity`` (J = I) and ``no_change`` (predicts 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.inputs import require_columns
from preregistration.exploratory_columns import CNR_METHODS
from preregistration.tables import TableError, empty_table, read_table

PREDICTIONS_FILE = "predictions.csv"
RETRAINS_FILE = "retrains.csv"
CASE = ["base_run", "switch_fraction"]
KEY = [*CASE, "horizon", "candidate", "metric"]  # a prediction and its retrain
METHODS = tuple(CNR_METHODS)  # adamw, sgd, identity, no_change
NO_INTERVAL = ("no_change",)  # methods without interval or sign
LABELS = {"adamw": "CNR", "sgd": "the SGD-form Jacobian", "identity": "J = I"}
FLOOR_MULTIPLE = 2.0  # a realised change beyond FLOOR_MULTIPLE x noise_floor_sd is "above"


# -- gathering -----------------------------------------------------------------------------


def _duplicates(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return df.loc[df.duplicated(key, keep=False), key].drop_duplicates()


def _shown(rows: pd.DataFrame, n: int = 5) -> str:
    """The first ``n`` keys of ``rows``, one per ``(...)``, for a message."""
    keys = [tuple(r) for r in rows.head(n).itertuples(index=False)]
    more = f" and {len(rows) - n} more" if len(rows) > n else ""
    return ", ".join(map(str, keys)) + more


def read_case(case_dir: str | Path, plan: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``predictions.csv`` and ``retrains.csv`` of one case directory, each through its
    contract; ``TableError`` naming the file on a missing column, a duplicate key or a
    prediction whose key (base_run, switch_fraction, horizon, candidate, metric) has no
    row in the retrains file beside it."""
    case_dir = Path(case_dir)
    pred_path, retr_path = case_dir / PREDICTIONS_FILE, case_dir / RETRAINS_FILE
    predictions = read_table(pred_path, "cnr_predictions", plan=plan)
    retrains = read_table(retr_path, "cnr_retrains", plan=plan)
    for df, path, key in ((predictions, pred_path, [*KEY, "method"]), (retrains, retr_path, KEY)):
        dup = _duplicates(df, key)
        if len(dup):
            raise TableError(f"{path}: duplicate key {tuple(key)}: {_shown(dup)}")
    keys = predictions[KEY].drop_duplicates()
    orphans = keys.merge(retrains[KEY].drop_duplicates(), on=KEY, how="left", indicator=True)
    orphans = orphans.loc[orphans["_merge"] == "left_only", KEY]
    if len(orphans):
        raise TableError(
            f"{pred_path}: {len(orphans)} predicted key(s) {tuple(KEY)} without their retrain "
            f"in {retr_path}: {_shown(orphans)}"
        )
    return predictions, retrains


def gather_cnr(
    case_dirs: Iterable[str | Path], plan: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every case directory's predictions and retrains (``read_case``), concatenated and
    sorted by key; a key found in two directories is a ``TableError`` naming both.

    ``plan``: the plan whose ``replay.metrics`` the contracts admit (default
    ``preregistration/plan.yaml``).
    """
    dirs = [Path(d) for d in case_dirs]
    if not dirs:
        raise ValueError("gather_cnr: no case directory given")
    parts = [(d, *read_case(d, plan)) for d in dirs]
    predictions = _concat([(d / PREDICTIONS_FILE, p) for d, p, _ in parts], [*KEY, "method"])
    retrains = _concat([(d / RETRAINS_FILE, r) for d, _, r in parts], KEY)
    return predictions, retrains


def _concat(files: list[tuple[Path, pd.DataFrame]], key: list[str]) -> pd.DataFrame:
    """The tables of ``files`` (path, frame) stacked and sorted by ``key``; a key in two
    files is a ``TableError`` naming them."""
    df = pd.concat([f.assign(_source=str(p)) for p, f in files], ignore_index=True)
    dup = df[df.duplicated(key, keep=False)]
    if len(dup):
        raise TableError(
            f"{' and '.join(sorted(dup['_source'].unique()))}: the same key {tuple(key)} in "
            f"two case directories: {_shown(dup[key].drop_duplicates())}"
        )
    df = df.drop(columns="_source").sort_values(key, kind="mergesort")
    return df.reset_index(drop=True)


# -- statistics ----------------------------------------------------------------------------


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``); NaN with fewer than 3 pairs or a constant
    side, where it is undefined."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    return float(stats.spearmanr(x, y).statistic)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``x`` (..., n) with the same row of ``y``: Pearson's r
    of their ranks (``scipy.stats.rankdata``, ties averaged), as ``scipy.stats.spearmanr``
    defines it; NaN where a row is constant."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx -= rx.mean(-1, keepdims=True)
    ry -= ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


def cluster_bootstrap_spearman(
    x: np.ndarray,
    y: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of Spearman's rho of ``x`` and ``y``, resampling whole
    clusters with replacement (the rows of a drawn cluster enter together).

    A resample draws n_c of the n_c clusters, so its size varies with unequal clusters;
    resamples of one size are ranked together (``_row_spearman``), each over its own rows.
    Resamples where a side is constant (rho undefined) are skipped, as in
    ``analysis.stats.rank_correlation``; the bounds are the (1 -+ level) / 2 percentiles of
    the rest. (NaN, NaN) with fewer than 2 clusters, or when no resample gives a finite rho.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels, members = np.unique(np.asarray(clusters), return_inverse=True)
    if len(labels) < 2:
        return np.nan, np.nan
    rows = [np.flatnonzero(members == c) for c in range(len(labels))]
    sizes = np.array([len(r) for r in rows])
    draws = np.random.default_rng(seed).integers(0, len(labels), (n_boot, len(labels)))
    lengths = sizes[draws].sum(1)
    index = np.full((n_boot, lengths.max()), -1)
    for b, drawn in enumerate(draws):
        picked = np.concatenate([rows[c] for c in drawn])
        index[b, : len(picked)] = picked
    rho = np.full(n_boot, np.nan)
    for length in np.unique(lengths):  # equal lengths ranked together, vectorised
        sel = lengths == length
        idx = index[sel, :length]
        rho[sel] = _row_spearman(x[idx], y[idx])
    finite = rho[np.isfinite(rho)]
    if not len(finite):
        return np.nan, np.nan
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def candidate_pairs(predictions: pd.DataFrame, retrains: pd.DataFrame) -> pd.DataFrame:
    """Each candidate prediction (role ``candidate``) beside its retrain: the prediction's
    columns, ``realised_change`` and ``retrain_cost_s`` (the retrain's cost_s).
    A prediction without its retrain is a ``ValueError`` (``gather_cnr`` checks it first)."""
    func = "candidate_pairs"
    require_columns(
        predictions, [*KEY, "role", "method", "predicted_change", "interval_low",
                      "interval_high", "level", "cost_s"], func,
    )  # fmt: skip
    require_columns(retrains, [*KEY, "role", "realised_change", "cost_s"], func)
    pred = predictions[predictions["role"] == "candidate"]
    retr = retrains[KEY + ["realised_change", "cost_s"]].rename(
        columns={"cost_s": "retrain_cost_s"}
    )
    pairs = pred.merge(retr, on=KEY, how="left", validate="many_to_one")
    missing = pairs["realised_change"].isna()
    if missing.any():
        raise ValueError(
            f"{func}: predictions without their retrain: {_shown(pairs.loc[missing, KEY])}"
        )
    return pairs


def noise_floor(retrains: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, horizon) over every case: ``noise_floor_sd`` = sqrt(mean d_f^2) of the
    realised changes d_f of the fresh draws (role ``noise_floor``), and ``n_floor``, their
    number of rows."""
    require_columns(retrains, ["metric", "horizon", "role", "realised_change"], "noise_floor")
    floor = retrains[retrains["role"] == "noise_floor"]
    squared = floor.assign(sq=floor["realised_change"].astype(float) ** 2)
    out = squared.groupby(["metric", "horizon"]).agg(ms=("sq", "mean"), n_floor=("sq", "size"))
    out["noise_floor_sd"] = np.sqrt(out.pop("ms"))
    return out.reset_index()


def case_costs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (method, metric, horizon) of ``candidate_pairs``: ``replay_s``, the mean over its
    cases of the method's cost_s (one value per case and method: the largest of its rows),
    and ``retrain_s``, the mean over cases of the sum of the candidates' retrain costs, each
    (case, candidate) retrain counted once however many horizons and metrics its rows
    cover; ``cost_ratio`` = replay_s / retrain_s (NaN when retrain_s is 0)."""
    group = ["method", "metric", "horizon"]
    replay = pairs.groupby([*group, *CASE])["cost_s"].max().groupby(level=group).mean()
    per_retrain = pairs.groupby([*group, *CASE, "candidate"])["retrain_cost_s"].max()
    retrain = per_retrain.groupby(level=[*group, *CASE]).sum().groupby(level=group).mean()
    costs = pd.DataFrame({"replay_s": replay, "retrain_s": retrain})
    costs["cost_ratio"] = costs["replay_s"] / costs["retrain_s"].where(costs["retrain_s"] > 0)
    return costs


def _group_row(
    g: pd.DataFrame, floor: pd.Series | None, level: float, n_boot: int, seed: int
) -> dict:
    """The statistics of one (method, metric, horizon) group of ``candidate_pairs`` (its
    ``_case`` column numbering the cases), costs aside."""
    method = g["method"].iloc[0]
    d_hat = g["predicted_change"].to_numpy(float)
    d = g["realised_change"].to_numpy(float)
    cases = g["_case"].to_numpy()
    rho = _spearman(d_hat, d)
    low, high = (np.nan, np.nan) if np.isnan(rho) else cluster_bootstrap_spearman(
        d_hat, d, cases, n_boot=n_boot, level=level, seed=seed
    )  # fmt: skip
    per_case = [_spearman(d_hat[cases == c], d[cases == c]) for c in np.unique(cases)]
    per_case = [r for r in per_case if np.isfinite(r)]
    has_interval = method not in NO_INTERVAL
    inside = (d >= g["interval_low"].to_numpy(float)) & (d <= g["interval_high"].to_numpy(float))
    mae, mean_abs = float(np.mean(np.abs(d_hat - d))), float(np.mean(np.abs(d)))
    floor_sd = float(floor["noise_floor_sd"]) if floor is not None else np.nan
    return {
        "n_cases": len(np.unique(cases)),
        "n_rows": len(g),
        "spearman": rho,
        "spearman_ci_low": low,
        "spearman_ci_high": high,
        "ci_level": level,
        "median_case_spearman": float(np.median(per_case)) if per_case else np.nan,
        "coverage": float(inside.mean()) if has_interval else np.nan,
        "interval_level": float(g["level"].iloc[0]) if has_interval else np.nan,
        "sign_agreement": float(np.mean(np.sign(d_hat) == np.sign(d))) if has_interval else np.nan,
        "mae": mae,
        "relative_error": mae / mean_abs if mean_abs > 0 else np.nan,
        "mean_abs_realised": mean_abs,
        "noise_floor_sd": floor_sd,
        "n_floor": int(floor["n_floor"]) if floor is not None else 0,
        "share_above_floor": (
            float(np.mean(np.abs(d) > FLOOR_MULTIPLE * floor_sd))
            if np.isfinite(floor_sd)
            else np.nan
        ),
    }


def cnr_validation(
    predictions: pd.DataFrame,
    retrains: pd.DataFrame,
    level: float = 0.9,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The predictions against the retrains, one row per (method, metric, horizon) over the
    rows with role ``candidate`` (the columns of table ``cnr_validation``; formulas in the
    module docstring).

    ``level``: level of the bootstrap CI of spearman (``n_boot`` case resamples, ``seed``
    seeding them; the same resamples for every group). Methods in the order adamw, sgd,
    identity, no_change; metrics in their order of first appearance; horizons ascending.
    """
    pairs = candidate_pairs(predictions, retrains)
    pairs["_case"] = pairs.groupby(CASE, sort=True).ngroup()
    floors = noise_floor(retrains).set_index(["metric", "horizon"])
    costs = case_costs(pairs)
    order = {m: i for i, m in enumerate(METHODS)}
    metric_order = {m: i for i, m in enumerate(pd.unique(predictions["metric"]))}
    rows = []
    for (method, metric, horizon), g in pairs.groupby(["method", "metric", "horizon"]):
        floor = floors.loc[(metric, horizon)] if (metric, horizon) in floors.index else None
        stats_ = _group_row(g, floor, level, n_boot, seed)
        cost = costs.loc[(method, metric, horizon)].to_dict()
        rows.append({"method": method, "metric": metric, "horizon": int(horizon), **stats_, **cost})
    table = pd.DataFrame(rows)
    if table.empty:
        return empty_table("cnr_validation")
    sort = table.assign(
        _m=table["method"].map(order).fillna(len(order)), _k=table["metric"].map(metric_order)
    ).sort_values(["_m", "_k", "horizon"], kind="mergesort")
    return sort.drop(columns=["_m", "_k"]).reset_index(drop=True)


# -- words ---------------------------------------------------------------------------------


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if np.isfinite(value) else "n/a"


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %" if np.isfinite(value) else "n/a"


def _rho(row: pd.Series) -> str:
    """rho [low, high] of a row, two decimals."""
    if not np.isfinite(row["spearman"]):
        return "rho n/a"
    ci = ""
    if np.isfinite(row["spearman_ci_low"]):
        ci = f" [{row['spearman_ci_low']:.2f}, {row['spearman_ci_high']:.2f}]"
    return f"rho {row['spearman']:.2f}{ci}"


def _ranking(cnr: pd.Series, baselines: list[pd.Series]) -> str:
    """Where CNR's rho stands against each baseline's, in words (point estimates; overlapping
    CIs said so)."""
    parts = []
    for b in baselines:
        if not (np.isfinite(cnr["spearman"]) and np.isfinite(b["spearman"])):
            continue
        word = "above" if cnr["spearman"] > b["spearman"] else (
            "level with" if cnr["spearman"] == b["spearman"] else "below"
        )  # fmt: skip
        overlap = cnr["spearman_ci_low"] <= b["spearman_ci_high"] and (
            b["spearman_ci_low"] <= cnr["spearman_ci_high"]
        )
        parts.append(f"{word} {LABELS.get(b['method'], b['method'])}'s"
                     + (" (CIs overlap)" if overlap and word != "level with" else ""))  # fmt: skip
    return "CNR's rank correlation lies " + ", ".join(parts) if parts else ""


def cnr_sentence(validation: pd.DataFrame, metric: str, horizon: int) -> str:
    """One metric at one horizon of ``cnr_validation`` in words, every number from the table:
    CNR's Spearman, coverage and error against each baseline's, and whether the candidates'
    realised changes exceed the noise floor of a fresh draw."""
    rows = validation[(validation["metric"] == metric) & (validation["horizon"] == horizon)]
    by = {r["method"]: r for _, r in rows.iterrows()}
    first = rows.iloc[0]
    head = (
        f"{metric} {horizon} steps after the switch ({first['n_cases']} cases, "
        f"{first['n_rows']} candidate retrains)"
    )
    if "adamw" not in by:
        return f"{head}: no CNR prediction."
    cnr = by["adamw"]
    text = (
        f"{head}: CNR {_rho(cnr)} (median per case {_num(cnr['median_case_spearman'], 2)}), its "
        f"{_pct(cnr['interval_level'])} intervals cover {_pct(cnr['coverage'])} of the realised "
        f"changes and its sign agrees in {_pct(cnr['sign_agreement'])}"
    )
    baselines = [by[m] for m in ("sgd", "identity") if m in by]
    for b in baselines:
        text += f"; {LABELS[b['method']]} {_rho(b)}, coverage {_pct(b['coverage'])}"
    text += f"; CNR's mean absolute error {_num(cnr['mae'])}"
    if "no_change" in by:
        text += f" against {_num(by['no_change']['mae'])} for predicting no change"
    ranking = _ranking(cnr, baselines)
    text += f". {ranking}." if ranking else "."
    share, floor = cnr["share_above_floor"], cnr["noise_floor_sd"]
    if not np.isfinite(floor):
        return text + " No fresh draw gives a noise floor."
    verdict = (
        "most candidates move the metric beyond what a fresh draw alone does"
        if share >= 0.5
        else "most candidates move it no more than a fresh draw alone does, so the ranking is "
        "largely one of noise"
    )
    return text + (
        f" {_pct(share)} of the candidates' realised changes exceed twice the noise floor "
        f"(RMS change of a fresh draw {_num(floor)}; mean |change| "
        f"{_num(cnr['mean_abs_realised'])}): "
        f"{verdict}."
    )


def cost_sentence(validation: pd.DataFrame) -> str:
    """What CNR costs against retraining the candidates, per case (the first row of adamw;
    cost_s is per case and method, the same at every metric and horizon)."""
    cnr = validation[validation["method"] == "adamw"]
    if cnr.empty:
        return "No CNR prediction, so no cost."
    r = cnr.iloc[0]
    return (
        f"Per case CNR took {_num(r['replay_s'])} s of replay against {_num(r['retrain_s'])} s "
        f"to retrain the candidates (ratio {_num(r['cost_ratio'])})."
    )


def cnr_sentences(validation: pd.DataFrame) -> list[str]:
    """The report's words on the replay: one sentence per metric at the largest horizon of
    ``cnr_validation``, then its cost (``cnr_sentence``, ``cost_sentence``)."""
    if validation.empty:
        return ["No replay case: nothing to validate."]
    horizon = int(validation["horizon"].max())
    metrics = pd.unique(validation["metric"])
    return [cnr_sentence(validation, m, horizon) for m in metrics] + [cost_sentence(validation)]


def cnr_notes(validation: pd.DataFrame) -> list[str]:
    """The notes under the Markdown copy of ``cnr_validation``."""
    n_boot_note = "percentile bootstrap over cases (the cluster)"
    return [
        "Exploratory (deviation D10): no row is a registered test or enters the Holm family.",
        "Rows with role candidate only; a case is (base_run, switch_fraction). spearman pools "
        f"the candidates of every case; its CI is a {n_boot_note}; median_case_spearman is "
        "the median over cases of rho across each case's candidates.",
        "coverage: share of realised changes inside the method's interval (nominal level "
        "interval_level); sign_agreement: sign(predicted) = sign(realised); both undefined for "
        "no_change. relative_error = mae / mean_abs_realised.",
        f"noise_floor_sd: RMS realised change of the fresh draws (role noise_floor) at the metric "
        f"and horizon; share_above_floor: |realised| > {FLOOR_MULTIPLE:g} x noise_floor_sd.",
        "replay_s: mean per case of the method's wall seconds; retrain_s: mean per case of the "
        "candidate retrains' wall seconds, each retrain once; cost_ratio = replay_s / retrain_s.",
        *cnr_sentences(validation),
    ]
