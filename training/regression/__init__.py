"""The in-context linear regression family (Garg et al. 2022), beside the language runs.

- ``task``       the prompts (x_1, y_1, ..., x_k, y_k), their splits, the Bayes predictor,
                 the loss and a run's config of the family
- ``model``      the study's transformer with a linear read-in and read-out
- ``baselines``  least squares, ridge, nearest neighbours and averaging, and their error
                 against shots
- ``scores``     a trained model's error per shot beside the baselines, as scores rows

``baselines`` is the module of the function ``baselines.baselines``; the package exports
the module's other names (a name equal to its module's would be shadowed by it).

Imports nothing of the loop, the evaluations or the paper scale, and nothing of
``training.data`` (the import-linter contracts of ``pyproject.toml`` check it).
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "task": (
        "FAMILY",
        "TASK_KEYS",
        "SPLIT_OFFSETS",
        "RegressionTask",
        "prompt_tokens",
        "regression_corpus",
        "query_predictions",
        "regression_loss",
        "regression_validation_loss",
        "run_config",
        "family_config",
    ),
    "model": (
        "RegressionConfig",
        "RegressionGPT",
    ),
    "baselines": (
        "N_NEIGHBOURS",
        "least_squares",
        "ridge",
        "knn",
        "averaging",
        "baseline_errors",
    ),
    "scores": (
        "STEMS",
        "model_errors",
        "per_shot_errors",
        "score_regression",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
