"""Conditions x seeds of one scale, expanded from the pre-registration plan.

A condition fixes every noise-generating factor of a run (global batch, peak
learning rate); the seed fixes initialization and data order, and is shared
across conditions (DESIGN §3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

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
    # Noise arms (issue 10); the defaults are a plain run of the batch sweep.
    noise: dict = field(default_factory=dict)  # resolved noise options, {} = none; key "form"
    reference: str | None = None  # condition (same seed) whose trace the run needs
    role: str = "condition"  # condition | reference (a run registered only as a reference)
    phase: str | None = None  # early | mid | late (phase_schedule)
    pne_budget: float | None = None  # registered budget level, in units (phase_schedule)

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


def largest_batch_run(arm: str, scale_def: dict, seed: int, **fields) -> RunSpec:
    """A run at the sweep's largest batch with the fixed LR: the base of every noise arm.

    Only ``fields`` (condition, noise options, reference, phase, budget) differ
    from the batch sweep's ``bs{max}_fixed`` run of the same seed (issue 10, item 7).
    """
    batches = sorted(int(b) for b in scale_def["global_batch"])
    base = batch_sweep({"lr_rules": ["fixed"]}, scale_def | {"global_batch": batches}, [seed], "")
    return replace(base[-1], arm=arm, **fields)


def reference_run(arm: str, scale_def: dict, seed: int, which: int) -> RunSpec:
    """The batch sweep's fixed-LR run at batch index ``which`` (0 smallest, -1 largest)."""
    batches = sorted(int(b) for b in scale_def["global_batch"])
    spec = batch_sweep({"lr_rules": ["fixed"]}, scale_def | {"global_batch": batches}, [seed], "")
    return replace(spec[which], arm=arm, role="reference")


def _arm_seeds(arm_scale: dict, key: str, source: str) -> list[int]:
    seeds = arm_scale.get("seeds", {})
    value = seeds.get(key) if isinstance(seeds, dict) else seeds
    if not value:
        raise PlanError(f"{source}: design.scales.<scale>.arms has no seeds for {key!r}")
    return [int(s) for s in value]


def noise_injection(arm_def: dict, scale_def: dict, seeds: list[int], source: str) -> list[RunSpec]:
    """inj_<form>_bs{max}: injected noise tracking the same-seed bs{min}_fixed run (H3).

    The reference runs are registered too (role ``reference``); ``expand_design``
    keeps the batch sweep's copy of a (condition, seed) registered by both.
    """
    largest = max(int(b) for b in scale_def["global_batch"])
    specs = []
    for form, options in arm_def["forms"].items():
        for seed in _arm_seeds(scale_def, form, source):
            ref = reference_run("noise_injection", scale_def, seed, 0)
            noise = {"form": form, **(options or {}), "controller": dict(arm_def["controller"])}
            specs.append(ref)
            specs.append(
                largest_batch_run(
                    "noise_injection", scale_def, seed, condition=f"inj_{form}_bs{largest}",
                    noise=noise, reference=ref.condition,
                )
            )  # fmt: skip
    return specs


def phase_schedule(arm_def: dict, scale_def: dict, seeds: list[int], source: str) -> list[RunSpec]:
    """phase_<phase>_b<level>_bs{max}: a P-NE* budget added uniformly in a registered window (H2).

    The budget is ``level`` times the unit, the integrated P-NE* of the same-seed
    bs{max}_fixed run (the reference); windows are fractions of that run's steps.
    """
    largest = max(int(b) for b in scale_def["global_batch"])
    specs = []
    for seed in _arm_seeds(scale_def, "phase_schedule", source):
        unit = reference_run("phase_schedule", scale_def, seed, -1)
        specs.append(unit)
        for phase, window in arm_def["windows"].items():
            for level in arm_def["budget_levels"]:
                noise = {"form": arm_def["form"], "window": [float(w) for w in window],
                         "controller": dict(arm_def["controller"])}  # fmt: skip
                specs.append(
                    largest_batch_run(
                        "phase_schedule", scale_def, seed,
                        condition=f"phase_{phase}_b{level:g}_bs{largest}".replace(".", "p"),
                        noise=noise, reference=unit.condition, phase=phase,
                        pne_budget=float(level),
                    )
                )  # fmt: skip
    return specs


def precond_freeze(arm_def: dict, scale_def: dict, seeds: list[int], source: str) -> list[RunSpec]:
    """freeze_bs{max}: Adam's second moment frozen from the registered step on (exploratory)."""
    largest = max(int(b) for b in scale_def["global_batch"])
    noise = {"form": "precond_freeze", "freeze_at_step": int(scale_def["freeze_at_step"])}
    return [
        largest_batch_run(
            "precond_freeze", scale_def, seed, condition=f"freeze_bs{largest}", noise=noise
        )  # fmt: skip
        for seed in _arm_seeds(scale_def, "precond_freeze", source)
    ]


def sgld(arm_def: dict, scale_def: dict, seeds: list[int], source: str) -> list[RunSpec]:
    """sgld_T<T>_bs{max}: update noise of variance 2 eta_t T at registered temperatures."""
    largest = max(int(b) for b in scale_def["global_batch"])
    return [
        largest_batch_run(
            "sgld", scale_def, seed, condition=f"sgld_T{float(t):g}_bs{largest}",
            noise={"form": "sgld", "temperature": float(t)},
        )
        for t in scale_def["temperatures"]
        for seed in _arm_seeds(scale_def, "sgld", source)
    ]  # fmt: skip


def nap(arm_def: dict, scale_def: dict, seeds: list[int], source: str) -> list[RunSpec]:
    """nap_bs{max}: NAP noise (seed 002) tracking the same-seed bs{min}_fixed run.

    ``nap_token_cap`` in the arm's scale block (D9) is the NAP runs' own token cap, and
    with it the length of their learning-rate schedule; their references keep the
    scale's.
    """
    largest = max(int(b) for b in scale_def["global_batch"])
    cap = int(scale_def.get("nap_token_cap", scale_def["token_cap"]))
    specs = []
    for seed in _arm_seeds(scale_def, "nap", source):
        ref = reference_run("nap", scale_def, seed, 0)
        noise = {"form": "nap", "rank": int(arm_def["rank"]),
                 "lambda_rel": float(arm_def["lambda_rel"]),
                 "controller": dict(arm_def["controller"])}  # fmt: skip
        specs += [ref, largest_batch_run("nap", scale_def, seed, condition=f"nap_bs{largest}",
                                         noise=noise, reference=ref.condition,
                                         token_cap=cap)]  # fmt: skip
    return specs


def regression_sweep(
    arm_def: dict, scale_def: dict, seeds: list[int], source: str
) -> list[RunSpec]:
    """The batch-size sweep on the in-context regression family (``training.regression.task``).

    Conditions ``reg_bs<B>_<rule>``; the arm's scale block registers its own global
    batches, peak LR, target (validation squared error), token cap and validation
    schedule, which override the scale's, plus the family's ``task`` and ``model``.
    """
    specs = batch_sweep(arm_def, scale_def, seeds, source)
    return [replace(s, condition=f"reg_{s.condition}", arm="regression_sweep") for s in specs]


ARMS = {
    "batch_sweep": batch_sweep,
    "noise_injection": noise_injection,
    "phase_schedule": phase_schedule,
    "precond_freeze": precond_freeze,
    "sgld": sgld,
    "nap": nap,
    "regression_sweep": regression_sweep,  # the sweep on the regression task family
}


def arm_family(plan: dict, arm: str) -> str:
    """The task family an arm trains on (plan ``design.arms.<arm>.family``; default language).

    The language family is the study's LM corpus; ``regression`` is in-context linear
    regression (``training.regression.task``), with its own model head and target.
    """
    return plan["design"]["arms"].get(arm, {}).get("family", "language")


def expand_design(plan: dict, scale: str, source: str = "plan") -> list[RunSpec]:
    """All run specs of ``scale``: the registered arms' conditions x the registered seeds."""
    design = scale_design(plan, scale, source)
    arm_defs = plan["design"]["arms"]
    specs: list[RunSpec] = []
    sweep = design["arms"].get("batch_sweep", {})
    for arm, arm_scale in design["arms"].items():
        if arm not in ARMS:
            raise PlanError(f"{source}: arm {arm!r} has no implementation (known: {sorted(ARMS)})")
        scale_def = {**design, **sweep, **arm_scale}
        specs += ARMS[arm](arm_defs.get(arm, {}), scale_def, design["seeds"], source)
    return unique_runs(specs)


def unique_runs(specs: list[RunSpec]) -> list[RunSpec]:
    """One spec per (condition, seed): a run registered by several arms is run once.

    The first registration stands (the batch sweep's, which expand_design lists
    first); a reference run registered by two arms is the same run. Two
    registrations of one (condition, seed) that differ in more than arm and role
    are a plan error.
    """
    seen: dict[tuple[str, int], RunSpec] = {}
    for spec in specs:
        key = (spec.condition, spec.seed)
        first = seen.setdefault(key, spec)
        if replace(first, arm=spec.arm, role=spec.role) != spec:
            raise PlanError(f"run {spec.run_id} is registered twice with different settings")
    return list(seen.values())
