"""The whole pipeline through Snakemake on the smoke study, and its entry points."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from output_checks import assert_figure, assert_markdown_table

from preregistration.design import expand_design
from preregistration.plan import load_plan
from preregistration.tables import read_table
from tests.snakemake_cli import planned_jobs, snakemake

REPO = Path(__file__).resolve().parents[2]


def test_smoke_study_end_to_end(smoke_study: Path):
    plan = load_plan(REPO / "preregistration/plan.yaml")
    registered = {(s.condition, s.seed) for s in expand_design(plan, "smoke")}
    runs = read_table(smoke_study / "tables/runs.parquet", "runs")
    assert set(zip(runs.condition, runs.seed, strict=True)) == registered
    steps = read_table(smoke_study / "tables/steps.parquet", "steps")
    assert set(steps.run_id) == set(runs.run_id)
    assert (steps.groupby("run_id").int_pne.diff().dropna() >= 0).all(), "integrals must grow"
    tables = [("h1", "h1"), ("t1_confirmatory", "tests"), ("t2_inventory", "inventory")]
    tables += [("clock_runs", "clock_runs"), ("clock_summary", "clock_summary")]
    tables += [("precision", "precision"), ("regression_shots", "regression_shots")]
    tables += [("regression_excess", "regression_excess")]
    for stem, table in tables:
        back = read_table(smoke_study / f"tables/{stem}.csv", table)  # through its contract
        assert len(back) > 0, stem
        assert_markdown_table(smoke_study / f"tables/{stem}.md", list(back.columns), len(back))
    inventory = read_table(smoke_study / "tables/t2_inventory.csv", "inventory")
    assert sorted(inventory.run_id) == sorted(runs.run_id)
    # figsize widths of the figure modules, each figure with data to draw
    widths = {"fig1_pne_icl": 6.2, "fig5_induction_sharpness": 11.5, "fig6_clipping": 10.0,
              "icl_curves": 10.0, "clock_decomposition": 6.4}  # fmt: skip
    for figure, width in widths.items():
        assert_figure(smoke_study / "figures", figure, width)
    # every language run evaluated by its evaluate job (columns named after the measure)
    evaluated = ["hessian_top_eigenvalue", "sam_sharpness", "induction_head_score"]
    evaluated += ["format_accuracy", "lm_eval_pne_icl_fewshot_acc"]
    language = runs[runs["arm"] != "regression_sweep"]  # probes and lm-eval read language models
    assert language[evaluated].notna().all().all(), language[evaluated]
    regression = runs[runs["arm"] == "regression_sweep"]
    assert len(regression) and regression["reg_icl_area"].notna().all(), regression
    audit = json.loads((smoke_study / "audit.json").read_text())
    assert audit["passed"], audit
    for log in ("corpus.log", "collect_runs.log", "analysis_tables.log", "audit.log"):
        assert (smoke_study / "logs" / log).exists()


def analysis_only_args(results: Path) -> list[str]:
    """What `make analysis` passes: the smoke study, analysis only, every analysis job forced."""
    config = ["--config", f"results={results}", "analysis_only=True"]
    return ["--configfile", "config/smoke.yaml", *config, "--forceall"]


# The data and training rules of both workflow layouts (one job per run or separate jobs).
TRAINING_RULES = {"corpus", "text_shards", "lm_eval_data", "train", "score", "evaluate",
                  "train_and_evaluate", "train_and_score"}  # fmt: skip


def test_analysis_only_schedules_no_training(smoke_study: Path):
    """Traces older than the training code and the inputs of their runs: a run that
    judged by modification times would train them again, an analysis-only run schedules
    no data, training or scoring job. The times are moved back, and restored, under the
    study's own results directory; nothing in the working tree is touched."""
    code = (REPO / "training/train.py").stat().st_mtime
    traces = [path for path in (smoke_study / "runs").rglob("*") if path.is_file()]
    times = {path: path.stat() for path in traces}
    try:
        for path in traces:  # training code newer than the traces
            os.utime(path, (code - 86400, code - 86400))
        # Snakemake reruns on a newer input only if its checksum changed, a file of at
        # most --max-checksum-file-size bytes; with 0, modification times decide.
        full = ["--configfile", "config/smoke.yaml", "--config", f"results={smoke_study}"]
        stale = planned_jobs(snakemake(*full, "--max-checksum-file-size", "0", "-n").stdout)
        jobs = planned_jobs(snakemake(*analysis_only_args(smoke_study), "-n").stdout)
    finally:
        for path, stat in times.items():
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert {"train_and_evaluate", "train_and_score"} <= set(stale), stale  # the smoke layout
    assert "collect_runs" in jobs and "audit" in jobs
    assert not TRAINING_RULES & set(jobs), jobs


def test_analysis_only_regenerates_tables(smoke_study: Path):
    table = smoke_study / "tables/t1_confirmatory.csv"
    before = pd.read_csv(table)
    table.unlink()
    snakemake(*analysis_only_args(smoke_study))
    pd.testing.assert_frame_equal(pd.read_csv(table), before)


@pytest.mark.slow
def test_cluster_profile_dry_run():
    out = snakemake("--profile", "cluster", "-n").stdout
    jobs = planned_jobs(out)
    plan = load_plan(REPO / "preregistration/plan.yaml")
    assert jobs.get("train") == len(expand_design(plan, "gpu"))


@pytest.mark.slow
def test_malformed_config_names_the_key(tmp_path: Path):
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["model"]["n_layer"] = "two"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = snakemake("--configfile", str(bad), "-n", check=False)
    assert proc.returncode != 0
    assert "n_layer" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_unknown_config_key_is_rejected(tmp_path: Path):
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["train"]["learning_rate"] = 0.1  # the LR belongs to the plan, not the config
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = snakemake("--configfile", str(bad), "-n", check=False)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stdout + proc.stderr
