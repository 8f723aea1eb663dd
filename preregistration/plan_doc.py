"""The human form of the plan: ``preregistration/plan.md``, generated from plan.yaml.

plan.md is never edited by hand. ``write_markdown`` renders it; ``check_markdown``
says whether the file on disk is what the current plan.yaml renders to (the audit
and the test suite both call it), so the two forms cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from preregistration.design import expand_design
from preregistration.plan import load_plan, plan_hash

# Order in which a test's registered fields are shown (statement is shown above).
_FIELDS = (
    "outcome",
    "predictor",
    "covariates",
    "random_effect",
    "factors",
    "block",
    "pairing",
    "test",
    "sidedness",
    "alpha",
    "margin",
    "family",
    "decision",
    "arms",
)


def _value(value) -> str:
    if isinstance(value, dict) and set(value) == {"supported_if"}:
        return f"supported if `{_cell(value['supported_if'])}`"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _test_section(key: str, spec: dict) -> list[str]:
    lines = [
        f"### {key}",
        "",
        " ".join(spec["statement"].split()),
        "",
        "| field | registered |",
        "|---|---|",
    ]
    lines += [f"| {field} | {_value(spec[field])} |" for field in _FIELDS if field in spec]
    if spec.get("margin") == "target_tolerance":
        lines.append("")
        lines.append("The margin is the scale's `target_tolerance` (see Design).")
    return lines + [""]


def _design_section(plan: dict) -> list[str]:
    lines = ["## Design", "", "### Arms", ""]
    for arm, spec in plan["design"]["arms"].items():
        rules = f" LR rules: {_value(spec['lr_rules'])}." if "lr_rules" in spec else ""
        lines.append(f"- **{arm}**: {' '.join(spec['description'].split())}{rules}")
    lines += [
        "",
        "### Scales",
        "",
        "| scale | arms | seeds | lr_base | target val. loss (nats/token) | tolerance "
        "| token cap | validation every (tokens; near target) | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scale, design in plan["design"]["scales"].items():
        arms = "; ".join(
            f"{arm} " + ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
            for arm, values in design["arms"].items()
        )
        n_runs = len(expand_design(plan, scale))
        lines.append(
            f"| {scale} | {arms} | {_value(design['seeds'])} | {design['lr_base']} "
            f"| {design['target_val_loss']} | {design['target_tolerance']} "
            f"| {design['token_cap']:,} | {_schedule(design['validation'])} | {n_runs} |"
        )
    lines.append("")
    for scale in plan["design"]["scales"]:
        specs = expand_design(plan, scale)
        conditions = list(dict.fromkeys(s.condition for s in specs))
        lines.append(f"- {scale}: conditions {_value(conditions)}.")
    return lines + [""]


def _schedule(validation: dict) -> str:
    return (
        f"{validation['every_tokens']:,}; {validation['near_target_every_tokens']:,} within "
        f"{validation['near_target_band']} of the target"
    )


def _rules_seeds_software_sections(plan: dict) -> list[str]:
    """The stopping and exclusion rules, seeds and power, software, exploratory analyses."""
    lines: list[str] = []
    lines += [
        "## Stopping rule",
        "",
        " ".join(plan["stopping"]["rule"].split()),
        "",
        f"Run statuses: {_value(plan['stopping']['statuses'])}.",
        "",
        "## Exclusion rules",
        "",
        "Predicates over the runs table; a run matching several rules is excluded "
        "under the first. Excluded runs stay in the runs table with their reason.",
        "",
        "| id | when | reason |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{r['id']}` | `{_cell(r['when'])}` | {_cell(r['reason'])} |" for r in plan["exclusions"]
    ]
    lines += [
        "",
        "## Seeds and power",
        "",
        " ".join(plan["seeds_justification"].split()),
        "",
        "## Random seeds",
        "",
        f"- Runs: {' '.join(plan['random_seeds']['runs'].split())}",
        f"- Analysis (bootstrap, permutation): `{plan['random_seeds']['analysis']}`",
        "",
        "## Software",
        "",
        f"Python {plan['software']['python']}; full resolved set in "
        f"`{plan['software']['lock_file']}`. Pinned:",
        "",
    ]
    lines += [f"- {name} {version}" for name, version in plan["software"]["pins"].items()]
    lines += [
        "",
        "## Exploratory analyses",
        "",
        "Labelled exploratory wherever reported; never part of a correction family.",
        "",
    ]
    lines += [f"- {item}" for item in plan["exploratory"]]
    return lines + _replay_section(plan.get("replay"))


def _replay_section(replay: dict | None) -> list[str]:
    """The registered Counterfactual Noise Replay (exploratory; D10), when there is one."""
    if replay is None:
        return []
    rows = [
        ("scales", _value(replay["scales"])),
        ("base runs", f"`{replay['base_condition']}`, seeds {_value(replay['base_seeds'])}"),
        ("recorded every (steps)", _value(replay["record_every"])),
        ("switch points (fraction of the run's steps)", _value(replay["switch_points"])),
        ("horizons (steps after the switch)", _value(replay["horizons"])),
        ("candidates", _value(replay["candidates"])),
        ("noise-floor draws", _value(replay["noise_floor_draws"])),
        ("metrics", _value(replay["metrics"])),
        ("Jacobians", _value(replay["jacobians"])),
        (
            "interval level, bootstrap resamples",
            _value([replay["interval_level"], replay["bootstrap"]]),
        ),
        ("ICL episodes per shot count", _value(replay["icl_episodes"])),
    ]
    return [
        "",
        "## Counterfactual Noise Replay (exploratory)",
        "",
        "Predictions of each metric's change under each candidate noise, measured against "
        "retraining from the same recorded state; never part of a correction family.",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {name} | {_cell(text)} |" for name, text in rows),
    ]


def render_markdown(plan: dict, plan_file: str | Path) -> str:
    """plan.md's text for ``plan`` read from ``plan_file`` (its hash is quoted)."""
    plan_file = Path(plan_file)
    correction = plan["correction"]
    lines = [
        f"<!-- Generated from {plan_file.name} by `python -m preregistration render`; "
        "do not edit by hand. -->",
        "",
        f"# Pre-registration: {plan['title']}",
        "",
        f"Plan version {plan['plan_version']}, registered by {plan['registered_by']}. "
        f"Sources: {'; '.join(plan['sources'])}.",
        "",
        f"This is the human form of `{plan_file.name}` (SHA-256 `{plan_hash(plan_file)}`). "
        "The lock `plan.lock.json` holds the hash and the time the plan was locked; any "
        "change made after it is declared in `deviations.yaml`, which the audit checks.",
        "",
        "## Primary metrics",
        "",
        "| role | runs-table column |",
        "|---|---|",
    ]
    lines += [f"| {role} | `{col}` |" for role, col in plan["primary_metrics"].items()]
    lines += [
        "",
        "## Confirmatory hypotheses",
        "",
        f"{correction['method'].capitalize()} correction over the family "
        f"`{correction['name']}`: {', '.join(correction['family'])}. A decision criterion "
        "is a predicate over the columns of the confirmatory-tests table T1.",
        "",
    ]
    for key, spec in plan["hypotheses"].items():
        lines += _test_section(key, spec)
    lines += ["## Controls", "", "Controls belong to no correction family.", ""]
    for key, spec in plan["controls"].items():
        lines += _test_section(key, spec)
    lines += _design_section(plan)
    lines += _rules_seeds_software_sections(plan)
    return "\n".join(lines) + "\n"


def markdown_path(plan_file: str | Path) -> Path:
    """plan.md beside plan.yaml."""
    return Path(plan_file).with_suffix(".md")


def write_markdown(plan_file: str | Path) -> Path:
    """Render plan.md beside ``plan_file``; return its path."""
    out = markdown_path(plan_file)
    out.write_text(render_markdown(load_plan(plan_file), plan_file))
    return out


def check_markdown(plan_file: str | Path) -> list[str]:
    """Problems with plan.md against ``plan_file`` (empty when they agree)."""
    md = markdown_path(plan_file)
    fix = f"run `python -m preregistration render --plan {plan_file}`"
    if not md.exists():
        return [f"{md}: not found; {fix}"]
    expected = render_markdown(load_plan(plan_file), plan_file).splitlines()
    actual = md.read_text().splitlines()
    if expected == actual:
        return []
    line = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    return [f"{md}: differs from what {plan_file} renders to, first at line {line + 1}; {fix}"]
