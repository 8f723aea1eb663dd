"""The report of ``gradnoise.selfcheck``: one row per quantity, its verdict, and notes in
plain words for a failed or inconclusive check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

LOSS_RTOL = 1e-3  # loss_fn(batch) vs the mean of per-example losses, relative


@dataclass(frozen=True)
class CheckRow:
    """One quantity: the logger's mean estimate against its exact value."""

    quantity: str  # "Tr(P C P)/B" (P-NE_t / eta_t) or "Tr(P F P)" (the P-NE* denominator)
    estimate: float  # mean over the steps of the logger's value
    exact: float  # the value from exact per-example gradients
    rel_error: float  # mean over steps of estimate_t / exact - 1
    std_error: float  # sd(estimate_t / exact - 1) / sqrt(steps)
    tolerance: float  # n_se * std_error + bias_allowance
    verdict: str  # "pass", "fail" or "inconclusive"


@dataclass(frozen=True)
class SelfCheckReport:
    """What ``selfcheck`` found; ``passed`` is True only when every row passes."""

    rows: tuple[CheckRow, ...]
    steps: int  # T, check steps (random splits), each one logging step
    n_micro: int  # K
    micro_batch_size: int  # m
    batch_size: int  # B = K m
    optimizer: str  # class name of the optimizer whose P was used
    warmup_steps: int  # optimizer steps taken on the copy before the check (lr 0)
    loss_ratio: float  # loss_fn(model, batch) / mean of per-example losses (1 for a mean)
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        loss_ok = abs(self.loss_ratio - 1) <= LOSS_RTOL
        return loss_ok and all(row.verdict == "pass" for row in self.rows)

    def to_dict(self) -> dict:
        """Plain types only (rows as a list of dicts), with ``passed``."""
        return asdict(self) | {"rows": [asdict(r) for r in self.rows], "passed": self.passed}

    def __str__(self) -> str:
        head = (
            f"gradnoise selfcheck: {'PASS' if self.passed else 'FAIL'}  ({self.optimizer}, "
            f"B = {self.batch_size} = {self.n_micro} micro-batches x {self.micro_batch_size}, "
            f"{self.steps} random splits)"
        )
        columns = ("quantity", "estimate", "exact", "rel.error", "std.error", "tolerance", "")
        lines = [head, "{:<12} {:>11} {:>11} {:>10} {:>10} {:>10}  {}".format(*columns)]
        for r in self.rows:
            lines.append(
                f"{r.quantity:<12} {r.estimate:>11.4e} {r.exact:>11.4e} {r.rel_error:>+10.2%} "
                f"{r.std_error:>10.2%} {r.tolerance:>10.2%}  {r.verdict}"
            )
        lines.append(
            f"loss_fn(batch) / mean per-example loss = {self.loss_ratio:.6g} (1 for a mean)"
        )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def check_row(name, estimates, exacts, n_se, bias_allowance, max_std_error) -> CheckRow:
    """Mean relative error over the steps, its standard error and the verdict."""
    est = torch.tensor(estimates, dtype=torch.float64)
    truth = torch.tensor(exacts, dtype=torch.float64)
    ratio = est / truth - 1
    rel_error = float(ratio.mean())
    std_error = float(ratio.std()) / math.sqrt(len(ratio))
    tolerance = n_se * std_error + bias_allowance
    # the mean estimate's own relative spread: a 255-fold error with 4 % spread is a failure
    spread = std_error / (1 + rel_error) if rel_error > -1 else 0.0
    if not (math.isfinite(rel_error) and math.isfinite(std_error)) or spread > max_std_error:
        verdict = "inconclusive"
    else:
        verdict = "pass" if abs(rel_error) <= tolerance else "fail"
    return CheckRow(
        name, float(est.mean()), float(truth.mean()), rel_error, std_error, tolerance, verdict
    )


def notes_on(rows: tuple[CheckRow, ...], loss_ratio: float, batch_size: int) -> tuple[str, ...]:
    """Plain-words reasons for a failed or inconclusive check."""
    notes = []
    if not abs(loss_ratio - 1) <= LOSS_RTOL:
        guess = (
            f" It is {batch_size} x the mean: loss_fn looks like a sum; the logger assumes a mean."
            if abs(loss_ratio / batch_size - 1) <= LOSS_RTOL
            else " Is the loss weighted per token or per batch rather than per example?"
        )
        notes.append(
            f"loss_fn(model, batch) is {loss_ratio:.6g} x the mean of the per-example losses."
            + guess
        )
    for r in rows:
        if r.verdict == "inconclusive":
            notes.append(
                f"{r.quantity}: standard error {r.std_error:.1%} is too large to tell (or the "
                "exact value is 0); raise steps or n_micro"
            )
        elif r.verdict == "fail":
            notes.append(
                f"{r.quantity}: the estimate is {r.estimate / r.exact:.4g} x the exact value "
                f"(outside {r.tolerance:.1%}); check the loss convention (a mean over the "
                "micro-batch, divided by n_micro) and micro_batch_size"
            )
    return tuple(notes)
