"""Snakemake script: score one trained model (training.evaluate.score_model, or
training.regression_scores.score_regression for a run of the regression family)."""

import sys

import torch

from preregistration.plan import load_plan
from preregistration.tables import write_table
from training.evaluate import score_model
from training.model import GPT, GPTConfig
from training.regression_model import RegressionConfig, RegressionGPT
from training.regression_scores import score_regression
from training.regression_task import FAMILY, RegressionTask, family_config
from training.shards import load_corpus

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
corpus = load_corpus(snakemake.input.corpus)  # noqa: F821
ckpt = torch.load(snakemake.input.checkpoint, weights_only=False)  # noqa: F821
config = snakemake.config  # noqa: F821
run_cfg = family_config(config, load_plan(config["plan"]), ckpt["spec"]["arm"], config["plan"])
regression = run_cfg.get("family") == FAMILY
if regression:
    model = RegressionGPT(RegressionConfig(**ckpt["gpt_config"]))
else:
    model = GPT(GPTConfig(**ckpt["gpt_config"]))
model.load_state_dict(ckpt["model"])
if config.get("device") == "cuda":
    model = model.cuda()
run_id = snakemake.params.run_id  # noqa: F821
if regression:
    scores = score_regression(model, RegressionTask.from_config(run_cfg["regression"]), run_id)
else:
    scores = score_model(model, corpus, snakemake.params.evaluate, run_id)  # noqa: F821
write_table(scores, "scores", snakemake.output[0])  # noqa: F821
print(scores.to_string(index=False), file=sys.stderr)
