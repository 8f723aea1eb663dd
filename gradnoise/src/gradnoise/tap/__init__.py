"""One-line hooks that feed a P-NE logger from an unchanged training loop.

``attach(model, optimizer, n_micro=K)`` registers tensor hooks on the parameters
(each micro-batch's gradient, before any data-parallel all-reduce), an optimizer
step post-hook (learning rate, preconditioner, clip coefficient, the step's
record) and, under DDP, a communication hook (the global pre-clip norm); the
loop keeps its own backward passes, clipping and ``optimizer.step()``.
"""

from gradnoise.tap.attach import attach
from gradnoise.tap.tap import NoiseTap

__all__ = ["NoiseTap", "attach"]
