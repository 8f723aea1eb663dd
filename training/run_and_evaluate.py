"""Command line: train one run, then evaluate it, in one process:
``python -m training.run_and_evaluate``.

At the CPU scale a run trains in seconds to minutes, and a job of its own for the
evaluation would start the interpreter and import torch a second time. This
command takes ``training.run``'s arguments, trains with ``training.run.main`` (same
outputs: ``checkpoint.pt``, ``trace.parquet``, ``layers.parquet``, ``meta.json``),
then evaluates the checkpoint it has just written with the functions of the
evaluate and score rules (``training.evaluation.run_evaluation``), writing their tables into
``--out``: a language run's ``scores.parquet``, ``probes.parquet`` and
``lm_eval.parquet``; a regression run's ``scores.parquet``. The files are those the
separate train and evaluate (or score) jobs write; the workflow's config switch
``one_job_per_run`` picks this command (workflow/rules/train_and_evaluate.smk).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch.distributed as dist

from preregistration.design import arm_family
from preregistration.plan import load_plan
from training import run
from training.config import study_config
from training.evaluation.run_evaluation import (
    evaluate_language_run,
    score_regression_run,
    write_language_evaluation,
    write_regression_scores,
)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """This command's own options, and the rest: ``training.run``'s arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=Path, help="synthetic corpus (a language run)")
    parser.add_argument("--lm-eval-data", type=Path, help="lm-eval documents (a language run)")
    args, rest = parser.parse_known_args(argv)
    shared = argparse.ArgumentParser(add_help=False)
    for name in ("--config-json", "--corpus", "--condition", "--seed", "--out"):
        shared.add_argument(name, required=True)
    known, _ = shared.parse_known_args(rest)
    return argparse.Namespace(**vars(args), **vars(known)), rest


def main(argv: list[str] | None = None) -> int:
    args, run_argv = parse_args(argv)
    status = run.main(run_argv)
    if status != 0 or (dist.is_initialized() and dist.get_rank() != 0):
        return status
    config = study_config(json.loads(args.config_json), "--config-json")
    spec = run.find_spec(config, args.condition, int(args.seed))
    out = Path(args.out)
    family = arm_family(load_plan(config.plan), spec.arm)
    if family == "language":
        if args.synthetic is None or args.lm_eval_data is None:
            raise SystemExit(
                f"run {spec.run_id} is a language run: pass --synthetic and --lm-eval-data"
            )
        tables, timings = evaluate_language_run(
            out / "checkpoint.pt", args.corpus, args.synthetic, args.lm_eval_data, config,
            spec.run_id,
        )  # fmt: skip
        paths = {name: out / f"{name}.parquet" for name in tables}
        write_language_evaluation(tables, timings, paths)
    else:
        scores = score_regression_run(out / "checkpoint.pt", config, spec.run_id)
        write_regression_scores(scores, out / "scores.parquet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
