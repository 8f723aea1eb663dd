"""The paper scale's config: named model shapes, the restated design, per-size job resources.

``config/gpu.yaml`` declares both paper shapes (seeds 001, 003: about 350M and 1.3B
parameters) under ``models`` and picks one with ``model_size``; the workflow resolves
the pick into the ``model`` block the trainer reads (:func:`resolve_model`). The file
also restates the plan's design of its scale (``registered``), which
:func:`check_registered` compares with the plan so that the two cannot drift apart,
and the SLURM resources of one job per rule and model size, or task family with a
model of its own (:func:`job_resources`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from preregistration.plan import scale_design

# ConfigError: also keys that disagree with each other or with the plan
from training.config import ConfigError, StudyConfig, study_config

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size")


def resolve_model(config: dict, source: str = "config") -> dict:
    """The config with ``model`` holding the shape of ``models[model_size]``.

    A config without ``models`` is returned unchanged. The shape keys come from the
    named entry (replacing any in ``model``), the options (dropout, RoPE, smeared
    keys) from ``model``; the stated ``params`` count stays in ``models``. An entry's
    ``micro_batch_max`` (the pass its GPUs hold) replaces ``train.micro_batch_max``.
    """
    if "models" not in config:
        return config
    size = config.get("model_size")
    if size not in config["models"]:
        raise ConfigError(
            f"{source}: model_size is {size!r}; expected one of the keys of models: "
            f"{sorted(config['models'])}"
        )
    # Shape keys in `model` are replaced, not merged: Snakemake deep-merges a
    # --configfile into the Snakefile's default config, whose `model` has a shape.
    entry = config["models"][size]
    shape = {k: entry[k] for k in SHAPE_KEYS}
    resolved = config | {"model": dict(config.get("model") or {}) | shape}
    if "micro_batch_max" in entry:
        train = dict(config.get("train") or {})
        resolved["train"] = train | {"micro_batch_max": entry["micro_batch_max"]}
    return resolved


def corpus_vocab_size(config: StudyConfig | Mapping) -> int:
    """Token ids of the corpus: the synthetic suites' ids, then the BPE vocabulary if any.

    The synthetic suites keep their ids (0 = BOS, training/data/corpus.py's ``Vocab``) so the
    ICL and memorization evaluations read the same ids on either corpus; text token
    ``t`` is stored as ``synthetic_vocab + t`` (training/data/shards.py).
    """
    from training.data.corpus import vocab_from_config  # torch: not for the workflow's start-up

    config = study_config(config)
    synthetic = vocab_from_config(config.data).size
    return synthetic + (config.text.vocab_size if config.text else 0)


def check_registered(config: dict, plan: dict, source: str, plan_source: str) -> None:
    """Stop when ``registered`` differs from the plan's ``design.scales.<scale>``.

    Compared: the batch sweep's global batch sizes, its LR rules, lr_base, the
    target validation loss and the token cap. A config without ``registered`` passes.
    """
    restated = config.get("registered")
    if restated is None:
        return
    scale = scale_design(plan, config["scale"], plan_source)
    arm_scale = scale.get("arms", {}).get("batch_sweep", {})
    arm = plan["design"]["arms"].get("batch_sweep", {})
    where = f"design.scales.{config['scale']}"
    expected = {
        "global_batch": (sorted(arm_scale.get("global_batch", [])), f"{where}.arms.batch_sweep"),
        "lr_rules": (list(arm.get("lr_rules", ["fixed"])), "design.arms.batch_sweep"),
        "lr_base": (scale.get("lr_base"), where),
        "target_val_loss": (scale.get("target_val_loss"), where),
        "token_cap": (scale.get("token_cap"), where),
    }
    problems = []
    for key, (value, at) in expected.items():
        mine = sorted(restated[key]) if key == "global_batch" else restated[key]
        if mine != value:
            problems.append(
                f"registered.{key} is {mine!r} but {plan_source} {at}.{key} is {value!r}"
            )
    if problems:
        raise ConfigError(
            f"{source}: the restated design differs from the plan:\n  " + "\n  ".join(problems)
        )


def job_resources(config: dict, rule: str, family: str = "language") -> dict:
    """Snakemake resources of one job of ``rule`` for a run of task ``family``.

    A language run's model is the chosen model size's: its row is
    ``cluster_resources[model_size][rule]``. A family that trains its own model (the
    in-context regression family: plan ``design.scales.<scale>.arms.<arm>.model``, a
    few million parameters) has its own row, ``cluster_resources[family][rule]``, at
    every model size: it never takes the language model's GPUs.
    Keys are those of snakemake-executor-plugin-slurm: ``gpu`` and ``gpu_model``
    (``sbatch --gpus=<model>:<n>``), ``runtime`` (minutes), ``mem_mb``,
    ``cpus_per_task``. Empty when the config declares no ``cluster_resources``
    (the CPU scales, whose profile sets them).
    """
    table = config.get("cluster_resources")
    if not table:
        return {}
    if family == "language":
        key, what = config.get("model_size"), "model_size"
    else:
        key, what = family, "the task family"
    if key not in table:
        raise ConfigError(
            f"cluster_resources has no entry for {what} {key!r}; it has {sorted(table)}"
        )
    row = table[key].get(rule)
    if row is None:
        return {}
    out = {k: row[k] for k in ("runtime", "mem_mb", "cpus_per_task")}
    if row["gpus"] > 0:
        out |= {"gpu": row["gpus"], "gpu_model": row["gpu_model"]}
    return out


def launcher_command(config: dict, python: str, family: str = "language") -> str:
    """The training launcher: ``python`` means ``python`` (the interpreter running
    Snakemake); ``{gpus}`` in a torchrun line becomes the GPU count of a train job of
    a run of ``family``."""
    launcher = config["launcher"]
    if launcher == "python":
        return shlex.quote(python)
    gpus = job_resources(config, "train", family).get("gpu", 1)
    return launcher.replace("{gpus}", str(gpus))
