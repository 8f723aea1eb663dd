"""Conditions x seeds of one scale, expanded from the pre-registration plan.

A condition fixes every noise-generating factor of a run (global batch, peak
learning rate); the seed fixes initialization and data order, and is shared
across conditions (DESIGN §3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from preregistration.plan import PlanError, scale_design

LR_RULES = ("fixed", "sqrt", "linear")


@dataclass(frozen=True)
class RunSpec:
    condition: str  # registered condition name, e.g. "bs16_sqrt"
    arm: str  # registered arm, e.g. "batch_sweep"
    seed: int  # initialization and data-order seed
    global_batch: int  # B = m * K * W, sequences per optimizer step
    lr_peak: float  # peak learning rate after the LR rule
    lr_rule: str  # fixed | sqrt | linear
    target_val_loss: float
    target_tolerance: float
    token_cap: int
    validation: tuple[int, int, float]  # (every_tokens, near_target_every_tokens, band)

    @property
    def run_id(self) -> str:
        return f"{self.condition}_s{self.seed}"

    def as_dict(self) -> dict:
        return asdict(self) | {"run_id": self.run_id}


def scaled_lr(lr_base: float, batch: int, batch_ref: float, rule: str) -> float:
    """Peak LR under a batch-size rule: fixed, sqrt (lr * sqrt(B/B_ref)), linear (lr * B/B_ref)."""
    if rule == "fixed":
        return lr_base
    if rule == "sqrt":
        return lr_base * math.sqrt(batch / batch_ref)
    if rule == "linear":
        return lr_base * batch / batch_ref
    raise ValueError(f"unknown LR rule {rule!r}; expected one of {LR_RULES}")


def batch_sweep(arm_def: dict, scale_def: dict, seeds: list[int], source: str) -> list[RunSpec]:
    """Every (global batch, LR rule) pair of the batch-size sweep, for every seed.

    B_ref is the geometric mean of the smallest and largest batch, so that no
    scaled condition duplicates a fixed one.
    """
    batches = sorted(int(b) for b in scale_def["global_batch"])
    rules = arm_def.get("lr_rules", ["fixed"])
    if len(batches) < 2:
        raise PlanError(f"{source}: batch_sweep needs at least two global batch sizes")
    batch_ref = math.sqrt(batches[0] * batches[-1])
    return [
        RunSpec(
            condition=f"bs{b}_{rule}",
            arm="batch_sweep",
            seed=int(seed),
            global_batch=b,
            lr_peak=scaled_lr(float(scale_def["lr_base"]), b, batch_ref, rule),
            lr_rule=rule,
            target_val_loss=float(scale_def["target_val_loss"]),
            target_tolerance=float(scale_def["target_tolerance"]),
            token_cap=int(scale_def["token_cap"]),
            validation=validation_schedule(scale_def),
        )
        for b in batches
        for rule in rules
        for seed in seeds
    ]


def validation_schedule(scale_def: dict) -> tuple[int, int, float]:
    """The registered validation schedule of a scale (plan ``stopping``), as a plain tuple."""
    schedule = scale_def["validation"]
    return (
        int(schedule["every_tokens"]),
        int(schedule["near_target_every_tokens"]),
        float(schedule["near_target_band"]),
    )


def regression_sweep(
    arm_def: dict, scale_def: dict, seeds: list[int], source: str
) -> list[RunSpec]:
    """The batch-size sweep on the in-context regression family (``training.regression_task``).

    Conditions ``reg_bs<B>_<rule>``; the arm's scale block registers its own global
    batches, peak LR, target (validation squared error), token cap and validation
    schedule, which override the scale's, plus the family's ``task`` and ``model``.
    """
    specs = batch_sweep(arm_def, scale_def, seeds, source)
    return [replace(s, condition=f"reg_{s.condition}", arm="regression_sweep") for s in specs]


ARMS = {"batch_sweep": batch_sweep}
ARMS["regression_sweep"] = regression_sweep  # the sweep on the regression task family


def expand_design(plan: dict, scale: str, source: str = "plan") -> list[RunSpec]:
    """All run specs of ``scale``: the registered arms' conditions x the registered seeds."""
    design = scale_design(plan, scale, source)
    arm_defs = plan["design"]["arms"]
    specs: list[RunSpec] = []
    for arm, arm_scale in design["arms"].items():
        if arm not in ARMS:
            raise PlanError(f"{source}: arm {arm!r} has no implementation (known: {sorted(ARMS)})")
        scale_def = {**design, **arm_scale}
        specs += ARMS[arm](arm_defs.get(arm, {}), scale_def, design["seeds"], source)
    return specs
