"""The study config as typed objects, built once from the validated YAML.

``load_config(path)`` (or ``study_config(mapping)`` for the resolved config Snakemake
hands a job) validates a config against ``workflow/schemas/config.schema.yaml``, fills
in every default the schema declares, and returns a frozen ``StudyConfig``: one field
per schema property, its blocks (``model``, ``data``, ``train``, ...) dataclasses of
their own. Defaults live in the schema only; an optional property the schema gives no
default is ``None`` here. A config that breaks the schema stops with a ``ConfigError``
naming the file, the key and the rule it breaks.

The run-level fields (``regression``: the registered task of a regression-family run)
are not the user's to set: ``training.regression.task.run_config`` sets them from the
plan with ``dataclasses.replace``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
RUN_LEVEL_KEYS = ("regression",)  # set per run from the plan, never validated as user keys
# How the workflow lays out a run's jobs, not how the run trains: kept off the jobs' command
# lines (workflow/rules/common.smk) and out of a run's record (``StudyConfig.run_record``).
LAYOUT_KEYS = ("one_job_per_run",)


class ConfigError(ValueError):
    """A config that breaks the schema: the message names its file and key."""


@dataclass(frozen=True)
class ModelConfig:
    """The transformer's shape (training.model.GPTConfig without the vocabulary)."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    dropout: float
    rope: bool
    rope_base: float
    smeared_keys: bool


@dataclass(frozen=True)
class DataConfig:
    """The synthetic corpus (training.data.corpus): sizes, mixture and the corpus seed."""

    seed: int
    n_labels: int
    icl_items: int
    iw_items: int
    n_facts: int
    fact_keys: int
    n_values: int
    copy_vocab: int
    copy_len: int
    n_way: int
    zipf_exponent: float
    mixture: dict[str, float]
    n_train_sequences: int
    n_val_sequences: int
    heldout_mapping_modulus: int


@dataclass(frozen=True)
class TextConfig:
    """The natural-text corpus (training.data.shards)."""

    train: list[str]
    val: list[str]
    vocab_size: int
    min_frequency: int
    synthetic_fraction: float


@dataclass(frozen=True)
class TrainConfig:
    """The optimizer, the step (K micro-batches, clip) and what the logger measures."""

    n_micro: int
    micro_batch_max: int | None
    log_interval: int
    checkpoint_interval: int
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    beta1: float
    beta2: float
    adam_eps: float
    grad_clip: float
    curvature: str
    curvature_proxies: list[str]
    curvature_proxy_arms: list[str] | None
    curvature_probes: int
    compile: bool
    activation_checkpointing: bool
    pne_streaming: bool
    tensorboard: bool


@dataclass(frozen=True)
class EvaluateConfig:
    """The ICL and memorization scores: shots and episodes."""

    shots: list[int]
    n_episodes: int


@dataclass(frozen=True)
class ProbesConfig:
    """The end-of-run probes (training.evaluation.probes)."""

    probe_batch: int
    hessian_iters: int
    hessian_tol: float
    sam_rho: float
    head_sequences: int
    segment_len: int
    icl_shots: int
    icl_episodes: int
    icl_orders: int
    finetune_steps: int
    lr_gd: float
    lr_adam: float
    top_k: int
    format_queries: int


@dataclass(frozen=True)
class LmEvalConfig:
    """The project's lm-eval tasks (training.evaluation.lm_eval_suite)."""

    tasks: list[str]
    n_docs: int
    icl_shots: int
    segment_len: int
    cloze_tokens: int
    standard_tasks: list[str]


@dataclass(frozen=True)
class StudyConfig:
    """One study scale's config (config/*.yaml), every schema default filled in."""

    scale: str
    plan: str
    lock: str
    deviations: str | None
    results: str
    traces: str | None
    analysis_only: bool
    device: str
    dtype: str
    threads_per_run: int
    launcher: str
    one_job_per_run: bool
    model: ModelConfig
    model_size: str | None
    models: dict[str, dict] | None
    registered: dict | None
    text: TextConfig | None
    cluster_resources: dict | None
    throughput: dict | None
    data: DataConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    probes: ProbesConfig
    lm_eval: LmEvalConfig
    regression: dict | None  # run level: the regression family's registered task

    @property
    def is_regression(self) -> bool:
        """Whether this is the config of a regression-family run (``run_config``)."""
        return self.regression is not None

    def as_dict(self) -> dict:
        """Plain JSON-able values (meta.json, the job command line): the mapping that
        gives this config back, without the optional keys it leaves out."""
        return _without_absent(dataclasses.asdict(self), schema())

    def run_record(self) -> dict:
        """``as_dict`` without the workflow's layout keys: the config a run's meta.json
        records, the same whichever jobs trained it."""
        return {k: v for k, v in self.as_dict().items() if k not in LAYOUT_KEYS}


@cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _without_absent(values: dict, node: dict) -> dict:
    """``values`` without the None of properties the schema (``node``) does not allow to
    be null: optional keys the config left out."""
    out = {}
    for key, value in values.items():
        prop = node.get("properties", {}).get(key, {})
        kinds = prop.get("type", [])
        if value is None and "null" not in (kinds if isinstance(kinds, list) else [kinds]):
            continue
        out[key] = _without_absent(value, prop) if isinstance(value, dict) and prop else value
    return out


def _fill_defaults(validator_class):
    """A validator class that sets each missing property with a schema default before
    checking it (the jsonschema FAQ's extension, as Snakemake's ``validate``)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, sub_schema):
        if isinstance(instance, dict):
            for name, prop in props.items():
                if isinstance(prop, dict) and "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from check_properties(validator, props, instance, sub_schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


FillingValidator = _fill_defaults(jsonschema.Draft202012Validator)


def validated(raw: Mapping, source: str) -> dict:
    """``raw`` with the schema's defaults filled in; a ``ConfigError`` when it breaks the
    schema (every error, naming ``source`` and the key)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a config is a mapping of keys, not {type(raw).__name__}")
    config = copy.deepcopy(dict(raw))
    check(config, schema(), source, ())
    return config


def check(values: dict, node: dict, source: str, at: tuple[str, ...]) -> None:
    """Fill ``values`` with the defaults of schema ``node`` and validate it; a
    ``ConfigError`` lists every error, each with its key path (``at`` + the error's)."""
    errors = sorted(
        FillingValidator(node).iter_errors(values), key=lambda e: list(map(str, e.path))
    )
    if errors:
        lines = [
            f"{'.'.join([*at, *(str(p) for p in e.path)]) or '(top level)'}: {e.message}"
            for e in errors
        ]
        raise ConfigError(f"{source}: " + "; ".join(lines))


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field's type hint names (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
    return None


def from_mapping(cls: type, values: Mapping) -> Any:
    """``cls`` from a validated mapping: nested blocks become their dataclasses; an absent
    optional property (no schema default) is None."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        value = values.get(field.name)
        block = _dataclass_of(hints[field.name])
        kwargs[field.name] = from_mapping(block, value) if block and value is not None else value
    return cls(**kwargs)


BLOCKS = {
    ModelConfig: "model",
    DataConfig: "data",
    TextConfig: "text",
    TrainConfig: "train",
    EvaluateConfig: "evaluate",
    ProbesConfig: "probes",
    LmEvalConfig: "lm_eval",
}


def block_config(cls: type, raw: Mapping | Any, source: str | None = None) -> Any:
    """One block of the config (``cls``: ``DataConfig``, ``ProbesConfig``, ...) from its
    mapping, validated against its part of the schema with its defaults filled in; an
    instance of ``cls`` is returned as it is. Errors name ``source`` and the key path."""
    if isinstance(raw, cls):
        return raw
    key = BLOCKS[cls]
    where = source or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: the {key} block is a mapping, not {type(raw).__name__}")
    values = copy.deepcopy(dict(raw))
    check(values, schema()["properties"][key], where, (key,))
    return from_mapping(cls, values)


def study_config(raw: Mapping | StudyConfig, source: str = "config") -> StudyConfig:
    """The typed config of a raw mapping (validated, defaults filled); a ``StudyConfig``
    is returned as it is."""
    if isinstance(raw, StudyConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a config is a mapping of keys, not {type(raw).__name__}")
    run_level = {k: raw[k] for k in RUN_LEVEL_KEYS if k in raw}
    user = {k: v for k, v in raw.items() if k not in RUN_LEVEL_KEYS}
    return from_mapping(StudyConfig, validated(user, source) | run_level)


def read_config(path: str | Path) -> dict:
    """The raw mapping of a config YAML file, not yet validated (errors name the file)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the config: {err}") from err
    return raw if raw is not None else {}


def load_config(path: str | Path) -> StudyConfig:
    """The typed config of a YAML file (errors name the file)."""
    return study_config(read_config(path), str(path))
