"""The compute estimate equals a count by hand for the smoke config (and names a missing
rate), its job counts are the jobs a cluster dry run submits, and its throughput is a
preflight's measurement of the same model when one exists (it says which it used)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from preregistration.design import arm_family, expand_design
from preregistration.plan import load_plan
from training.scale.compute_estimate import (
    load_sized_config,
    main,
    model_params,
    preflight_path,
    report,
    run_costs,
    run_tokens,
    submitted_jobs,
    train_pass,
)

REPO = Path(__file__).resolve().parents[3]


def test_estimate_matches_a_hand_count_for_the_smoke_config(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_sized_config(REPO / "config/smoke.yaml", None)
    # By hand: smoke model L=1, H=2, d=32 (Q=16), T=32; synthetic vocabulary
    # 1 BOS + 4 labels + 16 ICL items + 16 in-weights items + 8 key + 8 value + 16 copy tokens.
    vocab, d, n_layer, n_head, head_dim, T = 69, 32, 1, 2, 16, 32
    # Tied embedding V d; per block qkv 3d^2, proj d^2 + d, MLP 8d^2 + 5d, two LayerNorms 4d;
    # final LayerNorm 2d.
    n_params = vocab * d + n_layer * (3 * d * d + d * d + d + 8 * d * d + 5 * d + 4 * d) + 2 * d
    assert n_params == 14_880 == model_params(config)
    per_token = 6 * n_params + 12 * n_layer * n_head * head_dim * T  # 89,280 + 12,288
    assert per_token == 101_568
    # Smoke design: batches 4 and 8 sequences x rules fixed, sqrt x seeds 0, 1; token cap
    # 60,000: 468 steps of 128 tokens or 234 steps of 256 tokens, 59,904 tokens either way.
    specs = [
        s for s in expand_design(load_plan(REPO / "preregistration/plan.yaml"), "smoke")
        if s.arm == "batch_sweep"
    ]  # fmt: skip
    assert len(specs) == 8
    costs = run_costs(config, specs)
    assert [c.tokens for c in costs] == [59_904] * 8
    total = 8 * 59_904 * per_token
    assert sum(c.flops for c in costs) == pytest.approx(total, rel=1e-12)
    # The report counts every language-model run of the design (the noise arms too: the
    # same model and token cap); at a measured 5,000 tokens/s on one GPU.
    plan = load_plan(REPO / "preregistration/plan.yaml")
    language = [
        s for s in expand_design(plan, "smoke")
        if plan["design"]["arms"][s.arm].get("family", "language") == "language"
    ]  # fmt: skip
    n = len(language)
    assert [c.tokens for c in run_costs(config, language)] == [59_904] * n
    text = report(config, tokens_per_second=5000.0)
    assert f"N={n_params:,} parameters" in text
    assert f"training FLOPs, all runs (upper bound): {n * 59_904 * per_token:.4e}" in text
    assert f"GPU-hours: {n * 59_904 / 5000 / 3600:,.4g} " in text
    n_all = len(expand_design(plan, "smoke"))
    assert (
        f"jobs submitted: {n_all} train + {n} evaluate + {n_all - n} score + 1 data = "
        f"{2 * n_all + 1} " in text
    )


def _rule_blocks() -> dict[str, str]:
    """Each rule of the workflow with its text, from workflow/rules/*.smk and the Snakefile."""
    blocks: dict[str, str] = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        for chunk in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name, _, body = chunk.partition(":")
            blocks[name.strip()] = body
    return blocks


def test_estimated_jobs_are_the_ones_the_cluster_dry_run_submits(cluster_dry_run):
    """The job counts printed for config/gpu.yaml equal the dry-run's jobs of every rule
    that is not a local rule (the DAG Snakemake submits with --profile cluster)."""
    stats = cluster_dry_run[cluster_dry_run.index("Job stats:") :]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}
    blocks = _rule_blocks()
    submitted = {
        rule: n for rule, n in counts.items()
        if rule not in ("all", "total") and "localrule: True" not in blocks[rule]
    }  # fmt: skip
    config = load_sized_config(REPO / "config/gpu.yaml", None)
    plan = load_plan(REPO / config.plan)
    registered = expand_design(plan, config.scale)
    language = [s for s in registered if arm_family(plan, s.arm) == "language"]
    expected = submitted_jobs(config, len(registered), len(language))
    assert submitted == {rule: n for rule, n in expected.items() if n}


def test_gpu_estimate_uses_the_tabled_peak_and_names_a_missing_rate(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_sized_config(REPO / "config/gpu.yaml", "1.3b")
    per_gpu = 9.89e14 * 0.4  # H100 bf16 dense peak x the config's MFU
    n_params = model_params(config)
    per_token = 6 * n_params + 12 * 24 * 2048 * 1024
    plan = load_plan(REPO / "preregistration/plan.yaml")
    specs = [  # the language model's runs (the regression family has its own model)
        s for s in expand_design(plan, "gpu")
        if plan["design"]["arms"][s.arm].get("family", "language") == "language"
    ]  # fmt: skip
    tokens = sum((s.token_cap // (s.global_batch * 1024)) * s.global_batch * 1024 for s in specs)
    assert f"GPU-hours: {tokens * per_token / per_gpu / 3600:,.4g} (h100)" in report(config)
    with pytest.raises(SystemExit, match="no throughput for GPU model None"):
        report(load_sized_config(REPO / "config/smoke.yaml", None))


def preflight_json(config: dict, path: Path, tokens_per_second: float, ratio: float) -> None:
    """A preflight JSON (training.scale.preflight's fields) with one measurement of the config's
    model, compile off, at its train jobs' pass size, and two that must not be used: a
    shrunken shape, and the same model in passes of another size."""
    from training.scale.paper_scale import corpus_vocab_size

    shape = {k: getattr(config.model, k) for k in ("n_layer", "n_head", "n_embd", "block_size")}
    _, pass_sequences = train_pass(config)
    entry = {"size": config.model_size, "compile": False, "logger_overhead_ratio": ratio,
             "model": shape | {"vocab_size": corpus_vocab_size(config)},
             "pass_sequences": pass_sequences, "tokens_per_second": tokens_per_second}  # fmt: skip
    shrunk = entry | {"model": entry["model"] | {"n_layer": 2}, "tokens_per_second": 1.0}
    other_pass = entry | {"pass_sequences": pass_sequences + 1, "tokens_per_second": 2.0}
    report = {"device": "NVIDIA H200", "device_count": 1, "sizes": [shrunk, other_pass, entry]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def test_estimate_uses_a_preflight_measurement_of_the_same_model(monkeypatch, tmp_path):
    """GPU-hours at the preflight's tokens/s, its logger overhead spread over log_interval
    steps: rate = 20,000 / (1 + (1.5 - 1) / 100) tokens/s; the report names the device and file."""
    monkeypatch.chdir(REPO)
    config = replace(load_sized_config(REPO / "config/gpu.yaml", None), results=str(tmp_path))
    path = preflight_path(config)
    assert path == tmp_path / "preflight" / "preflight.json"
    preflight_json(config, path, tokens_per_second=20_000.0, ratio=1.5)
    text = report(config, preflight=path)
    assert f"throughput: measured by preflight on NVIDIA H200 ({path})" in text
    rate = 20_000.0 / (1 + 0.5 / config.train.log_interval)
    assert f"= {rate:,.0f} tokens/s" in text
    plan = load_plan(REPO / "preregistration/plan.yaml")
    specs = [s for s in expand_design(plan, "gpu") if arm_family(plan, s.arm) == "language"]
    tokens = sum(run_tokens(s, 1024) for s in specs)
    assert f"GPU-hours: {tokens / rate / 3600:,.4g} " in text
    # --tokens-per-second wins over the JSON.
    given = report(config, tokens_per_second=5000.0, preflight=path)
    assert "throughput: given (--tokens-per-second)" in given
    # The 1.3B model has no measurement in that JSON: assumed, and it says why.
    other = replace(load_sized_config(REPO / "config/gpu.yaml", "1.3b"), results=str(tmp_path))
    assert "has no measurement of" in report(other, preflight=path)


def test_estimate_says_it_assumed_peak_times_mfu_without_a_preflight(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(REPO)
    config = replace(load_sized_config(REPO / "config/gpu.yaml", None), results=str(tmp_path))
    path = preflight_path(config)
    text = report(config, preflight=path)
    rate = 3.12e14 * 0.4  # A100 (the 350M train jobs' GPU) x the config's MFU
    assert f"assumed: {rate:.4e} FLOP/s per GPU, peak x MFU from the config " in text
    assert f"(no preflight JSON at {path})" in text
    # The CLI (make estimate) says the same.
    assert main(["--config", "config/gpu.yaml", "--preflight", str(path)]) == 0
    assert f"(no preflight JSON at {path})" in capsys.readouterr().out
