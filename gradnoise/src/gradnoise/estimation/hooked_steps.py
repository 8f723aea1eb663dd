"""Hook mode of ``NoiseLogger``: micro-batch gradients from tensor hooks (``gradnoise.tap``).

``gradnoise.tap.attach`` replaces the manual mode's four calls by hooks: it opens a
step with ``begin_hooked_step``, writes the K micro-batch gradients into
``micro_rows`` (default mode) or passes its own running sums to
``after_hooked_micro`` (streaming), and finishes with ``after_update``;
``pooled_mean_check``, when set, is called with the pooled mean gradient G_bar
of a logging step before anything is held, and may raise.
"""

from __future__ import annotations

import torch


class HookedSteps:
    """The hook-mode calls: a part of ``NoiseLogger``, reading its attributes."""

    def begin_hooked_step(self, step: int, log: bool | None = None) -> None:
        """``begin_step`` for gradients delivered by hooks: nothing is read off ``.grad``.

        On a logging step, the default mode zeroes the (K, D) ``micro_rows`` for the
        hooks to fill with g_1 .. g_K; the streaming mode opens a stream folding
        running sums of g_j passed to ``after_hooked_micro`` (factor 1: the hooks
        apply the loss convention and any loss scale themselves).
        """
        self.begin_step(step, log=False)
        self.logging, self._hooked = self.is_log_step(step) if log is None else bool(log), True
        if self.logging and self.streaming:
            self._stream = self._open_stream(1.0, check=False)
        elif self.logging:
            device = self.params[0].device
            self._rows = torch.zeros(self.n_micro, sum(self.sizes), device=device)

    @property
    def micro_rows(self) -> torch.Tensor | None:
        """(K, D) micro-batch mean gradients of a hooked logging step (default mode), else None."""
        return self._rows

    def after_hooked_micro(self, running_sums: list[torch.Tensor] | None = None) -> None:
        """After micro-batch backward j of a hooked logging step (streaming: g_1 + .. + g_j)."""
        if not self.logging:
            return
        if self._seen >= self.n_micro:
            raise RuntimeError(
                f"NoiseLogger: more than n_micro={self.n_micro} micro-batch backward passes "
                f"in step {self.step}"
            )
        self._seen += 1
        if self.streaming:
            self._stream.add(running_sums)
