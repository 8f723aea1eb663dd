"""Simulated runs tables: the registered design with outcomes drawn from a known model.

Used to check the analysis where the truth is known (tests of size and power,
``analysis.exploratory.power``) and to exercise the report and figures before any real run
exists. The table follows ``preregistration.tables.RUNS`` and the registered condition
names of ``preregistration.design.expand_design``; ``causal_arm_specs`` adds the
causal arms (noise injection, phase schedules, exploratory freeze / SGLD / NAP) as
the arms contract of issue 10 registers them, for a plan that does not list them yet.

Generative model (per run i of condition c and seed s):

    log E_cs  = log(lr_c / lr_base) + log(B_ref / B_c) + log_exposure_offset + 0.1 z
    icl_cs    = icl_mean + icl_slope (log E_cs - mean log E) + u_s + e_cs
    mem_cs    = mem_mean + mem_slope (log E_cs - mean log E) + v_s + f_cs

u_s ~ N(0, sd_seed^2), e ~ N(0, sd_resid^2) (likewise v, f), the final loss uniform
within the registered tolerance. Integrated P-NE* E grows with the learning rate
and with 1 / B, as the metric says it should (DESIGN §2). The mean log E is over
the runs without noise. The causal arms:

- an injected run (a ``reference``, form gaussian / anisotropic / student_t) has
  the exposure of its reference times r ~ exp(N(0, 0.02^2)) and
  icl += injection_diff[form], so the true H3 difference (reference - injected)
  is -injection_diff[form];
- a phase run has log E of its condition's batch plus log(1 + pne_budget) and
  icl += phase_effect * {early: -1/2, mid: 0, late: +1/2}, so the true H2
  late - early contrast is phase_effect; its realised budget is 1 + N(0, 0.01^2);
- freeze, SGLD and NAP runs follow the batch model of their batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from analysis.runs.noise_columns import design_columns
from preregistration.design import arm_family, expand_design
from preregistration.tables import LM_EVAL_RUN_MEASURES, PROBE_RUN_MEASURES, validate

INJECTED_FORMS = ("gaussian", "anisotropic", "student_t")
PHASE_SHIFT = {"early": -0.5, "mid": 0.0, "late": 0.5}


@dataclass(frozen=True)
class SimulatedSpec:
    """A run spec with the causal arms' fields (``RunSpec`` plus the contract's fields)."""

    condition: str
    arm: str
    seed: int
    global_batch: int
    lr_peak: float
    lr_rule: str
    target_val_loss: float
    target_tolerance: float
    token_cap: int
    validation: tuple[int, int, float]
    noise: dict = field(default_factory=dict)  # {} = no noise; key "form" otherwise
    reference: str | None = None  # condition (same seed) the controller follows
    role: str = "condition"  # condition | reference
    phase: str | None = None  # early | mid | late (phase_schedule)
    pne_budget: float | None = None  # registered budget level (phase_schedule)

    @property
    def run_id(self) -> str:
        return f"{self.condition}_s{self.seed}"


def sweep_specs(plan: dict, scale: str = "cpu") -> list:
    """The batch-sweep runs of ``scale`` (the base ``causal_arm_specs`` adds the causal
    arms to, whatever else the plan registers)."""
    return [s for s in expand_design(plan, scale) if s.arm == "batch_sweep"]


def causal_arm_specs(
    specs: list,
    injection_seeds: list[int] | None = None,
    exploratory_seeds: list[int] | None = None,
    phase_seeds: list[int] | None = None,
    budgets: tuple[float, ...] = (1.0, 2.0),
    forms: tuple[str, ...] = INJECTED_FORMS,
    exploratory: tuple[str, ...] = ("precond_freeze", "sgld", "nap"),
) -> list[SimulatedSpec]:
    """The batch-sweep ``specs`` plus the causal arms the contract registers.

    At the largest batch with a fixed LR: ``inj_<form>_bs<B>`` (reference the
    smallest batch, fixed LR; form ``forms[0]`` on ``injection_seeds``, the others
    on ``exploratory_seeds``), reference runs of the smallest batch for injection
    seeds the sweep lacks (role ``reference``), ``phase_<phase>_b<level>`` on
    ``phase_seeds`` and one exploratory condition per form of ``exploratory`` on
    ``exploratory_seeds``. Seeds default to the sweep's. An arm ``specs`` already
    holds (a plan that registers it) is not added again.
    """
    sweep = [s for s in specs if s.arm == "batch_sweep"]
    if not sweep:
        raise ValueError("causal_arm_specs: the specs have no batch_sweep run")
    seeds = sorted({s.seed for s in sweep})
    injection_seeds = list(injection_seeds if injection_seeds is not None else seeds)
    exploratory_seeds = list(exploratory_seeds if exploratory_seeds is not None else seeds)
    phase_seeds = list(phase_seeds if phase_seeds is not None else seeds)
    fixed = [s for s in sweep if s.lr_rule == "fixed"] or sweep
    small = min(fixed, key=lambda s: s.global_batch)
    large = max(fixed, key=lambda s: s.global_batch)
    own = {f.name for f in fields(SimulatedSpec)}
    core = own - {"condition", "arm", "seed", "noise", "reference", "role", "phase", "pne_budget"}
    base = {k: v for k, v in asdict(large).items() if k in core}
    out = [SimulatedSpec(**{k: v for k, v in asdict(s).items() if k in own}) for s in specs]
    present = {s.arm for s in specs}  # an arm the plan registers already is not added
    have = {(s.condition, s.seed) for s in out}
    for seed in injection_seeds if "noise_injection" not in present else []:
        if (small.condition, seed) not in have:
            ref = {k: v for k, v in asdict(small).items() if k in core}
            out.append(SimulatedSpec(
                **ref, condition=small.condition, arm="noise_injection", seed=seed,
                role="reference",
            ))  # fmt: skip
    b = large.global_batch
    for i, form in enumerate(forms if "noise_injection" not in present else ()):
        for seed in injection_seeds if i == 0 else exploratory_seeds:
            out.append(SimulatedSpec(
                **base, condition=f"inj_{form}_bs{b}", arm="noise_injection", seed=seed,
                noise={"form": form}, reference=small.condition,
            ))  # fmt: skip
    for seed in phase_seeds if "phase_schedule" not in present else []:
        for level in budgets:
            for phase in PHASE_SHIFT:
                out.append(SimulatedSpec(
                    **base, condition=f"phase_{phase}_b{level:g}", arm="phase_schedule",
                    seed=seed, noise={"form": "gaussian"}, reference=large.condition,
                    phase=phase, pne_budget=float(level),
                ))  # fmt: skip
    names = {"precond_freeze": f"freeze_bs{b}", "sgld": f"sgld_T1_bs{b}", "nap": f"nap_bs{b}"}
    for form in [f for f in exploratory if f not in present]:
        for seed in exploratory_seeds:
            out.append(SimulatedSpec(
                **base, condition=names[form], arm=form, seed=seed, noise={"form": form},
            ))  # fmt: skip
    return out


def simulated_specs(
    plan: dict, scale: str, specs: list | None, arms: list[str] | None, seeds: list[int] | None
) -> list:
    """The language runs ``simulate_runs`` fills in: ``specs`` (default: the scale's
    design) of ``arms``, each condition at every seed of ``seeds`` when given."""
    specs = list(specs if specs is not None else expand_design(plan, scale))
    # the regression family's arms are not simulated
    specs = [s for s in specs if arm_family(plan, s.arm) == "language"]
    if arms is not None:
        specs = [s for s in specs if s.arm in arms]
    if seeds is not None:
        base = {(s.arm, s.condition): s for s in reversed(specs)}  # first spec of each
        specs = [
            type(s)(**{**s.__dict__, "seed": int(seed)}) for s in base.values() for seed in seeds
        ]
    return specs


def final_losses(
    specs: list, rng: np.random.Generator, n_excluded: int
) -> tuple[np.ndarray, np.ndarray]:
    """Final validation losses within each run's target tolerance, and the statuses:
    the last ``n_excluded`` runs end at the token cap, 3 tolerances above target."""
    target = np.array([s.target_val_loss for s in specs])
    tol = np.array([s.target_tolerance for s in specs])
    loss = target + tol * rng.uniform(-1, 1, size=len(specs))
    status = np.array(["reached_target"] * len(specs), dtype=object)
    if n_excluded:
        status[-n_excluded:] = "token_cap"
        loss[-n_excluded:] = target[-n_excluded:] + 3 * tol[-n_excluded:]
    return loss, status


def simulated_log_exposure(
    specs: list,
    design: pd.DataFrame,
    injected: np.ndarray,
    lrs: np.ndarray,
    batches: np.ndarray,
    lr_base: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """log of each run's simulated integrated exposure: log(lr / lr_base) + log(B_ref / B)
    + log 50 (an injected run at its reference's lr and B, the injection matching its
    exposure), plus N(0, 0.1^2), plus log(1 + budget) for a phase schedule."""
    own = {s.condition: (s.lr_peak, s.global_batch) for s in specs}
    lr_e = np.array([own.get(getattr(s, "reference", None), (s.lr_peak, 0))[0] for s in specs])
    b_e = np.array([own.get(getattr(s, "reference", None), (0, s.global_batch))[1] for s in specs])
    lr_e, b_e = np.where(injected, lr_e, lrs), np.where(injected, b_e, batches)
    b_ref = math.sqrt(batches.min() * batches.max())
    log_e = np.log(lr_e / lr_base) + np.log(b_ref / b_e) + math.log(50.0)
    log_e = log_e + 0.1 * rng.normal(size=len(specs))
    phased = (design["phase"] != "").to_numpy()
    return log_e + np.where(phased, np.log1p(design["pne_budget"].fillna(0.0)), 0.0)


def seed_intercepts(
    specs: list, sd_seed: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each run's seed intercepts of ICL and of memorization: N(0, sd_seed^2) per seed,
    ICL's drawn first."""
    seed_ids = sorted({s.seed for s in specs})
    u = dict(zip(seed_ids, sd_seed * rng.normal(size=len(seed_ids)), strict=True))
    v = dict(zip(seed_ids, sd_seed * rng.normal(size=len(seed_ids)), strict=True))
    return np.array([u[s.seed] for s in specs]), np.array([v[s.seed] for s in specs])


def injected_runs(design: pd.DataFrame) -> np.ndarray:
    """Whether each run is an injected-noise run (a noise form of its own, no phase)."""
    return design["noise_form"].isin(INJECTED_FORMS).to_numpy() & (design["phase"] == "")


def with_arm_measures(
    runs: pd.DataFrame, design: pd.DataFrame, ratio: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """The simulated runs with their design columns and the measures of the arms that
    have them: the controller's tracking error (runs with a reference), the P-NE* ratio
    to the reference (injected runs), the realised budget (phase schedules). The
    end-of-run evaluation measures are not simulated: missing, as for a run without them."""
    n = len(runs)
    injected = injected_runs(design)
    phased = (design["phase"] != "").to_numpy()
    controlled = (design["reference_run"] != "").to_numpy()
    runs = pd.concat([runs, design], axis=1)
    runs["tracking_error_median"] = np.where(controlled, rng.uniform(0.01, 0.08, size=n), np.nan)
    runs["pne_star_ratio_reference"] = np.where(injected, ratio, np.nan)
    runs["realised_budget"] = np.where(phased, 1 + 0.01 * rng.normal(size=n), np.nan)
    return runs.assign(**dict.fromkeys([*PROBE_RUN_MEASURES, *LM_EVAL_RUN_MEASURES], np.nan))


def simulate_runs(
    plan: dict,
    scale: str,
    icl_slope: float = 0.0,
    mem_slope: float = 0.0,
    sd_seed: float = 0.02,
    sd_resid: float = 0.02,
    icl_mean: float = 0.45,
    mem_mean: float = 0.6,
    n_excluded: int = 0,
    seeds: list[int] | None = None,
    random_state: int = 0,
    specs: list | None = None,
    arms: list[str] | None = None,
    phase_effect: float = 0.0,
    injection_diff: dict[str, float] | None = None,
) -> pd.DataFrame:
    """A runs table (``preregistration.tables.RUNS``) of the design with simulated outcomes.

    Parameters
    ----------
    plan, scale : dict, str
        The pre-registration plan and the scale whose design is simulated.
    icl_slope, mem_slope : float
        True slopes of ``icl_auc`` and ``memorization`` per unit log(int_pne_star).
    sd_seed, sd_resid : float
        Standard deviations of the seed intercept and of the run residual.
    n_excluded : int
        The last ``n_excluded`` runs get status ``token_cap`` and are excluded by the
        registered ``missed_target`` rule (their outcomes are still filled in).
    seeds : list of int, optional
        Seeds to simulate instead of the registered ones (power analysis): every
        condition of ``arms`` runs at every seed.
    specs : list of run specs, optional
        The design to simulate (default ``expand_design(plan, scale)``; see
        ``causal_arm_specs`` for the causal arms).
    arms : list of str, optional
        Simulate only the runs of these arms.
    phase_effect, injection_diff : float, dict
        True H2 late - early contrast; true shift of ICL per injected form.
    """
    specs = simulated_specs(plan, scale, specs, arms, seeds)
    injection_diff = injection_diff or {}
    design = pd.DataFrame([design_columns(s) for s in specs])
    rng = np.random.default_rng(random_state)
    batches = np.array([s.global_batch for s in specs], dtype=float)
    lrs = np.array([s.lr_peak for s in specs])
    b_ref = math.sqrt(batches.min() * batches.max())
    injected = injected_runs(design)
    lr_base = float(plan["design"]["scales"][scale]["lr_base"])
    log_e = simulated_log_exposure(specs, design, injected, lrs, batches, lr_base, rng)
    u_run, v_run = seed_intercepts(specs, sd_seed, rng)
    plain = (design["noise_form"] == "none").to_numpy()
    centred = log_e - log_e[plain].mean() if plain.any() else log_e - log_e.mean()
    n = len(specs)
    icl = icl_mean + icl_slope * centred + u_run
    icl = icl + sd_resid * rng.normal(size=n)
    icl = icl + phase_effect * design["phase"].map(PHASE_SHIFT).fillna(0.0).to_numpy()
    icl = icl + np.where(injected, design["noise_form"].map(injection_diff).fillna(0.0), 0.0)
    mem = mem_mean + mem_slope * centred + v_run
    mem = mem + sd_resid * rng.normal(size=n)
    fact = mem + 0.01 * rng.normal(size=n)
    loss, status = final_losses(specs, rng, n_excluded)
    excluded = status != "reached_target"
    steps = (4000 * b_ref / batches).astype(int)
    clip = rng.uniform(0.6, 1.0, size=n)
    ratio = np.exp(0.02 * rng.normal(size=n))
    runs = pd.DataFrame(
        {
            "run_id": [s.run_id for s in specs],
            "condition": [s.condition for s in specs],
            "arm": [s.arm for s in specs],
            "seed": [s.seed for s in specs],
            "global_batch": batches.astype(int),
            "lr_peak": lrs,
            "lr_rule": [s.lr_rule for s in specs],
            "status": status.astype(str),
            "excluded": excluded,
            "exclusion_reason": np.where(excluded, "missed_target", ""),
            "steps": steps,
            "tokens": steps * batches.astype(int) * 64,
            "final_val_loss": loss,
            "int_pne": np.exp(log_e) * 3.0,
            "int_pne_star": np.exp(log_e + np.where(injected, np.log(ratio), 0.0)),
            "int_pne_eff": np.exp(log_e) * 3.0 * clip,
            "int_pne_star_eff": np.exp(log_e) * clip,
            "int_pne_eta2": np.exp(log_e) * lrs,
            "b_simple_run": batches * rng.uniform(0.5, 2.0, size=n),
            "icl_auc": icl,
            "icl_acc_max_shots": icl + 0.1,
            "icl_acc_zero_shot": np.full(n, 0.125),
            "fact_recall": fact,
            "in_weights_accuracy": 2 * mem - fact,
            "memorization": mem,
            "induction_score": 0.5 + 0.1 * centred + 0.05 * rng.normal(size=n),
            "reg_icl_area": np.full(n, np.nan),
            "reg_excess_area": np.full(n, np.nan),
            "plan_hash": "0" * 64,
            "wall_time_s": rng.uniform(50, 100, size=n),
        }
    )
    return validate(with_arm_measures(runs, design, ratio, rng), "runs", source="simulate_runs")
