"""The training stage: the synthetic and text corpora, the model, the training loop and
its run commands, the end-of-run evaluations, and the estimates and preflight of the
paper scale.

Subpackages, each exporting its public names lazily (a module is imported when one of
its names is first used; ``preregistration.lazy_exports``):

- ``training.data``        the corpora a run trains on: the synthetic corpus and the
                           text shards
- ``training.regression``  the in-context linear regression family: its task, model,
                           baselines and scores
- ``training.evaluation``  the end-of-run evaluations of a trained model: scores,
                           probes, lm-eval tasks, and the evaluate and score jobs
- ``training.scale``       the paper scale: its model shapes and job resources, the
                           compute estimate and the GPU preflight

Top-level modules, the config, the model, the loop and the run commands:

- ``config``            the study config as typed dataclasses, validated against the
                        schema with its defaults filled in (the bottom layer)
- ``model``             the decoder-only transformer
- ``task_family``       what a run's task decides: its model, batches and losses
- ``model_setup``       the optimizer and activation checkpointing around a model
- ``run_setup``         what a run builds before its first step
- ``batches``           the step's batch and its gradient
- ``noise_arms``        a run's noise options as the trainer applies them
- ``stopping``          when a run measures its validation loss and when it stops
- ``distributed``       the worker's device and process group under torchrun
- ``checkpoints``       checkpoint, resume-state and corpus files that run no code when read
- ``resume``            a run's resume state
- ``tensorboard_log``   TensorBoard event files of a run's trace
- ``train``             the training loop of one run
- ``run``               ``python -m training.run``: one training run
- ``run_and_evaluate``  ``python -m training.run_and_evaluate``: train, then evaluate

``data`` and ``regression`` are independent and import nothing of the loop,
``evaluation`` imports nothing of the loop or of ``scale``, and only ``scale`` and the
run commands sit on the loop (the import-linter contracts in ``pyproject.toml`` check
this).
"""
