"""Snakemake script: write the project's lm-eval task data (training.evaluation.lm_eval_suite)."""

import sys

from training.data.shards import load_corpus
from training.evaluation.lm_eval_suite import write_task_data

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
corpus = load_corpus(snakemake.input.corpus)  # noqa: F821
paths = write_task_data(corpus, snakemake.params.lm_eval, snakemake.params.out_dir)  # noqa: F821
for task, path in paths.items():
    print(f"{task}: {path}", file=sys.stderr)
