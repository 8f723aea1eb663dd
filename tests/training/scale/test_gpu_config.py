"""config/gpu.yaml: it validates, its paper shapes have the stated parameter counts,
its restated design equals the plan's, and the cluster profile's jobs follow the chosen size."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import validate

from preregistration.design import expand_design
from preregistration.plan import load_plan
from training.model import GPT, GPTConfig
from training.scale.paper_scale import (
    ConfigError,
    check_registered,
    corpus_vocab_size,
    job_resources,
    launcher_command,
    resolve_model,
)

REPO = Path(__file__).resolve().parents[3]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.fixture(scope="module")
def gpu_config() -> dict:
    config = yaml.safe_load((REPO / "config/gpu.yaml").read_text())
    validate(config, SCHEMA)  # as workflow/rules/common.smk does at start-up
    return config


def test_gpu_config_validates_and_a_bad_value_names_the_key(gpu_config):
    bad = copy.deepcopy(gpu_config)
    bad["cluster_resources"]["1.3b"]["train"]["gpus"] = "eight"
    with pytest.raises(Exception, match="eight"):
        validate(bad, SCHEMA)
    bad = copy.deepcopy(gpu_config)
    del bad["model_size"]  # models without model_size: which shape would run?
    with pytest.raises(Exception, match="model_size"):
        validate(bad, SCHEMA)


@pytest.mark.parametrize("size", ["350m", "1.3b"])
def test_paper_shapes_have_the_stated_parameter_counts(gpu_config, size):
    config = resolve_model(gpu_config | {"model_size": size})
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=corpus_vocab_size(config), **config["model"]))
    shape = gpu_config["models"][size]
    assert model.n_params() == shape["params"]
    # Tied embeddings, no position table (RoPE): V d + L (12 d^2 + 10 d) + 2 d; per block the
    # qkv (3 d^2), proj (d^2 + d), MLP (8 d^2 + 5 d), two LayerNorms (4 d).
    d, n_layer, vocab = shape["n_embd"], shape["n_layer"], corpus_vocab_size(config)
    assert shape["params"] == vocab * d + n_layer * (12 * d * d + 10 * d) + 2 * d
    target = {"350m": 350e6, "1.3b": 1.3e9}[size]
    assert abs(shape["params"] / target - 1) < 0.05


def test_model_size_selects_the_shape_and_keeps_the_options(gpu_config):
    config = resolve_model(gpu_config | {"model_size": "1.3b"})
    assert config["model"] == {
        "n_layer": 24, "n_head": 32, "n_embd": 2048, "block_size": 1024,
        "dropout": 0.0, "rope": True, "rope_base": 10000.0, "smeared_keys": False,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="model_size is '7b'"):
        resolve_model(gpu_config | {"model_size": "7b"}, "config/gpu.yaml")


def test_each_size_runs_the_passes_its_entry_sets(gpu_config):
    """A models entry's micro_batch_max replaces train.micro_batch_max; without one, the
    train block's applies."""
    for size in ("350m", "1.3b"):
        config = resolve_model(gpu_config | {"model_size": size})
        assert config["train"]["micro_batch_max"] == gpu_config["models"][size]["micro_batch_max"]
        assert {k: v for k, v in config["train"].items() if k != "micro_batch_max"} == {
            k: v for k, v in gpu_config["train"].items() if k != "micro_batch_max"
        }
    bare = copy.deepcopy(gpu_config)
    del bare["models"]["350m"]["micro_batch_max"]
    validate(bare, SCHEMA)
    config = resolve_model(bare | {"model_size": "350m"})
    assert config["train"]["micro_batch_max"] == gpu_config["train"]["micro_batch_max"]
    bad = copy.deepcopy(gpu_config)
    bad["models"]["350m"]["micro_batch_max"] = 0
    with pytest.raises(Exception, match="micro_batch_max"):
        validate(bad, SCHEMA)


def test_restated_design_equals_the_plan_and_a_difference_is_named(gpu_config):
    plan = load_plan(REPO / "preregistration/plan.yaml")
    check_registered(gpu_config, plan, "config/gpu.yaml", "preregistration/plan.yaml")
    specs = [s for s in expand_design(plan, "gpu") if s.arm == "batch_sweep"]
    assert sorted({s.global_batch for s in specs}) == gpu_config["registered"]["global_batch"]
    assert sorted({s.lr_rule for s in specs}) == sorted(gpu_config["registered"]["lr_rules"])
    drifted = copy.deepcopy(gpu_config)
    drifted["registered"]["global_batch"] = [256, 1024, 4096, 16384]
    with pytest.raises(
        ConfigError, match=r"registered\.global_batch .*batch_sweep\.global_batch is \[256, 512"
    ):
        check_registered(drifted, plan, "config/gpu.yaml", "preregistration/plan.yaml")


def test_resources_and_launcher_follow_the_model_size(gpu_config):
    small = job_resources(gpu_config | {"model_size": "350m"}, "train")
    large = job_resources(gpu_config | {"model_size": "1.3b"}, "train")
    assert small["gpu"] < large["gpu"] and small["mem_mb"] < large["mem_mb"]
    assert small["gpu_model"] != large["gpu_model"] and small["runtime"] < large["runtime"]
    line = launcher_command(gpu_config | {"model_size": "1.3b"}, sys.executable)
    assert line.split()[0] == "torchrun" and f"--nproc_per_node={large['gpu']}" in line
    assert job_resources({"scale": "smoke"}, "train") == {}


def test_cluster_dry_run_lists_gpu_jobs_with_torchrun(cluster_dry_run):
    """`snakemake --profile cluster -n` on a clean checkout: every registered run is a
    train job; a language run's has the 1.3B size's GPUs, launched by torchrun with one
    process per GPU (a regression run's: tests/workflow/test_job_layout.py)."""
    blocks = re.findall(r"rule train:\n(.*?)\n\n", cluster_dry_run, flags=re.S)
    plan = load_plan(REPO / "preregistration/plan.yaml")
    assert len(blocks) == len(expand_design(plan, "gpu"))
    for block in blocks:
        if "condition=reg_" in block:  # the regression family's own model
            continue
        assert "gpu=8" in block and "gpu_model=h100" in block and "runtime=4320" in block
        assert "torchrun --standalone --nnodes=1 --nproc_per_node=8 -m training.run" in block


def test_test_profile_differs_from_the_cluster_profile_only_in_resources_and_status():
    """cluster/test/config.yaml (make cluster-test) runs what a cluster user runs."""
    cluster = yaml.safe_load((REPO / "cluster/config.yaml").read_text())
    test = yaml.safe_load((REPO / "cluster/test/config.yaml").read_text())
    resources = {"default-resources", "set-resources"}
    status = {"slurm-status-command", "slurm-init-seconds-before-status-checks",
              "seconds-between-status-checks"}  # fmt: skip
    assert {k: v for k, v in test.items() if k not in resources | status} == {
        k: v for k, v in cluster.items() if k not in resources | status
    }
    assert test["slurm-status-command"] == "squeue"
    assert cluster["retries"] >= 1 and cluster["slurm-requeue"] is True
