"""The project's lm-eval tasks: local data from the corpus seed, run offline, tidy scores.

Three tasks in the synthetic vocabulary, declared as data (``training/evaluation/lm_eval_tasks/
<task>.yaml``; ``dataset_path: json``), with documents written here from the corpus'
data seed, the same for every run of a study:

- ``pne_icl_fewshot`` (multiple choice, ``loglikelihood``): held-out k-shot ICL
  episodes (``CorpusGenerator.icl_episodes``); metric ``acc``, chance 1/n_labels;
- ``pne_copy_cloze`` (``generate_until``): BOS, a segment of distinct copy tokens and
  its repeat without its last ``cloze_tokens`` tokens, which the model completes
  greedily; metric ``exact_match``;
- ``pne_heldout_rolling`` (``loglikelihood_rolling``): fresh sequences of the training
  distribution scored whole; metric ``word_perplexity`` (one word = one token).

``lm_eval_scores`` runs them through lm-eval's ``evaluator.evaluate`` with the
``training.evaluation.lm_eval_adapter.PneGPT`` model. Nothing touches a hub: the data files are
local JSON lines, and the Hugging Face libraries are put in offline mode before
lm-eval loads them (``HF_DATASETS_OFFLINE``, ``HF_HUB_OFFLINE``); the test suite runs
a task with every socket connection refused.

The standard tasks of the GPU scale (config ``lm_eval.standard_tasks``: MMLU, ARC,
HellaSwag, a BBH subset, LAMBADA) are English text: they need a model trained with
a natural-language tokenizer and their datasets in the local Hugging Face cache, and
are never run at the CPU scale.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before lm-eval imports datasets
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.config import LmEvalConfig, block_config  # noqa: E402
from training.data.corpus import CorpusGenerator  # noqa: E402
from training.evaluation.heads import repeated_random_sequences  # noqa: E402
from training.evaluation.lm_eval_adapter import PneGPT, SyntheticTokenizer  # noqa: E402
from training.model import GPT  # noqa: E402

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
TASKS = ("pne_icl_fewshot", "pne_copy_cloze", "pne_heldout_rolling")
METRICS = {  # task -> the metric its YAML registers (the runs table's column suffix)
    "pne_icl_fewshot": "acc",
    "pne_copy_cloze": "exact_match",
    "pne_heldout_rolling": "word_perplexity",
}
LM_EVAL_SEED_OFFSET = 13  # task documents come from data.seed + this (training: 1, 2;
# training.evaluation.scores: 7; training.evaluation.probes: 11)


def task_documents(corpus: dict, cfg: LmEvalConfig | Mapping) -> dict[str, list[dict]]:
    """The documents of every project task, from the corpus' data seed.

    Returns task -> list of JSON-able documents: ``pne_icl_fewshot``: ``context``,
    ``choices`` (every label word), ``label`` (index of the answer);
    ``pne_copy_cloze``: ``context``, ``target``; ``pne_heldout_rolling``: ``text``.
    """
    cfg = block_config(LmEvalConfig, cfg, "lm_eval config")
    gen = CorpusGenerator(corpus["data_cfg"], seq_len=corpus["block_size"] + 1)
    tok = SyntheticTokenizer(gen.vocab)
    seed = int(corpus["data_cfg"]["seed"]) + LM_EVAL_SEED_OFFSET
    n = cfg.n_docs
    labels = gen.vocab.ids("labels").tolist()

    inputs, targets = gen.icl_episodes(cfg.icl_shots, n, seed)
    icl = [
        {
            "context": tok.decode(x.tolist()),
            "choices": [tok.decode([y]) for y in labels],
            "label": labels.index(int(t)),
        }
        for x, t in zip(inputs, targets, strict=True)
    ]

    L, r = cfg.segment_len, cfg.cloze_tokens
    if not 1 <= r < L:
        raise ValueError(f"lm_eval config: cloze_tokens must be in 1..segment_len-1, got {r}")
    seqs = repeated_random_sequences(n, L, gen.vocab.ids("copy"), gen.vocab.bos, seed + 1)
    cloze = [
        {"context": tok.decode(s[: 1 + 2 * L - r].tolist()), "target": tok.decode(s[-r:].tolist())}
        for s in seqs
    ]

    heldout, _ = gen.sequences(n, seed + 2)
    rolling = []
    for s in heldout.tolist():
        body = s[1:]  # the adapter conditions on BOS itself
        while body and body[-1] == gen.vocab.bos:  # padding after a shorter sequence
            body.pop()
        rolling.append({"text": tok.decode(body)})
    docs = {"pne_icl_fewshot": icl, "pne_copy_cloze": cloze, "pne_heldout_rolling": rolling}
    return {t: docs[t] for t in cfg.tasks}


def write_task_data(
    corpus: dict, cfg: LmEvalConfig | Mapping, out_dir: str | Path
) -> dict[str, Path]:
    """Write ``<out_dir>/<task>.jsonl`` for every configured task; return task -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task, docs in task_documents(corpus, cfg).items():
        paths[task] = out_dir / f"{task}.jsonl"
        paths[task].write_text("".join(json.dumps(d) + "\n" for d in docs))
    return paths


def task_config(task: str, data_file: str | Path) -> dict:
    """The task's YAML (``TASK_DIR``) as a dict, its ``data_files`` pointing at ``data_file``."""
    if task not in TASKS:
        raise KeyError(f"unknown lm-eval task {task!r}; the project's tasks are {TASKS}")
    data_file = Path(data_file)
    if not data_file.is_file():
        raise FileNotFoundError(f"{data_file}: data of lm-eval task {task!r} not found")
    config = yaml.safe_load((TASK_DIR / f"{task}.yaml").read_text())
    config["dataset_kwargs"] = {"data_files": {"test": str(data_file.resolve())}}
    if config["output_type"] == "generate_until":  # generate as many tokens as the answers hold
        first = json.loads(data_file.read_text().splitlines()[0])
        config["generation_kwargs"]["max_gen_toks"] = len(first["target"].split())
    return config


def lm_eval_scores(
    model: GPT,
    tokenizer: SyntheticTokenizer,
    data_dir: str | Path,
    tasks: list[str],
    run_id: str,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Run ``tasks`` on ``model`` through lm-eval's ``evaluator.evaluate``, offline.

    Parameters
    ----------
    data_dir : path
        Holds ``<task>.jsonl`` for each task (``write_task_data``).

    Returns
    -------
    DataFrame
        One row per (task, metric) (``preregistration.tables`` LM_EVAL): ``run_id``,
        ``task``, ``metric``, ``value``, ``stderr`` (lm-eval's bootstrap or analytic
        standard error; NaN where it gives none), ``n_docs``.
    """
    # deferred: importing the harness costs about a second
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    configs = [task_config(t, Path(data_dir) / f"{t}.jsonl") for t in tasks]
    # What simple_evaluate sets up (seeds, zero-shot, the few-shot sampler's seed),
    # without its environment report (pip, git and torch's collect_env: 3 s a run).
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (lm-eval draws from the legacy global state)
    torch.manual_seed(0)
    # only the project's tasks: indexing lm-eval's thousands of built-in YAMLs takes 15 s
    loaded = TaskManager(include_path=str(TASK_DIR), include_defaults=False).load(configs)
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=0)
    out = evaluate(
        lm=PneGPT(model, tokenizer, batch_size=batch_size),
        task_dict=loaded,
        bootstrap_iters=100,  # a mean's stderr is analytic; only perplexities bootstrap
        log_samples=False,
    )
    rows = []
    for task in tasks:
        result = out["results"][task]
        metric = METRICS[task]
        stderr = result.get(f"{metric}_stderr,none")
        stderr = float(stderr) if isinstance(stderr, int | float) else float("nan")
        n_docs = int(out["n-samples"][task]["effective"])
        rows.append((run_id, task, metric, float(result[f"{metric},none"]), stderr, n_docs))
    df = pd.DataFrame(rows, columns=["run_id", "task", "metric", "value", "stderr", "n_docs"])
    df["stderr"] = df["stderr"].astype(float).where(np.isfinite(df["stderr"]), np.nan)
    return df
