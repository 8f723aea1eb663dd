"""The paper scale: what the registered design needs on GPUs, known before it is submitted.

- ``paper_scale``        the paper scale's config: named model shapes, the restated
                         design, per-size job resources and the launcher command
- ``compute_estimate``   the GPU-hours and jobs of the design (``make estimate``;
                         ``python -m training.scale.compute_estimate``)
- ``preflight``          each registered model size trained a few dozen steps as a train
                         job builds it (``make preflight``;
                         ``python -m training.scale.preflight``)
- ``preflight_devices``  what the preflight reads off its devices: peak memory,
                         synchronisation, the all-reduce over every GPU

The command lines' ``main`` functions are not exported (each module has its own).

The one part of ``training`` besides the run commands that builds runs from the loop
(the preflight); nothing of ``training`` imports it (the import-linter contracts of
``pyproject.toml`` check it).
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "paper_scale": (
        "SHAPE_KEYS",
        "ConfigError",
        "resolve_model",
        "corpus_vocab_size",
        "check_registered",
        "job_resources",
        "launcher_command",
    ),
    "compute_estimate": (
        "RunCost",
        "model_params",
        "flops_per_token",
        "run_tokens",
        "run_costs",
        "flops_per_gpu",
        "preflight_path",
        "preflight_throughput",
        "submitted_jobs",
        "report",
        "load_sized_config",
    ),
    "preflight": (
        "CPU_DIVISORS",
        "size_setup",
        "device_peak_flops",
        "build",
        "train_step",
        "measure",
        "size_record",
        "table",
    ),
    "preflight_devices": (
        "reset_peak_memory",
        "peak_memory",
        "synchronize",
        "allreduce_times",
        "allreduce",
        "allreduce_worker",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
