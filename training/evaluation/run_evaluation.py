"""End-of-run evaluation of one trained model, read from its ``checkpoint.pt``.

A language run gets every measure from one model load: its scores
(``training.evaluation.scores.score_model``), the probes (``training.evaluation.probes``) and the
project's lm-eval tasks, run offline (``training.evaluation.lm_eval_suite``); a run of the
in-context regression family gets its scores (``training.regression.scores``).
Each measure is its own tidy table (``preregistration.tables``), written at the
paths the caller names. The evaluate and score rules call these functions on a
checkpoint of an earlier train job; ``training.run_and_evaluate`` calls them in the
train job's process, on the checkpoint it has just written, so both give the
same files.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from preregistration.tables import write_table
from training.config import StudyConfig, study_config

# table of each output of a language run's evaluation (preregistration.tables)
LANGUAGE_TABLES = {"scores": "scores", "probes": "scores", "lm_eval": "lm_eval"}


def evaluate_language_run(
    checkpoint: str | Path,
    corpus: str | Path,
    synthetic: str | Path,
    data_dir: str | Path,
    config: StudyConfig | Mapping,
    run_id: str,
) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Scores, probes and lm-eval tables of one language run, and seconds per measure.

    Parameters
    ----------
    checkpoint : the run's ``checkpoint.pt`` (``training.train.save_checkpoint``).
    corpus : the training corpus (token shards' ``corpus.json`` or ``corpus.pt``), for the scores.
    synthetic : the synthetic corpus, on whose families the probes and lm-eval tasks are built.
    data_dir : the lm-eval tasks' documents (rule ``lm_eval_data``).
    config : the resolved study config: ``evaluate``, ``probes``, ``lm_eval.tasks``, ``device``.
    run_id : ``<condition>_s<seed>``, the tables' ``run_id``.

    Returns
    -------
    tables : ``{"scores", "probes", "lm_eval"}`` -> tidy table (see LANGUAGE_TABLES).
    timings : measure -> wall seconds (scores, each probe, lm_eval).
    """
    # lm-eval (and the probes) are imported here, not at module level: a regression
    # run's job never loads them.
    from training.data.shards import load_corpus
    from training.evaluation.lm_eval_adapter import load_checkpoint
    from training.evaluation.lm_eval_suite import lm_eval_scores
    from training.evaluation.probes import probe_scores
    from training.evaluation.scores import score_model

    config = study_config(config)
    loaded = load_corpus(corpus)
    same = str(synthetic) == str(corpus)
    synthetic_corpus = loaded if same else load_corpus(synthetic)
    model, tokenizer = load_checkpoint(checkpoint, synthetic)
    if config.device == "cuda":
        model = model.cuda()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    scores = score_model(model, loaded, config.evaluate, run_id)
    timings["scores"] = time.perf_counter() - start
    probes = probe_scores(model, synthetic_corpus, config.probes, run_id, timings)
    start = time.perf_counter()
    lm_eval = lm_eval_scores(model, tokenizer, data_dir, config.lm_eval.tasks, run_id)
    timings["lm_eval"] = time.perf_counter() - start
    return {"scores": scores, "probes": probes, "lm_eval": lm_eval}, timings


def write_language_evaluation(
    tables: dict[str, pd.DataFrame], timings: dict[str, float], paths: dict[str, str | Path]
) -> None:
    """Write each table of ``evaluate_language_run`` to ``paths[name]``; log to stderr
    the line of seconds per measure (read by bench/stage_times.py) and the tables."""
    for name, table in LANGUAGE_TABLES.items():
        write_table(tables[name], table, paths[name])
    print(", ".join(f"{k} {v:.2f} s" for k, v in timings.items()), file=sys.stderr)
    for table in tables.values():
        print(table.to_string(index=False), file=sys.stderr)


def score_regression_run(
    checkpoint: str | Path, config: StudyConfig | Mapping, run_id: str
) -> pd.DataFrame:
    """The scores table of one run of the in-context regression family.

    ``config`` is the resolved study config; the run's task is the registered one of
    its arm (``training.regression.task.family_config``). A checkpoint of another
    family's arm is an error naming it.
    """
    from preregistration.plan import load_plan
    from training.checkpoints import load_plain
    from training.regression.model import RegressionConfig, RegressionGPT
    from training.regression.scores import score_regression
    from training.regression.task import FAMILY, RegressionTask, family_config

    config = study_config(config)
    ckpt = load_plain(checkpoint, "checkpoint")
    arm = ckpt["spec"]["arm"]
    run_cfg = family_config(config, load_plan(config.plan), arm, config.plan)
    if not run_cfg.is_regression:
        raise SystemExit(
            f"{checkpoint}: arm {arm!r} is not of the {FAMILY} family; language runs are "
            "evaluated by evaluate_language_run"
        )
    model = RegressionGPT(RegressionConfig(**ckpt["gpt_config"]))
    model.load_state_dict(ckpt["model"])
    if config.device == "cuda":
        model = model.cuda()
    return score_regression(model, RegressionTask.from_config(run_cfg.regression), run_id)


def write_regression_scores(scores: pd.DataFrame, path: str | Path) -> None:
    """Write the scores of ``score_regression_run`` and log them to stderr."""
    write_table(scores, "scores", path)
    print(scores.to_string(index=False), file=sys.stderr)
