"""Snakemake script: score one trained model (training.evaluate.score_model)."""

import sys

import torch

from preregistration.tables import write_table
from training.evaluate import score_model
from training.model import GPT, GPTConfig
from training.shards import load_corpus

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
corpus = load_corpus(snakemake.input.corpus)  # noqa: F821
ckpt = torch.load(snakemake.input.checkpoint, weights_only=False)  # noqa: F821
model = GPT(GPTConfig(**ckpt["gpt_config"]))
model.load_state_dict(ckpt["model"])
if snakemake.config.get("device") == "cuda":  # noqa: F821
    model = model.cuda()
scores = score_model(model, corpus, snakemake.params.evaluate, snakemake.params.run_id)  # noqa: F821
write_table(scores, "scores", snakemake.output[0])  # noqa: F821
print(scores.to_string(index=False), file=sys.stderr)
