"""Adapters that log P-NE from a framework's own training loop, one module per framework.

- ``gradnoise.integrations.lightning.NoiseCallback``: a Lightning ``Callback``
  (extra ``gradnoise[lightning]``);
- ``gradnoise.integrations.transformers.NoiseCallback``: a Hugging Face ``TrainerCallback``
  (extra ``gradnoise[transformers]``).

Each is a thin layer over ``gradnoise.tap.attach``: it reads the number of accumulated
micro-batches, the micro-batch size, the world size and the loss scaler from the
framework, attaches when training starts, hands each logging step's record to the
framework's loggers and detaches when training ends. The user's model and loop stay
as they are. Importing this package imports neither framework; importing one of its
modules imports that framework only.
"""

__all__: list[str] = []
