"""One replay case: a base run and a switch point, its CNR predictions and its retrains.

``run_case`` regenerates the segment after the switch (``training.replay.segment``),
predicts with ``gradnoise.replay.pathwise_adjoint`` the first-order (pathwise) change of
every metric at every horizon under every candidate and noise-floor draw, with each
registered Jacobian (adamw is CNR; sgd and identity are baselines) and the "no change"
baseline, then retrains the segment with the recorded noise, each candidate and each
fresh draw (``training.replay.retrain``). Two tidy tables come out, declared as the
``cnr_predictions`` and ``cnr_retrains`` contracts (docs/cnr.md):

predictions: base_run, condition, seed, switch_fraction, switch_step, horizon, candidate,
             role, method, metric, predicted_change, interval_low, interval_high, level, cost_s
retrains:    base_run, condition, seed, switch_fraction, switch_step, horizon, candidate,
             role, metric, value, realised_change, cost_s
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradnoise.replay import pathwise_adjoint, predict_expected
from preregistration.design import RunSpec
from training.config import StudyConfig
from training.recording import RECORD_DIR, ReplayRecording, recorded_steps, switch_step
from training.replay.candidates import CandidateCovariance, candidate_map, noise_map
from training.replay.metrics import replay_metrics
from training.replay.plan import ReplayPlan
from training.replay.retrain import Retrainer
from training.replay.segment import regenerate, trajectory

log = logging.getLogger(__name__)
KEYS = ("base_run", "condition", "seed", "switch_fraction", "switch_step", "horizon")


def run_steps(run_dir: Path) -> int:
    """The base run's last step, from its meta.json."""
    meta_path = Path(run_dir) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        return int(meta["steps"])
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{meta_path}: cannot read the run's steps ({err})") from err


def role_of(name: str) -> str:
    if name == "recorded":
        return "recorded"
    return "noise_floor" if name.startswith("fresh_draw_") else "candidate"


def run_case(
    spec: RunSpec, cfg: StudyConfig, corpus: dict, reference: pd.DataFrame | None,
    run_dir: Path, replay: ReplayPlan, fraction: float, candidates: tuple[str, ...] | None = None,
    retrain: bool = True, expected_probes: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(predictions, retrains) of one base run at one switch point (module docstring).

    With ``expected_probes`` > 0 and ``retrain`` off, the second table is instead the expected
    (second-order) predictions of every candidate, Jacobian, metric and horizon
    (``expected_predictions``; table ``cnr_expected``).
    """
    names = list(candidates or (*replay.candidates, *replay.floor_draws))
    recording = ReplayRecording(Path(run_dir) / RECORD_DIR, replay.record_every)
    steps = recorded_steps(recording.directory)
    switch = switch_step(steps, run_steps(run_dir), fraction, replay.horizon)
    state_path = recording.path(switch)
    keys = dict(
        zip(KEYS[:5], (spec.run_id, spec.condition, spec.seed, fraction, switch), strict=True)
    )
    log.info("%s: switch at step %d (%.2f of the run)", spec.run_id, switch, fraction)
    segment = regenerate(spec, cfg, corpus, reference, state_path, replay.horizon)
    metrics = replay_metrics(
        segment.model, corpus, list(cfg.evaluate.shots), replay.icl_episodes, replay.metrics
    )
    maps = {name: noise_map(segment, name, spec.seed) for name in names}
    start = time.perf_counter()
    with sdpa_kernel(SDPBackend.MATH):  # the CPU flash kernel has no double backward
        predicted = pathwise_adjoint(
            trajectory(segment, corpus["train"]), maps, metrics, list(replay.horizons),
            list(replay.jacobians), replay.interval_level, replay.bootstrap, spec.seed,
        )  # fmt: skip
    log.info("%s: predictions in %.1f s", spec.run_id, time.perf_counter() - start)
    rows = [
        keys | {"horizon": p.horizon, "candidate": p.candidate, "role": role_of(p.candidate),
                "method": p.jacobian, "metric": p.metric, "predicted_change": p.delta_f,
                "interval_low": p.interval[0], "interval_high": p.interval[1],
                "level": p.level, "cost_s": p.seconds + segment.seconds}
        for p in predicted
    ]  # fmt: skip
    rows += [
        keys | {"horizon": h, "candidate": name, "role": role_of(name), "method": "no_change",
                "metric": m, "predicted_change": 0.0, "interval_low": 0.0, "interval_high": 0.0,
                "level": replay.interval_level, "cost_s": 0.0}
        for h in replay.horizons for name in names for m in replay.metrics
    ]  # fmt: skip
    predictions = pd.DataFrame(rows)
    if not retrain:
        if expected_probes <= 0:
            return predictions, pd.DataFrame()
        return predictions, expected_predictions(
            segment, corpus["train"], names, metrics, replay, expected_probes, spec.seed, keys
        )
    retrainer = Retrainer.at_switch(spec, cfg, corpus, reference, segment, state_path)
    realised = []
    for name in ["recorded", *names]:
        values, seconds = retrainer.retrain(
            candidate_map(segment, name, spec.seed), replay.horizons, metrics
        )
        log.info("%s: retrained %s in %.1f s", spec.run_id, name, seconds)
        realised += [
            keys | {"horizon": h, "candidate": name, "role": role_of(name), "metric": m,
                    "value": v, "cost_s": seconds}
            for h, by_metric in values.items() for m, v in by_metric.items()
        ]  # fmt: skip
    retrains = pd.DataFrame(realised)
    base = retrains[retrains.candidate == "recorded"].set_index(["horizon", "metric"])["value"]
    retrains["realised_change"] = retrains["value"] - [
        base[(h, m)] for h, m in zip(retrains.horizon, retrains.metric, strict=True)
    ]
    order = [*KEYS, "candidate", "role", "metric", "value", "realised_change", "cost_s"]
    return predictions, retrains[order]


def expected_predictions(
    segment, train, names: list[str], metrics: dict, replay: ReplayPlan, n_probes: int,
    seed: int, keys: dict,
) -> pd.DataFrame:  # fmt: skip
    """The expected changes E[f~] - E[f] of each candidate's covariance against the recorded
    one (``gradnoise.replay.predict_expected``, second order with Adam's second-moment
    channel), at each horizon, with each Jacobian: one forward pass of (candidates + 1) x
    ``n_probes`` probe tangents per horizon."""
    covariances = {name: CandidateCovariance(segment, name) for name in names}
    recorded = CandidateCovariance(segment, "recorded")
    rows = []
    for h in replay.horizons:
        with sdpa_kernel(SDPBackend.MATH):
            found = predict_expected(
                trajectory(segment, train, h), covariances, recorded, metrics,
                list(replay.jacobians), n_probes=n_probes, seed=seed,
                level=replay.interval_level,
            )  # fmt: skip
        rows += [
            keys | {"horizon": h, "candidate": p.candidate, "method": p.jacobian,
                    "metric": p.metric, "predicted_change": p.delta_f,
                    "curvature": p.curvature, "mean_shift": p.mean_shift,
                    "interval_low": p.interval[0], "interval_high": p.interval[1],
                    "run_low": p.run_interval[0], "run_high": p.run_interval[1],
                    "level": p.level, "n_probes": p.n_probes, "cost_s": p.seconds}
            for p in found
        ]  # fmt: skip
    return pd.DataFrame(rows)
