"""Snakemake script: the end-of-run probes of one trained model (training.probe_scores)."""

import sys

import torch

from preregistration.tables import write_table
from training.model import GPT, GPTConfig
from training.probe_scores import probe_scores

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
corpus = torch.load(snakemake.input.corpus, weights_only=False)  # noqa: F821
ckpt = torch.load(snakemake.input.checkpoint, weights_only=False)  # noqa: F821
model = GPT(GPTConfig(**ckpt["gpt_config"]))
model.load_state_dict(ckpt["model"])
if snakemake.config.get("device") == "cuda":  # noqa: F821
    model = model.cuda()
timings: dict[str, float] = {}
probes = probe_scores(model, corpus, snakemake.params.probes, snakemake.params.run_id, timings)  # noqa: F821
write_table(probes, "scores", snakemake.output[0])  # noqa: F821
print(", ".join(f"{k} {v:.2f} s" for k, v in timings.items()), file=sys.stderr)
print(probes.to_string(index=False), file=sys.stderr)
