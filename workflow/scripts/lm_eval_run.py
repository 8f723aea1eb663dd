"""Snakemake script: the project's lm-eval tasks on one trained model, offline."""

import sys

import torch

from preregistration.tables import write_table
from training.lm_eval_adapter import load_checkpoint
from training.lm_eval_suite import lm_eval_scores

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
model, tokenizer = load_checkpoint(snakemake.input.checkpoint, snakemake.input.corpus)  # noqa: F821
if snakemake.config.get("device") == "cuda":  # noqa: F821
    model = model.cuda()
scores = lm_eval_scores(
    model,
    tokenizer,
    snakemake.params.data_dir,  # noqa: F821
    snakemake.params.tasks,  # noqa: F821
    snakemake.params.run_id,  # noqa: F821
)
write_table(scores, "lm_eval", snakemake.output[0])  # noqa: F821
print(scores.to_string(index=False), file=sys.stderr)
