"""The plan's ``replay`` section as a typed object (schema: preregistration/plan.schema.json).

Which runs record for replay, where the segments start, how long they are, which
candidates, metrics and Jacobians the replay stage reads (deviation D10; issue 21).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from preregistration.design import RunSpec, expand_design
from preregistration.plan import PlanError
from training.recording import RECORD_DIR, ReplayRecording
from training.replay.candidates import CANDIDATES
from training.replay.metrics import METRICS

JACOBIAN_NAMES = ("adamw", "sgd", "identity")


@dataclass(frozen=True)
class ReplayPlan:
    """The registered replay of one scale."""

    base_condition: str
    base_seeds: tuple[int, ...]  # the registered seeds of the base condition at this scale
    record_every: int
    switch_points: tuple[float, ...]
    horizons: tuple[int, ...]
    candidates: tuple[str, ...]
    noise_floor_draws: int
    metrics: tuple[str, ...]
    jacobians: tuple[str, ...]
    interval_level: float
    bootstrap: int
    icl_episodes: int

    @property
    def horizon(self) -> int:
        """The retrain's length: the largest horizon."""
        return max(self.horizons)

    @property
    def floor_draws(self) -> tuple[str, ...]:
        return tuple(f"fresh_draw_{j}" for j in range(1, self.noise_floor_draws + 1))

    def records(self, spec: RunSpec) -> bool:
        return spec.condition == self.base_condition and spec.seed in self.base_seeds

    def recording(self, spec: RunSpec, run_dir: Path) -> ReplayRecording | None:
        """Where ``spec``'s run saves its replay states, or None when it is no base."""
        if not self.records(spec):
            return None
        return ReplayRecording(Path(run_dir) / RECORD_DIR, self.record_every)


def replay_plan(plan: dict, scale: str, source: str = "plan") -> ReplayPlan | None:
    """The plan's replay at ``scale``; None when the plan registers none there."""
    section = plan.get("replay")
    if section is None or scale not in section["scales"]:
        return None
    problems = []
    for key, known in (("candidates", CANDIDATES), ("metrics", METRICS),
                       ("jacobians", JACOBIAN_NAMES)):  # fmt: skip
        unknown = sorted(set(section[key]) - set(known))
        if unknown:
            problems.append(f"replay.{key}: unknown {unknown} (known: {list(known)})")
    specs = [
        s for s in expand_design(plan, scale, source) if s.condition == section["base_condition"]
    ]
    if not specs:
        problems.append(
            f"replay.base_condition {section['base_condition']!r} is not run at {scale}"
        )
    elif any(s.noise.get("form") != "gaussian" for s in specs):
        problems.append("replay.base_condition must inject Gaussian noise (regenerable draws)")
    seeds = sorted({s.seed for s in specs} & set(section["base_seeds"]))
    if specs and not seeds:
        problems.append(f"replay.base_seeds {section['base_seeds']} are not run at {scale}")
    if problems:
        raise PlanError(f"{source}: " + "; ".join(problems))
    return ReplayPlan(
        section["base_condition"], tuple(seeds), int(section["record_every"]),
        tuple(float(x) for x in section["switch_points"]),
        tuple(sorted(int(h) for h in section["horizons"])), tuple(section["candidates"]),
        int(section["noise_floor_draws"]), tuple(section["metrics"]),
        tuple(section["jacobians"]), float(section["interval_level"]),
        int(section["bootstrap"]), int(section["icl_episodes"]),
    )  # fmt: skip
