"""Snakemake script: every end-of-run measure of one trained language model, in one
process and from one model load: the scores (training.evaluate.score_model), the
probes (training.probe_scores) and the project's lm-eval tasks, offline
(training.lm_eval_suite). Each writes its own tidy table, as the separate stages did."""

import sys
import time

import torch

from preregistration.tables import write_table
from training.evaluate import score_model
from training.lm_eval_adapter import load_checkpoint
from training.lm_eval_suite import lm_eval_scores
from training.probe_scores import probe_scores
from training.shards import load_corpus

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
run_id = snakemake.params.run_id  # noqa: F821
corpus = load_corpus(snakemake.input.corpus)  # noqa: F821
same = snakemake.input.synthetic == snakemake.input.corpus  # noqa: F821
synthetic = corpus if same else load_corpus(snakemake.input.synthetic)  # noqa: F821
model, tokenizer = load_checkpoint(snakemake.input.checkpoint, snakemake.input.synthetic)  # noqa: F821
if snakemake.config.get("device") == "cuda":  # noqa: F821
    model = model.cuda()
timings: dict[str, float] = {}

start = time.perf_counter()
scores = score_model(model, corpus, snakemake.params.evaluate, run_id)  # noqa: F821
timings["scores"] = time.perf_counter() - start
write_table(scores, "scores", snakemake.output.scores)  # noqa: F821

probes = probe_scores(model, synthetic, snakemake.params.probes, run_id, timings)  # noqa: F821
write_table(probes, "scores", snakemake.output.probes)  # noqa: F821

start = time.perf_counter()
lm_eval = lm_eval_scores(
    model,
    tokenizer,
    snakemake.params.data_dir,  # noqa: F821
    snakemake.params.tasks,  # noqa: F821
    run_id,
)
timings["lm_eval"] = time.perf_counter() - start
write_table(lm_eval, "lm_eval", snakemake.output.lm_eval)  # noqa: F821

print(", ".join(f"{k} {v:.2f} s" for k, v in timings.items()), file=sys.stderr)
for table in (scores, probes, lm_eval):
    print(table.to_string(index=False), file=sys.stderr)
