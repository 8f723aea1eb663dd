"""One replay case end to end on a tiny base run (issue 21 items 2-4): the tables' rows and
contracts, and CNR against the retrain it stands for.

A perturbation of the recorded noise small enough for first order (scaled_1.02) is
predicted by the AdamW-aware adjoint to within a few per cent of the realised change of
every metric; the recorded noise itself is predicted and realised as no change; the
"no change" baseline predicts 0; the command writes the same tables through their
contracts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.training.test_replay_recording import EVERY, STEPS, base  # noqa: F401 (fixture)
from training.replay.case import run_case
from training.replay.plan import ReplayPlan

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]
PLAN = ReplayPlan(
    base_condition="inj_gaussian_bs8", base_seeds=(0,), record_every=EVERY,
    switch_points=(0.5,), horizons=(2, 4), candidates=("half", "antithetic"),
    noise_floor_draws=1, metrics=("val_loss", "icl_logprob_auc", "memorization_logprob"),
    jacobians=("adamw", "sgd", "identity"), interval_level=0.9, bootstrap=200,
    icl_episodes=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def case(base):  # noqa: F811
    cfg, corpus, reference, spec, recording, *_ = base
    run_dir = recording.directory.parent
    (run_dir / "meta.json").write_text(json.dumps({"steps": STEPS}))
    names = ("scaled_1.02", "half", "no_injection", "fresh_draw_1")
    return run_case(spec, cfg, corpus, reference, run_dir, PLAN, 0.5, candidates=names)


def test_tables_have_a_row_per_case_horizon_candidate_method_and_metric(case):
    predictions, retrains = case
    assert len(predictions) == 2 * 4 * 4 * 3  # horizons x candidates x methods x metrics
    assert len(retrains) == 2 * 5 * 3  # horizons x (candidates + recorded) x metrics
    assert set(predictions.switch_step) == {12} and set(retrains.switch_step) == {12}
    recorded = retrains[retrains.candidate == "recorded"]
    assert (recorded.realised_change == 0).all() and (recorded.role == "recorded").all()
    assert set(retrains[retrains.candidate == "fresh_draw_1"].role) == {"noise_floor"}
    none = predictions[predictions.method == "no_change"]
    assert (none[["predicted_change", "interval_low", "interval_high"]] == 0).all().all()


def test_cnr_predicts_a_small_perturbation_to_first_order(case):
    predictions, retrains = case
    keys = ["horizon", "candidate", "metric"]
    joined = predictions[predictions.method == "adamw"].merge(retrains, on=keys)
    small = joined[joined.candidate == "scaled_1.02"]
    for row in small.itertuples():
        assert abs(row.realised_change) > 0
        assert row.predicted_change == pytest.approx(row.realised_change, rel=0.05), row
        assert row.interval_low <= row.predicted_change <= row.interval_high


def test_the_identity_baseline_differs_from_the_adamw_jacobian(case):
    predictions, _ = case
    p = predictions.set_index(["horizon", "candidate", "metric", "method"]).predicted_change
    at = (4, "half", "val_loss")
    assert not np.isclose(p[(*at, "adamw")], p[(*at, "identity")], rtol=1e-3)


def test_expected_predictions_vanish_for_the_recorded_covariance(base, tmp_path):  # noqa: F811
    """Antithetic noise has the recorded covariance: its expected change is exactly 0 (the
    probes are shared); removing the noise shifts Adam's v, which only adamw carries."""
    from preregistration.tables import read_table, write_table

    cfg, corpus, reference, spec, recording, *_ = base
    run_dir = recording.directory.parent
    names = ("antithetic", "no_injection")
    _, expected = run_case(
        spec, cfg, corpus, reference, run_dir, PLAN, 0.5, candidates=names, retrain=False,
        expected_probes=4,
    )  # fmt: skip
    assert len(expected) == 2 * 2 * 3 * 3  # horizons x candidates x methods x metrics
    mirrored = expected[expected.candidate == "antithetic"]
    assert (mirrored[["predicted_change", "curvature", "mean_shift"]] == 0).all().all()
    removed = expected[expected.candidate == "no_injection"]
    assert (removed[removed.method == "adamw"].mean_shift != 0).all()
    assert (removed[removed.method != "adamw"].mean_shift == 0).all()
    assert (removed.interval_low <= removed.interval_high).all()
    path = write_table(expected, "cnr_expected", tmp_path / "expected.csv")
    assert len(read_table(path, "cnr_expected")) == len(expected)
