"""Online control of injected noise so a run's integrated P-NE* follows a target (issue 10).

The target T(p_t) is a function of a progress coordinate p_t of the run:

- ``ReferenceTrajectory(axis="validation_loss")`` (registered for noise_injection
  and nap, plan.yaml): p_t is the run's best validation loss so far and T(p) the
  reference run's integrated P-NE* when its best validation loss was p (linear
  between its validations). Both runs stop at the same target loss, so the run
  ends near the reference's final integrated P-NE*. Matching along optimizer
  steps instead (``axis="optimizer_step"``) left an injected bs64 run at 53 % of
  the reference's exposure at its stop: it reached the target loss in 163 steps
  where the reference needed 284 (measured, cpu scale, seed 0).
- ``BudgetWindow`` (phase_schedule): p_t = t, T(t) an added budget spread
  uniformly over a window of steps, which the run's *injected* integral follows.

Control law: with I_{t-1} the controlled integral after step t - 1, n_t the
natural (sampling-noise) increment expected this step (the last step's) and u_t
the increment one unit of injected variance adds this step
(``NoiseLogger.injected_rate``),

    s_t = clip( (d_t + (T(p_{t-1}) - I_{t-1}) / h - n_t) / u_t,  0,  s_max )

with d_t = T(p_t) - T(p_{t-1}) on the step axis (the target's own slope); on
the loss axis, which moves in jumps at validations, d_t = (T(p_t) - T(p_{t-1})) / h
spreads a jump over about h steps. A gap closes over about h steps (h = ``horizon``).
On the loss axis the two terms add up to s_t = clip(((T(p_t) - I_{t-1}) / h - n_t) / u_t,
0, s_max): a proportional law, which lags a target rising by r a step by (h - 1) r. A
run that reaches the target loss faster than its reference in steps (every injected
run: 8x the batch) meets a steep T and stops before its exposure has caught up: on
the cpu scale 6 of 17 injected runs ended 5-10 % below the reference's final value.

Lead (opt-in: ``lead`` L, ``slope_window`` W, ``end_horizon`` h_end, ``stop_loss``
p_stop; loss axis only). The law aims at the target at the loss the run is expected
to show L steps ahead, from its own descent, and closes the gap in h_end steps once
that aim is the reference's final value:

    sigma_t = min(0, (p_t - p_{t-k}) / k)       (the run's best-loss slope per step)
    q_t     = p_t + L sigma_t                   (the loss expected L steps ahead)
    A_t     = T_end if q_t <= p_stop else T(q_t)     (T_end: the reference's last value)
    h_t     = h_end if A_t >= T_end else h
    s_t     = clip( ((A_t - I_{t-1}) / h_t - n_t) / u_t,  0,  s_max )

p_{t-k} is the earliest finite progress the controller was given in the last W steps
(k <= W; sigma_t = 0 before two). With L = h - 1 the ramp lag (h - 1) r is
cancelled to first order; T(p_t + L sigma_t) is held at T_end past the reference's
last validation loss, so the law never aims beyond the reference's final exposure.
The aim is T_end, and h_end closes what is left, once the run is expected to reach
within L steps the reference's final loss or the loss p_stop at which the run stops
(its target; None: -inf). Both runs stop at the first validation at or below the
target, so T_end is the reference's exposure at the target: a reference that hovers
just above it before it stops has gained exposure that T, linear in loss between its
best validations, places below the target loss (a bs64 run stopped at 0.94 of such a
reference with the lead alone, at 0.99 of T there). Only tracking information enters
(the run's own losses and integrals, the reference's trace). Without ``lead`` the law
is the one above, bit for bit. A drop in loss at the validation that stops the run
cannot be answered by any causal law: what it adds to T is missing at the stop.

Usage in any training loop::

    target = ReferenceTrajectory.from_trace(reference_trace, "validation_loss")
    controller = ExposureController(target)
    for step in ...:
        unit = noise.unit_covariance(diag)                  # diag(Cov) at s = 1
        scale = controller.scale(step, logger.injected_rate(unit, lr), progress=best_val_loss)
        logger.add_injected(noise.inject(scale))
        ...; logger.after_update(...)
        controller.observe(step, logger.sums["int_pne_star"], logger.injected_sum)

Reported per run (``summary``): the median over 10 equal windows of the run's
steps (of the budget window, for a phase schedule) of |Delta I_w - Delta T_w| /
Delta T_w, T the target the controller had at each step where it moved (T(p_t),
not the aim A_t of the lead), both
linear in between (tracking error); I at
the stop / the reference's final integrated P-NE* (ratio); for a budget window
the injected P-NE* placed inside it / the registered budget (realised budget).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

N_WINDOWS = 10
AXES = ("optimizer_step", "validation_loss")


class ReferenceTrajectory:
    """T(p): the reference's integrated P-NE* at progress p (step, or best validation loss).

    ``positions`` are steps (strictly increasing; T = 0 at step 0, held after the
    last) or validation losses in the order of validation (their running
    minimum is used; T is linear in the loss between strict improvements and
    held outside; T = 0 before any validation).
    """

    def __init__(self, positions, values, source: str = "reference trace", axis: str = AXES[0]):
        positions, values = np.asarray(positions, float), np.asarray(values, float)
        if axis not in AXES:
            raise ValueError(f"{source}: unknown progress axis {axis!r}; expected one of {AXES}")
        if positions.size == 0 or not np.all(np.isfinite(values) & np.isfinite(positions)):
            raise ValueError(
                f"{source}: int_pne_star and the {axis} axis must be finite ({positions.size} rows)"
            )
        self.axis, self.injected_only, self.final = axis, False, float(values[-1])
        if axis == "optimizer_step":
            if np.any(np.diff(positions) <= 0):
                raise ValueError(f"{source}: steps must be strictly increasing")
            self.x, self.y = np.concatenate([[0.0], positions]), np.concatenate([[0.0], values])
            self.end = float(positions[-1])
        else:
            best = np.minimum.accumulate(positions)
            keep = np.concatenate([[True], best[1:] < best[:-1]])
            self.x, self.y = -best[keep], values[keep]  # increasing in -loss
            self.end = math.inf
        self.last = float(self.y[-1])  # T held past the last position

    @classmethod
    def from_trace(cls, trace, axis: str, source: str = "reference trace") -> ReferenceTrajectory:
        """From a steps table: every row (step axis) or the validated rows (loss axis)."""
        trace = trace.sort_values("step")
        if axis == "validation_loss":
            rows = trace[trace["validated"].astype(bool)]
            return cls(rows["val_loss"], rows["int_pne_star"], source, axis)
        return cls(trace["step"], trace["int_pne_star"], source, axis)

    def __call__(self, progress: float) -> float:
        if self.axis == "validation_loss" and not math.isfinite(progress):
            return 0.0
        position = -progress if self.axis == "validation_loss" else progress
        return float(np.interp(position, self.x, self.y))


class BudgetWindow:
    """T(t) = budget * clip((t - start) / (stop - start), 0, 1), for the injected integral."""

    def __init__(self, budget: float, start: float, stop: float):
        if not (budget >= 0 and 0 <= start < stop):
            raise ValueError(
                f"budget window needs budget >= 0 and 0 <= start < stop; got {budget}, "
                f"[{start}, {stop})"
            )
        self.budget, self.start, self.end = budget, float(start), float(stop)
        self.injected_only, self.axis, self.final = True, "optimizer_step", budget

    def __call__(self, step: float) -> float:
        return self.budget * min(1.0, max(0.0, (step - self.start) / (self.end - self.start)))


class ExposureController:
    """The injected-variance scale s_t of every step, and the record to judge the tracking.

    Parameters
    ----------
    target : a ``ReferenceTrajectory`` (the total integral follows it) or a
        ``BudgetWindow`` (the injected integral follows it).
    horizon : h, steps over which a gap is closed.
    max_scale : s_max, the largest scale of one step.
    lead : L, steps ahead at which the law aims on the validation_loss axis (module
        docstring, "Lead"); None (default): the proportional law without lead.
    slope_window : W, steps over which the run's loss slope is measured (required with
        ``lead``).
    end_horizon : h_end, the horizon once the aim is the reference's final value (with
        ``lead``; default h).
    stop_loss : p_stop, the loss at or below which the run stops (with ``lead``; None:
        the aim is T_end only past the reference's last validation loss).
    """

    def __init__(
        self,
        target,
        horizon: float = 4.0,
        max_scale: float = 1e4,
        lead: float | None = None,
        slope_window: int | None = None,
        end_horizon: float | None = None,
        stop_loss: float | None = None,
    ):
        if not (horizon > 0 and max_scale > 0):
            raise ValueError(
                f"exposure controller: need horizon > 0 and max_scale > 0, got {horizon} "
                f"and {max_scale}"
            )
        self.target, self.horizon, self.max_scale = target, horizon, max_scale
        self.lead, self.slope_window, self.end_horizon = lead, slope_window, end_horizon
        self.stop_loss = stop_loss
        if lead is not None:
            _check_lead(target, lead, slope_window, end_horizon, stop_loss)
        elif slope_window is not None or end_horizon is not None or stop_loss is not None:
            raise ValueError(
                "exposure controller: slope_window, end_horizon and stop_loss belong to the "
                f"lead; got {slope_window=}, {end_horizon=} and {stop_loss=} without lead"
            )
        # (step, total, injected, s, target) after every observed step
        self.history: list[tuple[int, float, float, float, float]] = []
        self._scale, self._target = 0.0, 0.0
        self._progress: list[tuple[int, float]] = []  # (step, p) of the last W + 1 steps

    def scale(self, step: int, unit_rate: float, progress: float | None = None) -> float:
        """s_t of step ``step`` given u_t (NaN or <= 0: no estimate of P yet, s = 0).

        ``progress`` is p_t on the target's axis (default: the step itself).
        """
        if self.lead is not None:
            return self._lead_scale(step, unit_rate, progress)
        previous = self._target
        self._target = self.target(step if progress is None else progress)
        self._scale = 0.0
        if not (math.isfinite(unit_rate) and unit_rate > 0):
            return 0.0
        injected_only = self.target.injected_only
        level, natural = 0.0, 0.0
        if self.history:
            _, total, injected, _, _ = self.history[-1]
            level = injected if injected_only else total
            if not injected_only:
                before = self.history[-2][1:3] if len(self.history) > 1 else (0.0, 0.0)
                natural = max(0.0, (total - before[0]) - (injected - before[1]))
        jump = self._target - previous
        slope = jump if self.target.axis == "optimizer_step" else jump / self.horizon
        wanted = slope + (previous - level) / self.horizon - natural
        self._scale = min(self.max_scale, max(0.0, wanted / unit_rate))
        return self._scale

    def _lead_scale(self, step: int, unit_rate: float, progress: float | None) -> float:
        """s_t of the law with lead (module docstring, "Lead")."""
        if progress is None:
            raise ValueError("exposure controller with lead: pass progress (the best validation "
                             "loss so far, inf before the first)")  # fmt: skip
        progress = float(progress)
        recent = [row for row in self._progress if row[0] >= step - self.slope_window]
        self._progress = recent + [(int(step), progress)]
        self._target = self.target(progress)
        self._scale = 0.0
        if not (math.isfinite(unit_rate) and unit_rate > 0):
            return 0.0
        aim = self.aim
        level, natural = 0.0, 0.0
        if self.history:
            _, total, injected, _, _ = self.history[-1]
            before = self.history[-2][1:3] if len(self.history) > 1 else (0.0, 0.0)
            level = total
            natural = max(0.0, (total - before[0]) - (injected - before[1]))
        end = self.end_horizon if self.end_horizon is not None else self.horizon
        horizon = end if aim >= self.target.last else self.horizon
        wanted = (aim - level) / horizon - natural
        self._scale = min(self.max_scale, max(0.0, wanted / unit_rate))
        return self._scale

    @property
    def loss_slope(self) -> float:
        """sigma_t: the run's best-loss change per step over the last W steps (<= 0)."""
        seen = [(step, p) for step, p in self._progress if math.isfinite(p)]
        if len(seen) < 2 or seen[-1][0] <= seen[0][0]:
            return 0.0
        return min(0.0, (seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0]))

    @property
    def aim(self) -> float:
        """A_t of the latest step (with lead; T(p_t) without): T(q_t), or T_end once
        q_t = p_t + L sigma_t is at or below the stop loss."""
        if self.lead is None or not self._progress:
            return self._target
        progress = self._progress[-1][1]
        if not math.isfinite(progress):
            return self._target
        expected = progress + self.lead * self.loss_slope
        if self.stop_loss is not None and expected <= self.stop_loss:
            return self.target.last
        return self.target(expected)

    @property
    def current_target(self) -> float:
        """T(p_t) of the latest step given to ``scale``."""
        return self._target

    def observe(self, step: int, total: float, injected: float) -> None:
        """Record the integrals after step ``step`` (the logger's sums)."""
        row = (int(step), float(total), float(injected), self._scale, self._target)
        self.history.append(row)

    def trajectory(self) -> dict[str, np.ndarray]:
        """Per-step arrays: step, noise_scale, target, controlled, injected and total integral."""
        h = np.asarray(self.history, float).reshape(-1, 5)
        controlled = h[:, 2] if self.target.injected_only else h[:, 1]
        return {"step": h[:, 0], "noise_scale": h[:, 3], "target": h[:, 4],
                "controlled": controlled, "injected": h[:, 2], "total": h[:, 1]}  # fmt: skip

    def summary(self) -> dict:
        """tracking_error_median, pne_star_ratio_reference, realised_budget (None if undefined)."""
        path = self.trajectory()
        out = {"tracking_error_median": None, "pne_star_ratio_reference": None,
               "realised_budget": None}  # fmt: skip
        if path["step"].size == 0:
            return out
        end = min(self.target.end, path["step"][-1])
        start = self.target.start if isinstance(self.target, BudgetWindow) else 0.0
        # The loss axis moves only at validations: judge the run at the steps where the
        # target moved (and the last), linear in between, so a window's target increment
        # does not depend on how many validations happen to fall into it.
        moved = np.diff(path["target"], prepend=0.0) != 0
        moved[-1] = True
        if end > start:
            out["tracking_error_median"] = tracking_error(
                path["step"][moved], path["controlled"][moved], path["target"][moved], start, end
            )
        if isinstance(self.target, BudgetWindow):
            steps, injected = path["step"], path["injected"]
            inside = _at(steps, injected, self.target.end) - _at(steps, injected, self.target.start)
            out["realised_budget"] = inside / self.target.budget if self.target.budget else None
        elif self.target.final > 0:
            out["pne_star_ratio_reference"] = float(path["total"][-1] / self.target.final)
        return out

    def state_dict(self) -> dict:
        state = {"history": list(self.history), "scale": self._scale, "target": self._target}
        if self.lead is not None:
            state["progress"] = list(self._progress)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(row) for row in state["history"]]
        self._scale, self._target = float(state["scale"]), float(state["target"])
        if self.lead is not None:
            if "progress" not in state:
                raise KeyError("controller state has no progress history: it was saved by a "
                               "controller without lead")  # fmt: skip
            self._progress = [(int(step), float(p)) for step, p in state["progress"]]


def _check_lead(target, lead, slope_window, end_horizon, stop_loss) -> None:
    """The lead's parameters, and a target on the validation_loss axis."""
    if not (isinstance(target, ReferenceTrajectory) and target.axis == "validation_loss"):
        raise ValueError(
            "exposure controller: lead aims along the run's validation loss and needs a "
            "ReferenceTrajectory on the validation_loss axis"
        )
    if isinstance(lead, bool) or not (isinstance(lead, Real) and math.isfinite(lead) and lead >= 0):
        raise ValueError(f"exposure controller: lead must be a finite number of steps >= 0, "
                         f"got {lead!r}")  # fmt: skip
    if isinstance(slope_window, bool) or not (
        isinstance(slope_window, Integral) and slope_window >= 1
    ):
        raise ValueError(f"exposure controller: slope_window must be an integer number of "
                         f"steps >= 1, got {slope_window!r}")  # fmt: skip
    if end_horizon is not None and not end_horizon >= 1:
        raise ValueError(f"exposure controller: end_horizon must be >= 1 step (a gap closed "
                         f"in one step at most), got {end_horizon!r}")  # fmt: skip
    if stop_loss is not None and not (isinstance(stop_loss, Real) and math.isfinite(stop_loss)):
        raise ValueError(f"exposure controller: stop_loss must be a finite loss, got "
                         f"{stop_loss!r}")  # fmt: skip


def _at(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """The value after ``step`` (0 before the first step, the last value after the end)."""
    return float(np.interp(step, np.concatenate([[0.0], steps]), np.concatenate([[0.0], values])))


def tracking_error(steps, integral, target, start: float, end: float) -> float | None:
    """Median over N_WINDOWS equal windows of steps [start, end] of |dI_w - dT_w| / dT_w.

    ``integral`` and ``target`` are the controlled integral and the target after
    each of ``steps``. Windows whose target increment is 0 are skipped; None when
    none is left.
    """
    edges = np.linspace(start, end, N_WINDOWS + 1)
    errors = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        d_target = _at(steps, target, b) - _at(steps, target, a)
        if d_target <= 0:
            continue
        d_run = _at(steps, integral, b) - _at(steps, integral, a)
        errors.append(abs(d_run - d_target) / d_target)
    return float(np.median(errors)) if errors else None
