"""The exposure controller's lead (issue 22, item 2): on synthetic references and runs on
the registered cpu validation schedule, the proportional law stops short of the
reference's exposure where the run meets a steep target near the end; the law with
lead lands within 5 % with a median window error of at most 10 %. Without ``lead``
the law is the proportional one, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradnoise.control.controller import BudgetWindow, ExposureController, ReferenceTrajectory

# The cpu scale's validation schedule (plan.yaml design.scales.cpu.validation) and target.
TARGET, EVERY, NEAR, BAND = 2.5, 16384, 2048, 0.25
REF_TOKENS, RUN_TOKENS = 8 * 64, 64 * 64  # tokens per step of bs8 (reference) and bs64
# Realised injected increment / s_t u_t, uniform on [0.6, 1.15] (mean 0.875, sd 0.16): on
# a real bs64 gaussian run with lead (cpu, seed 10) its median was 0.86, its sd 0.18 (u_t is
# taken under the previous logging step's curvature, the increment under this step's);
# on [0.4, 1.0] (mean 0.7, sd 0.17): an anisotropic one (seed 1), median 0.69, sd 0.25.
REALISED = (0.6, 1.15)
REALISED_ANISOTROPIC = (0.4, 1.0)
# the values proposed to register; stop_loss: the run's target (training.noise_arms)
LEAD = {"lead": 3, "slope_window": 8, "end_horizon": 2, "stop_loss": TARGET}


def due(step: int, tokens_per_step: int, last_loss: float) -> bool:
    """training.stopping.ValidationSchedule.due with the cpu scale's schedule."""
    if step == 1:
        return True
    every = NEAR if last_loss <= TARGET + BAND else EVERY  # NaN compares False: far
    return (step * tokens_per_step) // every > ((step - 1) * tokens_per_step) // every


def curve(floor, tau, slow=0.6, tau2=250.0, drop_at=None, drop=0.0, width=1.5):
    """A loss curve over steps: two exponentials to a floor, and an optional sharp drop."""

    def loss(step: float) -> float:
        value = floor + 4.0 * math.exp(-step / tau) + slow * math.exp(-step / tau2)
        if drop_at is not None:
            value += drop / (1 + math.exp((step - drop_at) / width))
        return value

    return loss


def hovering(loss, level=2.5004, until=310):
    """The reference hovers just above the target (``level``) until step ``until``, then
    its loss is the curve's again: it stops well below the target, with the exposure of
    the hover (as one real bs8 reference did, 16 steps at 2.500-2.502)."""
    return lambda step: max(level, loss(step)) if step < until else loss(step)


# (reference's loss curve, run's loss curve, validation noise)
CASES = {
    "run faster": (curve(2.3, 40), curve(2.3, 16, tau2=150), 0.0),
    "run slower": (curve(2.3, 40), curve(2.3, 50, tau2=300), 0.0),
    "noisy loss": (curve(2.3, 40), curve(2.3, 27), 0.003),
    # the reference creeps towards the target (its exposure steep in loss there) where the
    # run falls fast: the case that left 6 of 17 real injected runs 5-10 % short
    "steep target at the end": (curve(2.42, 40, tau2=150), curve(2.2, 25, tau2=100), 0.0),
    "steep target, noisy": (curve(2.42, 40, tau2=150), curve(2.2, 25, tau2=100), 0.003),
    # the run's loss drops by 0.4 within a few steps, some validations before its stop
    "drop before the stop": (
        curve(2.44, 40, tau2=150),
        curve(2.2, 25, tau2=100, drop_at=90, drop=0.4),
        0.0,
    ),
    "reference hovers above the target": (hovering(curve(2.3, 40)), curve(2.3, 27), 0.0),
}


def reference(loss, seed: int, noise: float) -> ReferenceTrajectory:
    """A bs8 reference: natural exposure only, validated on the schedule, stopped at target."""
    rng = np.random.default_rng(seed)
    total, last, losses, integrals = 0.0, math.nan, [], []
    for step in range(1, 5000):
        total += 3.3e-4 * rng.uniform(0.7, 1.3)
        if due(step, REF_TOKENS, last):
            last = loss(step) + noise * rng.standard_normal()
            losses.append(last)
            integrals.append(total)
            if last <= TARGET:
                return ReferenceTrajectory(losses, integrals, axis="validation_loss")
    raise AssertionError("the synthetic reference never reached the target")


def injected_run(
    controller: ExposureController, loss, seed: int, noise: float, realised=REALISED
) -> list[float]:
    """A bs64 run as training.train drives the arm: progress = the best validation loss of
    the steps before; natural increments n_t with 30 % noise, u_t drifting 3x, the realised
    injection s_t u_t times a factor drawn from REALISED; stop at the first validation <=
    target. Returns the progress given to the controller at every step."""
    rng = np.random.default_rng(seed + 100)
    total = injected = 0.0
    last = best = math.inf
    given = []
    for step in range(1, 3000):
        unit = 1e-5 * (1 + 2 * step / 300)
        given.append(best)
        scale = controller.scale(step, unit if step > 1 else math.nan, progress=best)
        added = scale * unit * rng.uniform(*realised)
        total += 4e-5 * rng.uniform(0.7, 1.3) + added
        injected += added
        controller.observe(step, total, injected)
        if due(step, RUN_TOKENS, last if math.isfinite(last) else math.nan):
            last = loss(step) + noise * rng.standard_normal()
            best = min(best, last)
            if last <= TARGET:
                return given
    raise AssertionError("the synthetic run never reached the target")


def tracked(
    case: str, seed: int, realised=REALISED, **options
) -> tuple[dict, ExposureController, list[float]]:
    ref_loss, run_loss, noise = CASES[case]
    controller = ExposureController(
        reference(ref_loss, seed, noise), horizon=4, max_scale=1e4, **options
    )
    given = injected_run(controller, run_loss, seed, noise, realised)
    return controller.summary(), controller, given


@pytest.mark.parametrize("realised", [REALISED, REALISED_ANISOTROPIC])
@pytest.mark.parametrize("case", list(CASES))
def test_lead_lands_on_the_reference_exposure(case, realised):
    for seed in range(4):
        summary, _, _ = tracked(case, seed, realised, **LEAD)
        ratio, error = summary["pne_star_ratio_reference"], summary["tracking_error_median"]
        assert abs(ratio - 1) <= 0.05, (case, seed, ratio)
        assert error <= 0.10, (case, seed, error)


@pytest.mark.parametrize("case", ["steep target at the end", "drop before the stop"])
def test_the_proportional_law_stops_short_where_the_target_is_steep(case):
    """Documentation of issue 22: today's law (no lead) ends > 5 % below the reference's
    final exposure on these cases, on every seed; the lead closes at least 3/4 of it."""
    for seed in range(4):
        old = tracked(case, seed)[0]["pne_star_ratio_reference"]
        new = tracked(case, seed, **LEAD)[0]["pne_star_ratio_reference"]
        assert old < 0.95, (case, seed, old)
        assert abs(1 - new) <= 0.25 * (1 - old), (case, seed, old, new)


def test_a_hovering_reference_needs_the_stop_loss():
    """The exposure a reference gains hovering just above the target is its final value's
    part that T places below the target loss: without the stop loss the lead ends > 5 %
    short of it, at T of the run's stop loss; with it, within 5 %."""
    for seed in range(4):
        without = {key: value for key, value in LEAD.items() if key != "stop_loss"}
        summary, controller, _ = tracked("reference hovers above the target", seed, **without)
        assert summary["pne_star_ratio_reference"] < 0.95, seed
        at_stop = controller.trajectory()["total"][-1] / controller.current_target
        assert abs(at_stop - 1) <= 0.05, seed  # it did follow T
        summary = tracked("reference hovers above the target", seed, **LEAD)[0]
        assert abs(summary["pne_star_ratio_reference"] - 1) <= 0.05, seed


def proportional_law(target, history, horizon, max_scale, unit_rate, progress):
    """The law of the registered runs before issue 22, as it was written then."""
    previous = target["last"]
    target["last"] = target["T"](progress)
    if not (math.isfinite(unit_rate) and unit_rate > 0):
        return 0.0
    level = natural = 0.0
    if history:
        _, total, injected, _, _ = history[-1]
        level = total
        before = history[-2][1:3] if len(history) > 1 else (0.0, 0.0)
        natural = max(0.0, (total - before[0]) - (injected - before[1]))
    wanted = (target["T"](progress) - previous) / horizon + (previous - level) / horizon
    return min(max_scale, max(0.0, (wanted - natural) / unit_rate))


@pytest.mark.parametrize("options", [{}, {"lead": None}])
def test_without_lead_the_law_is_the_proportional_one_bit_for_bit(options):
    summary, controller, given = tracked("steep target at the end", 0, **options)
    path, law = controller.trajectory(), {"T": controller.target, "last": 0.0}
    unit = 1e-5 * (1 + 2 * path["step"] / 300)
    unit[0] = math.nan
    history = controller.history
    for i, step in enumerate(path["step"].astype(int)):
        expected = proportional_law(law, history[:i], 4, 1e4, unit[i], given[i])
        assert path["noise_scale"][i] == expected, step  # exact, not approximately
    assert "progress" not in controller.state_dict()
    assert summary["pne_star_ratio_reference"] < 0.95


@pytest.mark.parametrize(
    "case", ["noisy loss", "drop before the stop", "reference hovers above the target"]
)
def test_every_scale_is_the_lead_law_of_the_docstring(case):
    """s_t = clip(((A_t - I_{t-1}) / h_t - n_t) / u_t, 0, s_max), A_t = T(q_t) or T_end once
    q_t = p_t + L sigma_t <= p_stop, sigma_t the best-loss slope over the last W steps,
    h_t = h_end once A_t is T_end."""
    _, controller, given = tracked(case, 1, **LEAD)
    path, target = controller.trajectory(), controller.target
    unit = 1e-5 * (1 + 2 * path["step"] / 300)
    total, injected = path["total"], path["injected"]
    natural = np.diff(total - injected, prepend=0.0)
    ends = 0
    for i in range(1, len(given)):
        window = [(j, p) for j, p in enumerate(given[: i + 1]) if j >= i - 8 and p < math.inf]
        slope = 0.0
        if len(window) > 1:
            slope = min(0.0, (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))
        expected_loss = given[i] + 3 * slope
        aim = target(expected_loss) if expected_loss > TARGET else target.last
        aim = 0.0 if given[i] == math.inf else aim
        horizon = 2 if aim >= target.last else 4
        ends += horizon == 2
        expected = np.clip(((aim - total[i - 1]) / horizon - natural[i - 1]) / unit[i], 0, 1e4)
        assert path["noise_scale"][i] == pytest.approx(expected, rel=1e-12, abs=0), i
        assert aim <= target.last  # never beyond the reference's final exposure
    assert ends <= 12  # the end horizon applies to the last few steps only
    assert ends >= (case != "noisy loss")  # there, the run's stop is seen coming


def test_lead_zero_is_the_proportional_law():
    """L = 0 and h_end = h: the same scales as without lead, to rounding (the algebra of
    the docstring: d_t + (T(p_{t-1}) - I_{t-1}) / h = (T(p_t) - I_{t-1}) / h)."""
    a = tracked("noisy loss", 2)[1].trajectory()["noise_scale"]
    b = tracked("noisy loss", 2, lead=0, slope_window=8)[1].trajectory()["noise_scale"]
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_lead_state_resumes_to_the_same_scales():
    """A controller saved at step 80 and loaded into a new one continues with the same
    scales as the run never interrupted (the lead's progress window is in the state)."""
    _, whole, given = tracked("drop before the stop", 0, **LEAD)
    path, target = whole.trajectory(), whole.target
    unit = 1e-5 * (1 + 2 * path["step"] / 300)
    unit[0] = math.nan

    def replay(controller, start, stop):
        for i in range(start, stop):
            controller.scale(int(path["step"][i]), unit[i], given[i])
            controller.observe(int(path["step"][i]), path["total"][i], path["injected"][i])

    first = ExposureController(target, 4, 1e4, **LEAD)
    replay(first, 0, 80)
    state = first.state_dict()
    assert [step for step, _ in state["progress"]] == list(range(72, 81))  # W + 1 steps
    resumed = ExposureController(target, 4, 1e4, **LEAD)
    resumed.load_state_dict(state)
    replay(resumed, 80, len(given))
    np.testing.assert_array_equal(resumed.trajectory()["noise_scale"], path["noise_scale"])
    with pytest.raises(KeyError, match="saved by a controller without lead"):
        resumed.load_state_dict(ExposureController(target, 4, 1e4).state_dict())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lead": -1, "slope_window": 8}, "lead must be a finite number of steps >= 0"),
        ({"lead": math.nan, "slope_window": 8}, "lead must be a finite number"),
        ({"lead": True, "slope_window": 8}, "lead must be a finite number"),
        ({"lead": 3}, "slope_window must be an integer number of steps >= 1, got None"),
        ({"lead": 3, "slope_window": 0}, "slope_window must be an integer"),
        ({"lead": 3, "slope_window": 2.5}, "slope_window must be an integer"),
        ({"lead": 3, "slope_window": 8, "end_horizon": 0.5}, "end_horizon must be >= 1"),
        ({"lead": 3, "slope_window": 8, "stop_loss": math.inf}, "stop_loss must be a finite"),
        ({"slope_window": 8}, "slope_window, end_horizon and stop_loss belong to the lead"),
        ({"end_horizon": 2}, "slope_window, end_horizon and stop_loss belong to the lead"),
        ({"stop_loss": 2.5}, "slope_window, end_horizon and stop_loss belong to the lead"),
        ({"horizon": 0}, "need horizon > 0 and max_scale > 0"),
        ({"max_scale": -1.0}, "need horizon > 0 and max_scale > 0"),
    ],
)
def test_bad_controller_parameters_are_refused(options, message):
    target = ReferenceTrajectory([3.0, 2.8, 2.5], [0.1, 0.2, 0.3], axis="validation_loss")
    with pytest.raises(ValueError, match=message):
        ExposureController(target, **options)


@pytest.mark.parametrize(
    "target",
    [ReferenceTrajectory([5, 10], [0.1, 0.2]), BudgetWindow(0.1, 0, 10)],
    ids=["step axis", "budget window"],
)
def test_lead_needs_a_reference_on_the_validation_loss_axis(target):
    with pytest.raises(ValueError, match="needs a ReferenceTrajectory on the validation_loss"):
        ExposureController(target, lead=3, slope_window=8)


def test_lead_needs_the_progress():
    target = ReferenceTrajectory([3.0, 2.5], [0.1, 0.3], axis="validation_loss")
    controller = ExposureController(target, lead=3, slope_window=8)
    with pytest.raises(ValueError, match="pass progress"):
        controller.scale(1, 1e-5)
