"""Snakemake script: score one trained model of the in-context regression family
(training.evaluation.run_evaluation.score_regression_run). A language run is scored with its
probes and lm-eval tasks by workflow/scripts/evaluate_run.py."""

import sys

import torch

from training.evaluation.run_evaluation import score_regression_run, write_regression_scores

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
scores = score_regression_run(
    snakemake.input.checkpoint,  # noqa: F821
    snakemake.config,  # noqa: F821
    snakemake.params.run_id,  # noqa: F821
)
write_regression_scores(scores, snakemake.output[0])  # noqa: F821
