"""The noise options of one run (``RunSpec.noise``) as the trainer applies them (issue 10).

One object per run joins the libraries: an injector (``GradientNoise`` or
``NAPNoise``) with its ``ExposureController``, SGLD update noise, or the
preconditioner freeze. The trainer calls it at four points of a step::

    arm.after_micro_backward()                 # after each micro-batch backward (*)
    arm.before_clip(step, lr, val_loss)        # adds the injected noise to .grad
    arm.optimizer_step(step)                   # optimizer.step(), or the frozen-v step
    arm.after_optimizer_step(lr)               # SGLD noise; tells the logger what was added
    ... logger.after_update(...) ...
    arm.after_logger(step)                     # the controller reads the logger's integrals

(*) On every step when ``needs_micro_gradients``; otherwise the trainer may run a
step's micro-batches in one pass and not call it.

A run without noise options gets ``NoiseArm`` with form "none": every call is a
no-op and the optimizer step is ``optimizer.step()``, so such a run is bit for
bit the run it was before issue 10.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from gradnoise import (
    GRADIENT_FORMS,
    BudgetWindow,
    ExposureController,
    GradientNoise,
    NAPNoise,
    NoiseLogger,
    PreconditionerFreeze,
    ReferenceTrajectory,
    SGLDNoise,
    sgld_equivalent_diag,
)
from gradnoise.estimation import precond_sq_flat
from preregistration.design import RunSpec

CONTROLLED_FORMS = (*GRADIENT_FORMS, "nap")


class NoiseArm:
    """The run's noise: injector + controller, SGLD, or freeze (``spec.noise['form']``)."""

    def __init__(
        self,
        spec: RunSpec,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        logger: NoiseLogger,
        n_micro: int,
        micro_batch_size: int,
        world_size: int,
        reference_trace: pd.DataFrame | None,
    ):
        options = dict(spec.noise)
        self.form = options.get("form", "none")
        self.optimizer, self.logger = optimizer, logger
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.global_batch = spec.global_batch
        self.injector = self.controller = self.sgld = self.freeze = None
        if self.form in ("anisotropic", "nap") and world_size > 1:
            raise ValueError(
                f"run {spec.run_id}: noise form {self.form!r} uses this process's micro-batch "
                "gradients and is implemented for one process only (world size 1)"
            )
        if self.form in GRADIENT_FORMS:
            self.injector = GradientNoise(
                self.params, self.form, spec.seed, df=options.get("df"), n_micro=n_micro
            )
        elif self.form == "nap":
            self.injector = NAPNoise(
                self.params, rank=int(options["rank"]), lambda_rel=float(options["lambda_rel"]),
                n_micro=n_micro, micro_batch_size=micro_batch_size, seed=spec.seed,
            )  # fmt: skip
        elif self.form == "sgld":
            self.sgld = SGLDNoise(self.params, float(options["temperature"]), spec.seed)
        elif self.form == "precond_freeze":
            self.freeze = PreconditionerFreeze(optimizer, int(options["freeze_at_step"]))
        elif self.form != "none":
            raise ValueError(f"run {spec.run_id}: unknown noise form {self.form!r}")
        if self.injector is not None:
            target = controller_target(spec, reference_trace)
            control = options["controller"]
            self.controller = ExposureController(
                target, float(control["horizon"]), float(control["max_scale"]),
                **controller_lead(control, spec.target_val_loss),
            )  # fmt: skip
        # P = 1 before Adam's first step (NAP), diag(C) = 0 before the first estimate: made
        # once here, not on every step of the loop (unit_covariance only reads them).
        n_coords = sum(p.numel() for p in self.params)
        self._ones = torch.ones(n_coords, device=self.params[0].device)
        self._zeros = torch.zeros_like(self._ones)
        self._injected: torch.Tensor | None = None
        self._scale = math.nan
        self.best_val_loss = math.inf  # progress on the validation_loss axis

    @property
    def needs_micro_gradients(self) -> bool:
        """Whether the arm reads every step's K micro-batch gradients (``after_micro_backward``):
        the anisotropic form and NAP take their noise's structure from them."""
        return self.form in ("anisotropic", "nap")

    def after_micro_backward(self) -> None:
        if self.injector is not None:
            self.injector.after_micro_backward()

    def before_clip(self, step: int, lr: float, val_loss: float = math.nan) -> None:
        """Add this step's injected noise (scale from the controller) to the averaged .grad.

        ``val_loss`` is the latest validation loss (NaN before the first).
        """
        if self.injector is None:
            return
        if math.isfinite(val_loss):
            self.best_val_loss = min(self.best_val_loss, val_loss)
        progress = self.best_val_loss if self.controller.target.axis == "validation_loss" else step
        if isinstance(self.injector, NAPNoise):  # the latest P the logger applied (1 before)
            held = self.logger.latest_precond_sq
            unit = self.injector.unit_covariance(self._ones if held is None else held.sqrt())
        else:  # diag(C) / B of the latest logging step (0 before step 1)
            held = self.logger.held_cov_diag
            diag = self._zeros if held is None else held / self.global_batch
            unit = self.injector.unit_covariance(diag)
        rate = self.logger.injected_rate(unit, lr)
        self._scale = self.controller.scale(step, rate, progress)
        self._injected = self.injector.inject(self._scale)

    def optimizer_step(self, step: int) -> None:
        if self.freeze is not None:
            self.freeze.step(step)
        else:
            self.optimizer.step()

    def after_optimizer_step(self, lr: float) -> None:
        """SGLD noise on the parameters; the step's injected covariance to the logger."""
        if self.sgld is not None:
            self.sgld.perturb(lr)
            precond = precond_sq_flat(self.optimizer, self.params).sqrt()
            self._injected = sgld_equivalent_diag(precond, lr, self.sgld.temperature)
        if self._injected is not None:
            self.logger.add_injected(self._injected)
            self._injected = None

    def after_logger(self, step: int) -> None:
        if self.controller is not None:
            self.controller.observe(
                step, self.logger.sums["int_pne_star"], self.logger.injected_sum
            )

    def row(self, step: int) -> dict:
        """Trace columns noise_scale and target_int_pne_star of this step (NaN: no controller)."""
        if self.controller is None:
            return {"noise_scale": math.nan, "target_int_pne_star": math.nan}
        return {"noise_scale": self._scale, "target_int_pne_star": self.controller.current_target}

    def summary(self) -> dict:
        """meta.json ``noise_control``."""
        out = {"tracking_error_median": None, "pne_star_ratio_reference": None,
               "realised_budget": None}  # fmt: skip
        if self.controller is not None:
            out |= self.controller.summary()
        return out | {"form": self.form}

    def state_dict(self) -> dict:
        state = {"best_val_loss": self.best_val_loss}
        for name in ("injector", "controller", "sgld"):
            part = getattr(self, name)
            if part is not None:
                state[name] = part.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        for name in ("injector", "controller", "sgld"):
            part = getattr(self, name)
            if part is not None:
                if name not in state:
                    raise KeyError(f"resume state lacks the noise {name}'s state")
                part.load_state_dict(state[name])


def controller_lead(control: dict, target_val_loss: float) -> dict:
    """The controller's optional lead (``noise['controller']`` keys ``lead``,
    ``slope_window``, ``end_horizon``; gradnoise.control.controller, "Lead").

    With ``lead`` the run's stop loss is its registered target (``stop_loss``). None of
    them given: the proportional law as registered before (issue 22). The controller
    checks their values.
    """
    out = {key: control[key] for key in ("lead", "slope_window", "end_horizon") if key in control}
    return out | ({"stop_loss": float(target_val_loss)} if "lead" in control else {})


def controller_target(spec: RunSpec, trace: pd.DataFrame | None):
    """The controller's target from the reference run's trace (``spec.reference``).

    noise_injection / nap: the reference's integrated P-NE* along the registered
    axis (``noise['controller']['axis']``). phase_schedule:
    ``pne_budget`` x the reference's final integrated P-NE*, spread over
    ``noise['window']`` x the reference's steps.
    """
    if trace is None or len(trace) == 0:
        raise ValueError(
            f"run {spec.run_id}: noise form {spec.noise.get('form')!r} needs the trace of its "
            f"reference run {spec.reference!r} (training.run --reference-trace)"
        )
    trace = trace.sort_values("step")
    source = f"reference trace of {spec.run_id} ({spec.reference})"
    if spec.pne_budget is None:
        return ReferenceTrajectory.from_trace(trace, spec.noise["controller"]["axis"], source)
    steps, total = float(trace["step"].iloc[-1]), float(trace["int_pne_star"].iloc[-1])
    if not (math.isfinite(total) and total > 0):
        raise ValueError(f"{source}: final int_pne_star {total} is not a positive budget unit")
    start, stop = spec.noise["window"]
    return BudgetWindow(spec.pne_budget * total, start * steps, stop * steps)
