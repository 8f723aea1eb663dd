"""When a run measures its validation loss, and when it stops (plan ``stopping``, DESIGN §3).

Runs are compared at matched loss, so every batch size must stop equally close to
the registered target. Validating every N optimizer steps does not do that: a
step of batch B covers B * T tokens, so a large-batch run sees many more tokens
between checks and overshoots the target further. The registered schedule is in
tokens, the same for every batch size, and denser near the target:

- validate after step 1, and after the first step at or past every multiple of
  ``every_tokens`` tokens;
- once a validation loss is within ``near_target_band`` of the target
  (loss <= target + band), validate at every multiple of ``near_target_every_tokens``;
- validate after the last step the token cap allows.

A run stops at the first validation loss <= target (``reached_target``), at a
non-finite loss (``diverged``), or after the last step (``token_cap``). The
overshoot below the target is at most the loss decrease over
max(near_target_every_tokens, tokens per step) tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ValidationSchedule:
    target: float  # registered target validation loss (nats/token)
    every_tokens: int  # interval between validations far from the target (tokens)
    near_target_every_tokens: int  # interval once within near_target_band of the target
    near_target_band: float  # nats/token above the target where the dense schedule starts

    def __post_init__(self) -> None:
        if not (0 < self.near_target_every_tokens <= self.every_tokens):
            raise ValueError(
                "validation schedule: need 0 < near_target_every_tokens <= every_tokens, got "
                f"{self.near_target_every_tokens} and {self.every_tokens}"
            )
        if not self.near_target_band > 0:
            raise ValueError(f"validation schedule: near_target_band must be > 0, got "
                             f"{self.near_target_band}")  # fmt: skip

    def interval(self, last_val_loss: float) -> int:
        """Tokens between validations, given the latest validation loss (NaN: none yet)."""
        near = math.isfinite(last_val_loss) and last_val_loss <= self.target + self.near_target_band
        return self.near_target_every_tokens if near else self.every_tokens

    def due(self, step: int, tokens_per_step: int, last_step: int, last_val_loss: float) -> bool:
        """Whether optimizer ``step`` (1-based) ends with a validation."""
        if step == 1 or step == last_step:
            return True
        every = self.interval(last_val_loss)
        return (step * tokens_per_step) // every > ((step - 1) * tokens_per_step) // every

    def status(self, val_loss: float) -> str | None:
        """The run's status after a validation: stop (and why) or go on (None)."""
        if not math.isfinite(val_loss):
            return "diverged"
        if val_loss <= self.target:
            return "reached_target"
        return None
