"""The standard tier's hooks: each micro-batch increment folded into Welford's moments.

``attach(..., tier="standard")`` (the default) is ``NoiseTap`` with a
``WelfordLogger`` (``gradnoise.estimation.welford``): on a logging step the
tensor hook of each parameter folds its increment g_j = K d_j / S straight into
the logger's (M2, mu) moments, which live in the buffer of the held estimate;
no running sum, no K rows. Everything else (clip coefficient, DDP's
communication hook, GradScaler, consistency check, injected noise) is
``NoiseTap``'s.
"""

from __future__ import annotations

import torch

from gradnoise.estimation.welford import WelfordLogger
from gradnoise.tap.tap import NoiseTap


class WelfordTap(NoiseTap):
    """``NoiseTap`` whose logging steps hold two gradient-sized buffers in all."""

    logger_class = WelfordLogger

    def _on_grad(self, i: int, grad: torch.Tensor) -> None:
        if self._busy:
            return
        if not self._in_backward:
            self._begin_backward()
        if self._logging:
            self._arrive(i)
            self.logger.fold(i, grad, self._factor, self._backwards)
