"""The preflight runs on a CPU at the shrunken shapes of config/gpu.yaml's sizes and writes
a JSON whose numbers are consistent: tokens/s is the step's tokens over its seconds, MFU is
tokens/s x (6N + 12LHQT) over the tabled peak, N is the GPT at the stated shape, and the
shape keeps each size's structure (heads of width 16, the same options)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from training.config import ModelConfig
from training.model import GPT, GPTConfig
from training.scale.compute_estimate import flops_per_token, load_sized_config
from training.scale.preflight import CPU_DIVISORS, device_peak_flops

pytestmark = pytest.mark.slow  # the preflight script runs as a process, at every registered size

REPO = Path(__file__).resolve().parents[3]
NOMINAL_CPU_PEAK = 1.0e11  # a stated nominal peak, so the test checks MFU's formula
POSITIVE = (
    "step_seconds", "tokens_per_second", "peak_memory_bytes", "logged_step_seconds",
    "logger_overhead_ratio", "warmup_seconds", "mfu",
)  # fmt: skip


@pytest.fixture(scope="module")
def preflight(tmp_path_factory) -> dict:
    """config/gpu.yaml with a nominal CPU peak added, run by the CLI: two sizes, compile
    off and on (aot_eager on a CPU), two timed steps per phase."""
    tmp = tmp_path_factory.mktemp("preflight")
    config = yaml.safe_load((REPO / "config/gpu.yaml").read_text())
    config["throughput"]["peak_flops"]["cpu"] = NOMINAL_CPU_PEAK
    config["results"] = str(tmp / "results")
    (tmp / "gpu.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["--config", str(tmp / "gpu.yaml"), "--steps", "2", "--warmup", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "training.scale.preflight", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp / "results/preflight/preflight.json"  # compute_estimate.preflight_path
    report = json.loads(out.read_text())
    return {"report": report, "stdout": proc.stdout, "config": config}


def test_preflight_json_has_every_size_and_compile_setting(preflight):
    report, config = preflight["report"], preflight["config"]
    assert report["device_type"] == "cpu" and report["device_count"] == 1
    assert report["shape"].startswith("cpu")
    seen = [(r["size"], r["compile"]) for r in report["sizes"]]
    assert seen == [(size, c) for size in config["models"] for c in (False, True)]
    assert "350m" in preflight["stdout"] and "tokens/s" in preflight["stdout"]


def test_preflight_numbers_are_finite_positive_and_consistent(preflight):
    report, config = preflight["report"], preflight["config"]
    for r in report["sizes"]:
        assert "error" not in r, r
        registered = config["models"][r["size"]]
        shape = {k: registered[k] // CPU_DIVISORS[k] for k in ("n_layer", "n_head", "n_embd")}
        assert {k: r["model"][k] for k in shape} == shape
        assert r["model"]["n_embd"] // r["model"]["n_head"] == 16
        model_cfg = {k: v for k, v in r["model"].items() if k != "vocab_size"}
        with torch.device("meta"):
            n_params = GPT(GPTConfig(vocab_size=r["model"]["vocab_size"], **model_cfg)).n_params()
        assert r["n_params"] == n_params
        # K = 8 passes of min(4096 / (8 x GPUs), the size's micro_batch_max) sequences
        gpus = config["cluster_resources"][r["size"]]["train"]["gpus"]
        cap = registered.get("micro_batch_max", config["train"]["micro_batch_max"])
        assert r["micro_batch"] == 4096 // (8 * gpus) and r["micro_batch_max"] == cap
        assert r["pass_sequences"] == min(cap, r["micro_batch"]) and r["n_micro"] == 8
        assert r["tokens_per_step"] == 8 * r["pass_sequences"] * r["model"]["block_size"]
        for key in POSITIVE:
            assert math.isfinite(r[key]) and r[key] > 0, (r["size"], key, r[key])
        assert r["tokens_per_second"] == pytest.approx(r["tokens_per_step"] / r["step_seconds"])
        per_token = flops_per_token(n_params, ModelConfig(**model_cfg))
        assert r["peak_flops"] == NOMINAL_CPU_PEAK
        assert r["mfu"] == pytest.approx(r["tokens_per_second"] * per_token / NOMINAL_CPU_PEAK)
        # A CPU's resident-set difference is at the allocator's resolution: finite only.
        assert math.isfinite(r["logger_memory_bytes"])
        assert r["compile_backend"] == ("aot_eager" if r["compile"] else None)
        assert r["streaming"] is config["train"]["pne_streaming"]


def test_preflight_measures_each_pass_size_asked_for(tmp_path):
    """--micro-batch-max 2,8: one entry per size and pass, each in passes of min(cap, m)."""
    out = tmp_path / "passes.json"
    args = ["--config", "config/gpu.yaml", "--out", str(out), "--compile", "off"]
    args += ["--micro-batch-max", "2,8", "--steps", "1", "--warmup", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "training.scale.preflight", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sizes = json.loads(out.read_text())["sizes"]
    assert [(r["size"], r["micro_batch_max"], r["pass_sequences"]) for r in sizes] == [
        ("350m", 2, 2), ("350m", 8, 8), ("1.3b", 2, 2), ("1.3b", 8, 8)
    ]  # fmt: skip
    assert all(r["tokens_per_step"] == 8 * r["pass_sequences"] * 64 for r in sizes)
    bad = subprocess.run(
        [sys.executable, "-m", "training.scale.preflight", "--micro-batch-max", "4,x"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--micro-batch-max takes positive integers" in bad.stderr


def test_preflight_all_reduces_each_gradient_size(preflight):
    report = preflight["report"]
    reduce = report["allreduce"]
    assert reduce["backend"] == "gloo" and reduce["world_size"] == 1
    numels = sorted({r["n_params"] for r in report["sizes"]})
    assert [s["numel"] for s in reduce["sizes"]] == numels
    for s in reduce["sizes"]:
        assert s["bytes"] == 4 * s["numel"]
        assert math.isfinite(s["seconds"]) and s["seconds"] > 0


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA A100-SXM4-80GB", 3.12e14),
        ("NVIDIA H100 80GB HBM3", 9.89e14),
        ("NVIDIA H200", 9.89e14),
        ("CPU (2 cores)", None),
    ],
)
def test_device_peak_comes_from_the_config_table(name, peak):
    config = load_sized_config(REPO / "config/gpu.yaml", None)
    assert device_peak_flops(config, name) == peak
