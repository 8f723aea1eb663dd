"""Snakemake script: score one trained model of the in-context regression family
(training.regression_scores.score_regression). A language run is scored with its
probes and lm-eval tasks by workflow/scripts/evaluate_run.py."""

import sys

import torch

from preregistration.plan import load_plan
from preregistration.tables import write_table
from training.checkpoints import load_plain
from training.regression_model import RegressionConfig, RegressionGPT
from training.regression_scores import score_regression
from training.regression_task import FAMILY, RegressionTask, family_config

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
ckpt = load_plain(snakemake.input.checkpoint, "checkpoint")  # noqa: F821
config = snakemake.config  # noqa: F821
run_cfg = family_config(config, load_plan(config["plan"]), ckpt["spec"]["arm"], config["plan"])
if run_cfg.get("family") != FAMILY:
    raise SystemExit(
        f"{snakemake.input.checkpoint}: arm {ckpt['spec']['arm']!r} is not of the "  # noqa: F821
        f"{FAMILY} family; language runs are scored by the evaluate rule"
    )
model = RegressionGPT(RegressionConfig(**ckpt["gpt_config"]))
model.load_state_dict(ckpt["model"])
if config.get("device") == "cuda":
    model = model.cuda()
task = RegressionTask.from_config(run_cfg["regression"])
scores = score_regression(model, task, snakemake.params.run_id)  # noqa: F821
write_table(scores, "scores", snakemake.output[0])  # noqa: F821
print(scores.to_string(index=False), file=sys.stderr)
