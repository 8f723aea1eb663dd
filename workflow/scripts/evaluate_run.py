"""Snakemake script: every end-of-run measure of one trained language model, in one
process and from one model load (training.evaluation.run_evaluation.evaluate_language_run):
the scores, the probes and the project's lm-eval tasks, each its own tidy table."""

import sys

import torch

from training.evaluation.run_evaluation import evaluate_language_run, write_language_evaluation

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
tables, timings = evaluate_language_run(
    snakemake.input.checkpoint,  # noqa: F821
    snakemake.input.corpus,  # noqa: F821
    snakemake.input.synthetic,  # noqa: F821
    snakemake.params.data_dir,  # noqa: F821
    snakemake.config,  # noqa: F821
    snakemake.params.run_id,  # noqa: F821
)
write_language_evaluation(tables, timings, dict(snakemake.output.items()))  # noqa: F821
