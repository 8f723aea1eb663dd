"""Wall time of each stage of the study, from Snakemake's per-job benchmark files.

Every rule writes ``<results>/benchmarks/<rule>...tsv`` (Snakemake's ``benchmark:``
directive: wall seconds, peak memory). This script runs the study of a config in a
fresh results directory (or reads an existing one with ``--existing``) and prints,
per stage, the number of jobs, the summed and the longest job wall time, the
evaluation cost of each run (its evaluate or score job, and each measure inside it), and
the whole run's wall time; then per arm of the design (from the runs table) the
training and scoring wall time, summed and longest (``--per-run``: every run's).
``--startup`` adds each stage's start-up cost per job: the wall time of a fresh
interpreter that imports what the job's entry point imports (a ``script:`` rule's
script, with Snakemake's script module; a ``shell:`` rule's ``python -m`` module),
times the stage's jobs, and its share of the stage's summed wall time.

    python bench/stage_times.py [--config config/config.yaml] [--existing results] [--per-run]
                                [--startup]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WARM_START = REPO / "workflow" / "warm_start.py"


def stage_table(results: Path) -> pd.DataFrame:
    """One row per stage: jobs, summed and longest wall time (s), peak RSS (MB)."""
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        bench = pd.read_csv(tsv, sep="\t")
        rows.append(
            {
                "stage": stage,
                "s": float(bench["s"].iloc[0]),
                "max_rss_mb": float(pd.to_numeric(bench["max_rss"], errors="coerce").iloc[0]),
            }
        )
    jobs = pd.DataFrame(rows)
    return (
        jobs.groupby("stage", sort=False)
        .agg(
            jobs=("s", "size"),
            sum_s=("s", "sum"),
            longest_s=("s", "max"),
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )


def arm_times(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and scoring wall time per run and per arm.

    Per run: the ``train`` benchmark files and those of the run's evaluation
    (``evaluate`` for a language run, ``score`` for a run of another family;
    ``benchmarks/<stage>/<condition>_seed<seed>.tsv``) joined to the runs table
    (``tables/runs.parquet``: arm, role, and the trainer's own ``wall_time_s``).
    Per arm: runs, summed and longest job wall time of training and scoring.
    A benchmark of a run the runs table does not list is reported under arm '?'.
    """
    runs = pd.read_parquet(results / "tables" / "runs.parquet")
    if "role" not in runs:  # a runs table written before the causal arms
        runs["role"] = "condition"
    per_run = runs[["run_id", "arm", "role", "wall_time_s"]].set_index("run_id")
    for column, stages in (("train_s", ("train",)), ("score_s", EVALUATION_STAGES)):
        times = {}
        for stage in stages:
            for tsv in sorted((results / "benchmarks" / stage).glob("*_seed*.tsv")):
                condition, seed = tsv.stem.rsplit("_seed", 1)
                seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
                times[f"{condition}_s{int(seed)}"] = seconds
        per_run = per_run.join(pd.Series(times, name=column), how="outer")
    per_run["arm"] = per_run["arm"].fillna("?")
    per_arm = (
        per_run.groupby("arm", sort=False)
        .agg(
            runs=("arm", "size"),
            train_sum_s=("train_s", "sum"),
            train_longest_s=("train_s", "max"),
            score_sum_s=("score_s", "sum"),
            trainer_wall_sum_s=("wall_time_s", "sum"),
        )
        .reset_index()
    )
    return per_run.reset_index(names="run_id"), per_arm


# per-run rules that read a checkpoint: `evaluate` (a language run: scores, probes and
# lm-eval in one process) and `score` (a run of another task family)
# (train_and_evaluate, train_and_score: a run trained and evaluated in one job,
# config one_job_per_run; its benchmark counts both)
EVALUATION_STAGES = ("evaluate", "score", "train_and_evaluate", "train_and_score")
# the line of seconds per measure that workflow/scripts/evaluate_run.py writes to its log
TIMING_LINE = re.compile(r"^(?:[a-z_]+ [0-9.]+ s)(?:, [a-z_]+ [0-9.]+ s)*$")


def evaluation_cost(results: Path) -> pd.DataFrame:
    """Evaluation wall time per run: one row per run (``<condition>_seed<seed>``), the
    job's seconds (``total_s``: its benchmark file) and, for an ``evaluate`` job, the
    seconds of each measure inside it (``<measure>_s``, from its log: scores, the
    probes' hessian, sam, fisher, heads, icl_vs_gd, memorization, and lm_eval); a last
    row ``mean`` over runs. Empty when no run was evaluated."""
    per_run: dict[str, dict[str, float]] = {}
    for stage in EVALUATION_STAGES:
        for tsv in sorted((results / "benchmarks" / stage).glob("*.tsv")):
            row = per_run.setdefault(tsv.stem, {"stage": stage})
            row["total_s"] = float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
            log = results / "logs" / stage / f"{tsv.stem}.log"
            lines = log.read_text().splitlines() if log.exists() else []
            for line in filter(TIMING_LINE.match, lines):
                for part in line.split(", "):
                    measure, seconds, _ = part.split(" ")
                    row[f"{measure}_s"] = float(seconds)
    if not per_run:
        return pd.DataFrame()
    table = pd.DataFrame.from_dict(per_run, orient="index").sort_index()
    columns = ["stage", "total_s"] + [c for c in table if c not in ("stage", "total_s")]
    table = table[columns]
    table.loc["mean"] = table.drop(columns="stage").mean()
    table.loc["mean", "stage"] = "mean"
    return table.rename_axis("run").reset_index()


RULE = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.S | re.M)


def rule_entry_points(rules_dir: Path = REPO / "workflow" / "rules") -> dict[str, list[str]]:
    """Rule -> the modules its job imports when it starts: a ``script:`` rule's
    top-level imports (and ``snakemake.script``, which unpickles the job), a
    ``shell:`` rule's ``-m <module>``. Rules without a Python entry point are left out."""
    out = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        for name, body in RULE.findall(smk.read_text()):
            script = re.search(r'script:\s*"\.\./scripts/([\w.]+\.py)"', body)
            module = re.search(r"-m ([\w.]+)", body)
            if script:
                tree = ast.parse((rules_dir.parent / "scripts" / script.group(1)).read_text())
                imports = ["snakemake.script"]
                for node in tree.body:
                    if isinstance(node, ast.Import):
                        imports += [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module:
                        imports.append(node.module)
                out[name] = imports
            elif module:
                out[name] = [module.group(1)]
    return out


def launcher_rules(rules_dir: Path = REPO / "workflow" / "rules") -> set[str]:
    """The rules whose shell command starts with the run launcher (``{params.launcher}``:
    through the warm-start client when the launcher is plain python)."""
    return {
        name
        for smk in sorted(rules_dir.glob("*.smk"))
        for name, body in RULE.findall(smk.read_text())
        if "{params.launcher}" in body
    }


# What a job imports inside the functions it calls, beside its entry point's top-level
# imports: training.evaluation.run_evaluation imports each family's evaluation where it is used.
_LANGUAGE_EVALUATION = ["training.evaluation.scores", "training.evaluation.lm_eval_adapter"]
_LANGUAGE_EVALUATION += [
    "training.evaluation.lm_eval_suite",
    "training.evaluation.probes",
    "training.data.shards",
]
_REGRESSION_SCORES = ["preregistration.plan", "training.checkpoints"]
_REGRESSION_SCORES += ["training.regression.model", "training.regression.scores"]
# torch.optim's optimizers import torch._dynamo when they are built (about 2 s).
DEFERRED_IMPORTS = {
    "train": ["torch._dynamo"],
    "evaluate": _LANGUAGE_EVALUATION,
    "train_and_evaluate": ["torch._dynamo", *_LANGUAGE_EVALUATION],
    "score": _REGRESSION_SCORES,
    "train_and_score": ["torch._dynamo", *_REGRESSION_SCORES],
}


def startup_seconds(modules: list[str], repeats: int = 3) -> float:
    """Median wall time of a fresh interpreter that imports ``modules`` and exits."""
    code = "; ".join(f"import {m}" for m in modules)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def warm_startup_seconds(modules: list[str], repeats: int = 3) -> float:
    """Median wall time of a job that imports ``modules`` and exits, run through the
    warm-start client (a fork of a server holding the run jobs' imports, as under
    ``make reproduce``) instead of a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="warm_probe.") as tmp:
        (Path(tmp) / "startup_probe.py").write_text("".join(f"import {m}\n" for m in modules))
        client = [sys.executable, str(WARM_START), "run", "-m", "startup_probe"]
        timer = (
            "import statistics, subprocess, sys, time\n"
            f"subprocess.run({client!r}, check=True)\n"  # the first waits for the imports
            "times = []\n"
            f"for _ in range({repeats}):\n"
            "    start = time.perf_counter()\n"
            f"    subprocess.run({client!r}, check=True)\n"
            "    times.append(time.perf_counter() - start)\n"
            "print(statistics.median(times))\n"
        )
        done = subprocess.run(
            [sys.executable, str(WARM_START), "serve", "--", sys.executable, "-c", timer],
            cwd=REPO, env=os.environ | {"PYTHONPATH": tmp}, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
    return float(done.stdout.split()[-1])


def startup_table(stages: pd.DataFrame, repeats: int = 3) -> pd.DataFrame:
    """Per stage of ``stage_table`` with a Python entry point: its start-up seconds per
    job in a fresh interpreter (``startup_s``), times its jobs (``startup_sum_s``), and
    that sum's share of the stage's summed wall time (``startup_share``); for the stages
    whose jobs start through the run launcher, the same job's start through the
    warm-start client (``warm_s``, ``warm_sum_s``)."""
    entry = rule_entry_points()
    launched = launcher_rules()
    rows = []
    for row in stages.itertuples(index=False):
        if row.stage not in entry:
            continue
        modules = entry[row.stage] + DEFERRED_IMPORTS.get(row.stage, [])
        per_job = startup_seconds(modules, repeats)
        warm = warm_startup_seconds(modules, repeats) if row.stage in launched else per_job
        rows.append(
            {
                "stage": row.stage,
                "jobs": row.jobs,
                "startup_s": per_job,
                "startup_sum_s": per_job * row.jobs,
                "startup_share": per_job * row.jobs / row.sum_s,
                "warm_s": warm,
                "warm_sum_s": warm * row.jobs,
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        total = {"stage": "all", "jobs": table["jobs"].sum()}
        total |= {"startup_sum_s": table["startup_sum_s"].sum()}
        total |= {"startup_share": total["startup_sum_s"] / stages["sum_s"].sum()}
        total |= {"warm_sum_s": table["warm_sum_s"].sum()}
        table.loc[len(table)] = total
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--existing", type=Path, help="read this results directory, run nothing")
    parser.add_argument("--cores", default="2")
    parser.add_argument("--per-run", action="store_true", help="also print every run's times")
    parser.add_argument(
        "--startup", action="store_true", help="also time each stage's start-up per job"
    )
    parser.add_argument("--repeats", type=int, default=3, help="start-up timings per stage")
    parser.add_argument(
        "--cold", action="store_true", help="run the study without the warm-start server"
    )
    args = parser.parse_args()
    total = float("nan")
    if args.existing:
        results = args.existing
    else:
        results = Path(tempfile.mkdtemp(prefix="stage_times_"))
        snakemake = str(Path(sys.executable).with_name("snakemake"))
        start = time.perf_counter()
        command = [snakemake, "--cores", args.cores, "--configfile", args.config]
        command += ["--config", f"results={results}"]
        if not args.cold:  # as make reproduce runs it: run jobs fork from a warm start
            command = [sys.executable, str(WARM_START), "serve", "--", *command]
        proc = subprocess.run(command, cwd=REPO)
        total = time.perf_counter() - start
        if proc.returncode != 0:
            return proc.returncode
    show = {"index": False, "float_format": lambda v: f"{v:.1f}"}
    stages = stage_table(results)
    print(stages.to_string(**show))
    if args.startup:
        print(
            "\nstart-up per job (s): a fresh interpreter importing the job's entry point; "
            "warm: the same through the warm-start client"
        )
        table = startup_table(stages, args.repeats)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if (results / "tables" / "runs.parquet").is_file():
        per_run, per_arm = arm_times(results)
        print("\nwall time per arm (benchmark s of each job; trainer_wall: meta.json wall_time_s)")
        print(per_arm.to_string(**show))
        if args.per_run:
            print("\nwall time per run")
            print(per_run.sort_values(["arm", "run_id"]).to_string(**show))
    cost = evaluation_cost(results)
    if len(cost):
        print("\nevaluation cost per run (s):")
        print(cost.to_string(**show))
    print(f"results: {results}")
    print(f"total_wall_s={total:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
