"""Online control of injected noise so a run's integrated P-NE* follows a target (issue 10).

Progress axis: the optimizer step (plan.yaml, design.arms.noise_injection). The
target T(t) is either the reference run's integrated P-NE* after t updates
(``ReferenceTrajectory``, linear between its logged steps, held after its last),
or, for a phase schedule, an added budget spread uniformly over a window
(``BudgetWindow``), which the run's *injected* integral follows.

Control law (a proportional correction on top of the target's own slope): with
I_{t-1} the controlled integral after step t - 1, n_t the natural
(sampling-noise) increment expected this step (the last step's) and u_t the
increment one unit of injected variance adds this step (``NoiseLogger.injected_rate``),

    s_t = clip( (T(t) - T(t-1) + (T(t-1) - I_{t-1}) / h - n_t) / u_t,  0,  s_max )

so a gap closes over about h steps (h = ``horizon``) while the target moves on.

Usage in any training loop::

    controller = ExposureController(ReferenceTrajectory(ref_steps, ref_int_pne_star))
    for step in ...:
        unit = noise.unit_covariance(diag)
        scale = controller.scale(step, unit_rate=logger.injected_rate(unit, lr))
        logger.add_injected(noise.inject(scale))
        ...; logger.after_update(...)
        controller.observe(step, logger.sums["int_pne_star"], logger.injected_sum)

Reported per run (``summary``): the median over 10 equal windows of the
target's step range of |Delta I_w - Delta T_w| / Delta T_w (tracking error),
I at the stop / T at the target's end (ratio), and for a budget window the
injected P-NE* placed inside it / the registered budget (realised budget).
"""

from __future__ import annotations

import math

import numpy as np

N_WINDOWS = 10


class ReferenceTrajectory:
    """T(t): the reference's integrated P-NE* after t steps; 0 at t = 0, held after the end."""

    def __init__(self, steps, values, source: str = "reference trace"):
        steps, values = np.asarray(steps, float), np.asarray(values, float)
        if steps.size == 0 or not np.all(np.isfinite(values)) or np.any(np.diff(steps) <= 0):
            raise ValueError(
                f"{source}: int_pne_star must be finite at strictly increasing steps "
                f"({steps.size} rows)"
            )
        self.steps, self.values = np.concatenate([[0.0], steps]), np.concatenate([[0.0], values])
        self.end = float(steps[-1])
        self.injected_only = False

    def __call__(self, step: float) -> float:
        return float(np.interp(step, self.steps, self.values))


class BudgetWindow:
    """T(t) = budget * clip((t - start) / (stop - start), 0, 1), for the injected integral."""

    def __init__(self, budget: float, start: float, stop: float):
        if not (budget >= 0 and 0 <= start < stop):
            raise ValueError(f"budget window needs budget >= 0, 0 <= start < stop; got {budget}, "
                             f"[{start}, {stop})")  # fmt: skip
        self.budget, self.start, self.end = budget, float(start), float(stop)
        self.injected_only = True

    def __call__(self, step: float) -> float:
        return self.budget * min(1.0, max(0.0, (step - self.start) / (self.end - self.start)))


class ExposureController:
    """The injected-variance scale s_t of every step, and the record to judge the tracking.

    Parameters
    ----------
    target : a ``ReferenceTrajectory`` (total integral follows it) or ``BudgetWindow``
        (injected integral follows it).
    horizon : h, steps over which a gap is closed.
    max_scale : s_max, the largest scale of one step.
    """

    def __init__(self, target, horizon: float = 4.0, max_scale: float = 1e4):
        self.target, self.horizon, self.max_scale = target, horizon, max_scale
        self.history: list[tuple[int, float, float, float]] = []  # (step, total, injected, s)
        self._scale = 0.0

    def controlled(self, total: float, injected: float) -> float:
        return injected if self.target.injected_only else total

    def scale(self, step: int, unit_rate: float) -> float:
        """s_t for step ``step`` given u_t (NaN or <= 0: no estimate of P yet, s = 0)."""
        if not (math.isfinite(unit_rate) and unit_rate > 0):
            self._scale = 0.0
            return 0.0
        total, injected = self.history[-1][1:3] if self.history else (0.0, 0.0)
        level = self.controlled(total, injected)
        natural = 0.0
        if not self.target.injected_only and len(self.history) >= 2:
            (_, t0, i0, _), (_, t1, i1, _) = self.history[-2], self.history[-1]
            natural = max(0.0, (t1 - t0) - (i1 - i0))
        elif not self.target.injected_only and self.history:
            natural = self.history[-1][1] - self.history[-1][2]
        slope = self.target(step) - self.target(step - 1)
        wanted = slope + (self.target(step - 1) - level) / self.horizon - natural
        self._scale = min(self.max_scale, max(0.0, wanted / unit_rate))
        return self._scale

    def observe(self, step: int, total: float, injected: float) -> None:
        """Record the integrals after step ``step`` (the logger's sums)."""
        self.history.append((int(step), float(total), float(injected), self._scale))

    def trajectory(self) -> dict[str, np.ndarray]:
        """Per-step arrays: step, noise_scale, target, controlled integral, injected integral."""
        h = np.asarray(self.history, float).reshape(-1, 4)
        controlled = h[:, 2] if self.target.injected_only else h[:, 1]
        target = np.array([self.target(s) for s in h[:, 0]])
        return {"step": h[:, 0], "noise_scale": h[:, 3], "target": target,
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
        out["tracking_error_median"] = tracking_error(
            path["step"], path["controlled"], self.target, start, end
        )
        if isinstance(self.target, BudgetWindow):
            inside = _at(path["step"], path["injected"], self.target.end) - _at(
                path["step"], path["injected"], self.target.start
            )
            out["realised_budget"] = inside / self.target.budget if self.target.budget else None
        else:
            out["pne_star_ratio_reference"] = float(
                path["total"][-1] / self.target(self.target.end)
            )
        return out

    def state_dict(self) -> dict:
        return {"history": list(self.history), "scale": self._scale}

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(row) for row in state["history"]]
        self._scale = float(state["scale"])


def _at(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """The integral after ``step`` (0 before the first step, the last value after the end)."""
    return float(np.interp(step, np.concatenate([[0.0], steps]), np.concatenate([[0.0], values])))


def tracking_error(steps, integral, target, start: float, end: float) -> float | None:
    """Median over N_WINDOWS equal windows of [start, end] of |dI_w - dT_w| / dT_w.

    Windows whose target increment is 0 are skipped; None when none is left.
    """
    edges = np.linspace(start, end, N_WINDOWS + 1)
    errors = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        d_target = target(b) - target(a)
        if d_target <= 0:
            continue
        d_run = _at(steps, integral, b) - _at(steps, integral, a)
        errors.append(abs(d_run - d_target) / d_target)
    return float(np.median(errors)) if errors else None
