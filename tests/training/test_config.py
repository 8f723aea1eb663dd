"""The typed config (training/config.py): one field per schema property, every default
from the schema and none repeated in code, and bad configs stopped with their file and key."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from training import config as cfgmod
from training.config import ConfigError, StudyConfig, load_config, study_config

REPO = Path(__file__).resolve().parents[2]
BLOCKS = {f.name: f for f in dataclasses.fields(StudyConfig)}


def raw(name: str = "config") -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


def block_classes() -> dict[str, type]:
    hints = __import__("typing").get_type_hints(StudyConfig)
    return {n: c for n in BLOCKS if (c := cfgmod._dataclass_of(hints[n])) is not None}


def test_one_field_per_schema_property():
    """StudyConfig and each block have exactly the schema's properties (and the run-level keys)."""
    props = cfgmod.schema()["properties"]
    assert set(BLOCKS) == set(props) | set(cfgmod.RUN_LEVEL_KEYS)
    for name, cls in block_classes().items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields == set(props[name]["properties"]), name


@pytest.mark.parametrize("name", ["config", "smoke", "gpu"])
def test_every_schema_default_is_filled(name):
    """A key the file leaves out holds the schema's default; a key it sets holds its value."""
    props = cfgmod.schema()["properties"]
    given = raw(name)
    typed = load_config(REPO / "config" / f"{name}.yaml")
    checked = 0
    for key, prop in props.items():
        blocks = block_classes()
        if key in blocks and key not in given and "default" not in prop:
            assert getattr(typed, key) is None, key  # an optional block left out
        elif key in blocks:
            for sub, sub_prop in prop["properties"].items():
                value = getattr(getattr(typed, key), sub)
                if sub in given.get(key, {}):
                    assert value == given[key][sub], f"{key}.{sub}"
                elif "default" in sub_prop:
                    assert value == sub_prop["default"], f"{key}.{sub}"
                    checked += 1
                else:
                    assert value is None, f"{key}.{sub}"
        elif key in given:
            assert getattr(typed, key) == given[key], key
        elif "default" in prop:
            assert getattr(typed, key) == prop["default"], key
            checked += 1
    assert checked > 0


def test_typed_blocks_and_round_trip():
    typed = load_config(REPO / "config" / "config.yaml")
    assert isinstance(typed.train, cfgmod.TrainConfig)
    assert typed.train.checkpoint_interval == 10  # schema default, not in config.yaml
    assert typed.text is None and typed.regression is None and not typed.is_regression
    again = study_config(typed.as_dict())
    assert again == typed
    assert study_config(typed) is typed
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.train.n_micro = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda c: c["train"].update(n_micro=1), "train.n_micro"),
        (lambda c: c["train"].update(curvature="hessian"), "train.curvature"),
        (lambda c: c["model"].update(n_head="two"), "model.n_head"),
        (lambda c: c.update(bogus=1), "(top level)"),
        (lambda c: c.pop("data"), "(top level)"),
        (lambda c: c["probes"].pop("hessian_tol"), "probes"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, edit, where):
    config = raw()
    edit(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and where in str(err.value)


def test_unreadable_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path)
    with pytest.raises(ConfigError, match="not list"):
        study_config([1, 2], "x")


def schema_defaults() -> set[str]:
    """Names of every property the schema gives a default."""
    names: set[str] = set()
    stack = [cfgmod.schema()]
    while stack:
        node = stack.pop()
        for name, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict):
                if "default" in prop:
                    names.add(name)
                stack.append(prop)
    return names


def test_no_schema_default_repeated_in_code():
    """No ``x.get("<key with a schema default>", <value>)`` in the training code: the
    default is the schema's, filled in once by the typed config."""
    defaulted = schema_defaults()
    offenders = []
    for path in sorted((REPO / "training").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in defaulted
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.args[0].value}")
    assert not offenders, offenders
