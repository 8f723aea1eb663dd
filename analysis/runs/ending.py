"""What a run's trace says about how it ended: status, steps, tokens, final loss, exposure.

The analysis and the audit derive these from ``trace.parquet`` and the run's
registered spec, never from what ``meta.json`` claims (DESIGN §3 stopping; plan
``stopping``). With L the trace's last row, T the scale's ``target_val_loss`` and
``max_steps = max(1, token_cap // (global_batch * block_size))``:

- ``diverged``        when L is a divergence row (``preregistration.tables.divergence_rows``:
  a non-finite training loss or gradient norm, or a validation that gave a non-finite
  loss; the trainer ends a diverged run's trace with the row of the diverging step);
- ``final_val_loss`` is otherwise the last finite ``val_loss`` of the trace (the stop
  step's validation; rows of logging steps that were not validations carry NaN), and
  NaN for a diverged run (its last model has no meaningful loss);
- ``reached_target``  else when ``final_val_loss <= T``;
- ``token_cap``       else when ``L.step == max_steps``;
- otherwise the trace contradicts the stopping rule (it ends before the cap without
  reaching the target), and so does a trace that goes on after a non-finite loss or
  after a validation loss <= T.

``steps = L.step`` and ``tokens = steps * global_batch * block_size``. The run's
integrated exposures are those of L (a divergence row holds the exposure integrated
up to the step that diverged, which applied no update); its noise scale
``b_simple_run`` is the last one logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from preregistration.tables import EXPOSURES, divergence_rows


@dataclass(frozen=True)
class Ending:
    """How a run ended, as its trace shows it."""

    status: str  # reached_target | token_cap | diverged
    steps: int
    tokens: int
    final_val_loss: float  # NaN when no validation loss is finite
    exposure: dict[str, float]  # EXPOSURES -> integrated value at the end
    b_simple_run: float  # the run's noise scale, ratio of means (NaN when none was logged)


def _rows(mask: np.ndarray, limit: int = 8) -> str:
    idx = np.flatnonzero(mask).tolist()
    return str(idx[:limit]) + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


def other_run_rows(table: pd.DataFrame, run_id: str, path: Path) -> list[str]:
    """The problem of a per-run table with rows of another run (empty list if none)."""
    other = (table["run_id"] != run_id).to_numpy()
    if not other.any():
        return []
    found = sorted(set(table.loc[other, "run_id"]))[:3]
    return [
        f"{path}: column 'run_id' is {found} at rows {_rows(other)}; this file belongs "
        f"to run {run_id!r} (its directory)"
    ]


def max_steps(token_cap: int, global_batch: int, block_size: int) -> int:
    """Optimizer steps a run may take before its token cap: max(1, cap // (B * block))."""
    return max(1, token_cap // (global_batch * block_size))


def trace_problems(trace: pd.DataFrame, spec, block_size: int, path: Path) -> list[str]:
    """Everything in a trace that contradicts its run or the trainer's invariants.

    ``spec`` is the run's registered spec (``preregistration.design.RunSpec``). Each
    problem names ``path``, the column and the rows (0-based).
    """
    problems = other_run_rows(trace, spec.run_id, path)
    batch = (trace["global_batch"] != spec.global_batch).to_numpy()
    if batch.any():
        problems.append(
            f"{path}: column 'global_batch' differs from the registered {spec.global_batch} "
            f"of {spec.run_id} at rows {_rows(batch)}"
        )
    step = trace["step"].to_numpy()
    if (step < 1).any():
        problems.append(f"{path}: column 'step' is < 1 at rows {_rows(step < 1)}")
    dup = trace["step"].duplicated(keep=False).to_numpy()
    if dup.any():
        problems.append(f"{path}: column 'step' repeats a step at rows {_rows(dup)}")
    back = np.r_[False, np.diff(step) < 0]
    if back.any():
        problems.append(f"{path}: column 'step' decreases at rows {_rows(back)}")
    tokens = step * spec.global_batch * block_size
    wrong = trace["tokens"].to_numpy() != tokens
    if wrong.any():
        problems.append(
            f"{path}: column 'tokens' is not step * global_batch * block_size "
            f"(= step * {spec.global_batch} * {block_size}) at rows {_rows(wrong)}"
        )
    last = len(trace) - 1
    not_last = np.arange(len(trace)) < last
    bad_loss = not_last & divergence_rows(trace).to_numpy()
    if bad_loss.any():
        problems.append(
            f"{path}: a diverged step (non-finite loss or gradient norm) at rows "
            f"{_rows(bad_loss)} is not the last row: a diverged run's trace ends with it"
        )
    for name in EXPOSURES:
        values = trace[name].to_numpy(dtype=float)
        finite = np.isfinite(values)
        if (~finite).any():
            problems.append(f"{path}: column '{name}' is not finite at rows {_rows(~finite)}")
        if (finite & (values < 0)).any():
            problems.append(
                f"{path}: column '{name}' is negative at rows {_rows(finite & (values < 0))}; "
                "an integrated exposure is a sum of non-negative terms"
            )
        kept = np.flatnonzero(finite)
        falls = np.zeros(len(trace), dtype=bool)
        falls[kept[1:]] = np.diff(values[kept]) < 0
        if falls.any():
            problems.append(
                f"{path}: column '{name}' decreases at rows {_rows(falls)}; an integrated "
                "exposure never decreases"
            )
    return problems


def derive_ending(
    trace: pd.DataFrame, spec, block_size: int, path: Path
) -> tuple[Ending | None, list[str]]:
    """The run's ``Ending`` by the rules of the module docstring, or the problems found."""
    if len(trace) == 0:
        return None, [f"{path}: no logged step; every run logs its stop step"]
    last = trace.iloc[-1]
    steps = int(last["step"])
    cap = max_steps(spec.token_cap, spec.global_batch, block_size)
    val = trace["val_loss"].to_numpy(dtype=float)
    finite_val = np.flatnonzero(np.isfinite(val))
    final = float(val[finite_val[-1]]) if len(finite_val) else math.nan
    problems = []
    if steps > cap:
        problems.append(
            f"{path}: the last step {steps} is beyond max_steps = {cap} "
            f"(token cap {spec.token_cap} // ({spec.global_batch} * {block_size}))"
        )
    early = [i for i in finite_val if i < len(trace) - 1 and val[i] <= spec.target_val_loss]
    if early:
        i = int(early[0])
        problems.append(
            f"{path}: val_loss {val[i]!r} <= target {spec.target_val_loss} at row {i} "
            f"(step {int(trace['step'].iloc[i])}) but the trace goes on to step {steps}: "
            "the run stops at its first validation loss at or below the target"
        )
    if divergence_rows(trace).iloc[-1]:
        status, final = "diverged", math.nan
    elif final <= spec.target_val_loss:
        status = "reached_target"
    elif steps == cap:
        status = "token_cap"
    else:
        return None, problems + [
            f"{path}: the trace ends at step {steps}, before max_steps = {cap}, with final "
            f"val_loss {final!r} above the target {spec.target_val_loss}: it neither reached "
            "the target nor the token cap (a truncated trace?)"
        ]
    at_end = trace[list(EXPOSURES)].iloc[-1].to_numpy(dtype=float)
    if not np.isfinite(at_end).all():
        problems.append(f"{path}: the last row's exposures {list(EXPOSURES)} are not finite")
    noise_scale = trace["b_simple_run"].to_numpy(dtype=float)
    noise_scale = noise_scale[~np.isnan(noise_scale)]  # a divergence row has none
    ending = Ending(
        status=status,
        steps=steps,
        tokens=steps * spec.global_batch * block_size,
        final_val_loss=final,
        exposure=dict(zip(EXPOSURES, map(float, at_end), strict=True)),
        b_simple_run=float(noise_scale[-1]) if len(noise_scale) else math.nan,
    )
    return (None, problems) if problems else (ending, [])


def meta_problems(meta: dict, ending: Ending, path: Path) -> list[str]:
    """Where ``meta.json`` says otherwise than the trace about how the run ended."""
    problems = []
    if meta["status"] != ending.status:
        problems.append(
            f"{path}: status {meta['status']!r}, but the trace gives {ending.status!r} "
            f"(last step {ending.steps}, final val_loss {ending.final_val_loss!r})"
        )
    for key in ("steps", "tokens"):
        if meta[key] != getattr(ending, key):
            problems.append(
                f"{path}: {key} {meta[key]!r}, but the trace gives {getattr(ending, key)!r}"
            )
    recorded = meta["final_val_loss"]
    recorded = math.nan if recorded is None else float(recorded)
    same = (math.isnan(recorded) and math.isnan(ending.final_val_loss)) or math.isclose(
        recorded, ending.final_val_loss, rel_tol=1e-9
    )
    if not same and not (ending.status == "diverged" and not math.isfinite(recorded)):
        problems.append(
            f"{path}: final_val_loss {recorded!r}, but the last finite val_loss of the trace "
            f"is {ending.final_val_loss!r}"
        )
    return problems
