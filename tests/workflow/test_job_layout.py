"""How the workflow lays out its jobs (issue 20), and what each job asks of a cluster.

- ``one_job_per_run`` (default true; config/gpu.yaml: false): at the CPU scales a run
  is trained and evaluated in one job (workflow/rules/train_and_evaluate.smk). Its
  files equal those of the separate train and evaluate (or score) jobs, byte for
  byte, but for the trainer's wall time.
- Cluster resources are per model size and per task family: a regression run's jobs
  ask for what its own small model needs, never the language model's GPUs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from preregistration.design import arm_family, expand_design
from preregistration.plan import load_plan
from tests.snakemake_cli import planned_jobs, snakemake
from training.scale.paper_scale import ConfigError, job_resources, launcher_command

REPO = Path(__file__).resolve().parents[2]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
PLAN = load_plan(REPO / "preregistration/plan.yaml")
# one run of each family of the smoke study, neither following a reference run
LANGUAGE_RUN, REGRESSION_RUN = ("bs4_fixed", 0), ("reg_bs4_fixed", 0)
LANGUAGE_FILES = ["checkpoint.pt", "trace.parquet", "layers.parquet", "meta.json"]
LANGUAGE_FILES += ["scores.parquet", "probes.parquet", "lm_eval.parquet"]
REGRESSION_FILES = ["checkpoint.pt", "trace.parquet", "layers.parquet", "meta.json"]
REGRESSION_FILES += ["scores.parquet"]


def family_conditions(scale: str, family: str) -> set[str]:
    return {s.condition for s in expand_design(PLAN, scale) if arm_family(PLAN, s.arm) == family}


# --- one job per run -------------------------------------------------------------------


def test_default_layout_trains_and_evaluates_each_run_in_one_job(tmp_path: Path):
    specs = expand_design(PLAN, "smoke")
    n_regression = len([s for s in specs if arm_family(PLAN, s.arm) == "regression"])
    base = ["--configfile", "config/smoke.yaml", "-n", "--config", f"results={tmp_path}"]
    one = planned_jobs(snakemake(*base).stdout)
    assert one["train_and_evaluate"] + one["train_and_score"] == len(specs)
    assert one["train_and_score"] == n_regression
    assert not {"train", "evaluate", "score"} & set(one), one
    apart = planned_jobs(snakemake(*base, "one_job_per_run=False").stdout)
    assert apart["train"] == len(specs) and apart["score"] == n_regression
    assert apart["evaluate"] == len(specs) - n_regression
    assert not {"train_and_evaluate", "train_and_score"} & set(apart), apart


def test_the_cluster_config_keeps_train_and_evaluate_apart():
    config = yaml.safe_load((REPO / "config/gpu.yaml").read_text())
    assert config["one_job_per_run"] is False
    for name in ("config.yaml", "smoke.yaml"):  # the schema is the default's only home
        assert "one_job_per_run" not in yaml.safe_load((REPO / "config" / name).read_text())
    smoke = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    validate(smoke, SCHEMA)
    assert smoke["one_job_per_run"] is True


def _run_files(traces: Path, run: tuple[str, int], names: list[str]) -> list[str]:
    return [str(traces / run[0] / f"seed{run[1]}" / name) for name in names]


def test_one_job_writes_the_files_of_the_separate_jobs(smoke_study: Path, tmp_path: Path):
    """Two runs (one per family) of the smoke study (tests/conftest.py: the default layout,
    one job per run) again through the separate train and evaluate (score) jobs, into
    another trace directory beside the same corpus: every file is the same bytes,
    meta.json but for the trainer's wall time and the trace directory it records."""
    layouts = {"one": smoke_study / "runs", "apart": tmp_path / "apart"}
    targets = _run_files(layouts["apart"], LANGUAGE_RUN, LANGUAGE_FILES)
    targets += _run_files(layouts["apart"], REGRESSION_RUN, REGRESSION_FILES)
    config = [f"results={smoke_study}", f"traces={layouts['apart']}", "one_job_per_run=False"]
    snakemake("--configfile", "config/smoke.yaml", "--config", *config, "--", *targets)
    for run, names in ((LANGUAGE_RUN, LANGUAGE_FILES), (REGRESSION_RUN, REGRESSION_FILES)):
        one = _run_files(layouts["one"], run, names)
        apart = _run_files(layouts["apart"], run, names)
        for name, a, b in zip(names, one, apart, strict=True):
            if name == "meta.json":
                metas = [json.loads(Path(p).read_text()) for p in (a, b)]
                for meta in metas:
                    assert meta["wall_time_s"] > 0
                    del meta["wall_time_s"]
                    meta["config"].pop("traces", None)
                    assert "one_job_per_run" not in meta["config"]
                assert metas[0] == metas[1], name
            else:
                assert Path(a).read_bytes() == Path(b).read_bytes(), f"{run}: {name} differs"


# --- cluster resources per task family -------------------------------------------------


@pytest.fixture(scope="module")
def gpu_config() -> dict:
    config = yaml.safe_load((REPO / "config/gpu.yaml").read_text())
    validate(config, SCHEMA)
    return config


@pytest.mark.parametrize("size", ["350m", "1.3b"])
def test_regression_jobs_ask_for_their_own_model_at_every_size(gpu_config, size):
    config = gpu_config | {"model_size": size}
    language = job_resources(config, "train")
    regression = job_resources(config, "train", "regression")
    assert regression["gpu"] == 1 < language["gpu"]
    assert regression["runtime"] <= 8 * 60 < language["runtime"]
    assert regression["mem_mb"] < language["mem_mb"]
    assert job_resources(config, "score", "regression")["gpu"] == 1
    assert "--nproc_per_node=1" in launcher_command(config, sys.executable, "regression")


def test_a_family_without_resources_is_named(gpu_config):
    table = {k: v for k, v in gpu_config["cluster_resources"].items() if k != "regression"}
    with pytest.raises(ConfigError, match=r"no entry for the task family 'regression'"):
        job_resources(gpu_config | {"cluster_resources": table}, "train", "regression")


def test_cluster_dry_run_gives_regression_jobs_one_gpu_for_hours(cluster_dry_run):
    """`snakemake --profile cluster -n` at the 1.3B size: a regression run's train job
    asks for 1 GPU for at most a few hours and starts one process; a language run's
    asks for the 1.3B model's 8 GPUs for days."""
    blocks = re.findall(r"rule (train|score|evaluate):\n(.*?)\n\n", cluster_dry_run, flags=re.S)
    regression = family_conditions("gpu", "regression")
    seen = {"regression": 0, "language": 0}
    for rule, block in blocks:
        condition = re.search(r"wildcards: condition=([^,]+),", block).group(1)
        resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block)[1]))
        family = "regression" if condition in regression else "language"
        seen[family] += 1
        if family == "regression":
            assert resources["gpu"] == "1" and int(resources["runtime"]) <= 8 * 60, block
            assert int(resources["mem_mb"]) <= 64000, block
            if rule == "train":
                assert "--nproc_per_node=1 -m training.run" in block, block
        elif rule == "train":
            assert resources["gpu"] == "8" and resources["runtime"] == "4320", block
    # every regression run's train and score job, every language run's train and evaluate job
    runs = {f: len([s for s in expand_design(PLAN, "gpu") if arm_family(PLAN, s.arm) == f])
            for f in seen}  # fmt: skip
    assert seen == {f: 2 * n for f, n in runs.items()}, (seen, runs)
