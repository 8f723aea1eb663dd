"""The end-of-run probes of one trained model, as rows of the scores table.

``probe_scores`` runs every probe of ``training.evaluation.curvature``,
``training.evaluation.heads``, ``training.evaluation.icl_vs_gd`` and
``training.evaluation.memorization`` on fixed inputs (the same for every run of a
study: they derive from the corpus' data seed, never from the run) and returns them
in the long format of the scores table (``preregistration.tables`` SCORES: run_id,
measure, shots, value, chance, n_items), so they can be appended to a run's
``scores.parquet``.

Measures (``shots`` is -1 unless stated; ``chance`` NaN where no skill-free value
exists):

=============================  ==============================================  =====================
measure                        value                                           chance
=============================  ==============================================  =====================
hessian_top_eigenvalue         dominant Hessian eigenvalue of the probe-batch   NaN
                               loss (nats/token per unit^2)
sam_sharpness                  L(w + rho g/|g|) - L(w), nats/token              NaN
fisher_trace                   Tr of the empirical Fisher, per-sequence         NaN
                               gradients (sequence = mean token loss)
induction_head_score           max prefix-matching score over heads             uniform causal head
induction_head_copying         copying score of that head (nats)                0
prefix_matching_l{L}_h{H}      prefix-matching score of each head               uniform causal head
copying_l{L}_h{H}              copying score of each head (nats)                0
order_std_icl, order_std_sgd   order sensitivity (shots = k)                    NaN
overlap_top_{gd,adam,icl}      top-k label overlap with ICL (shots = k)         top_k / n_labels
overlap_cos_{gd,adam,icl}      cosine with the ICL distribution (shots = k)     NaN
accuracy_{icl,gd,adam}         share correct on those episodes (shots = k)      1 / n_labels
fact_logprob                   mean log p(correct value | key), values family   -log n_values
fact_rank                      mean rank of the correct value (1 = best)        (n_values + 1) / 2
in_weights_logprob, _rank      the same for the in-weights item -> label map    -log / (n+1)/2
format_accuracy                zero-shot control: answer in the right family    uniform predictor
                               (pooled over the two parts below)
format_accuracy_icl            its part on held-out ICL queries, no demos       n_labels / vocab
format_accuracy_facts          its part on the fact keys (any value counts)     n_values / vocab
=============================  ==============================================  =====================

``probe_cfg`` (``training.config.ProbesConfig``, config ``probes``): ``probe_batch``
(validation sequences for the curvature probes), ``hessian_iters``, ``hessian_tol``,
``sam_rho``, ``head_sequences`` (repeated random sequences), ``segment_len`` (their L;
drawn from the copy family), ``icl_shots``, ``icl_episodes``, ``icl_orders``,
``finetune_steps``, ``lr_gd``, ``lr_adam``, ``top_k``, ``format_queries``. The values
measured in the report of this module: probe_batch 64, hessian_iters 20, hessian_tol
1e-3, sam_rho 0.05, head_sequences 64, segment_len 12, icl_shots 8, icl_episodes 16,
icl_orders 10, finetune_steps 10, lr_gd 0.1, lr_adam 1e-3, top_k 3, format_queries 400.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from training.config import ProbesConfig, block_config
from training.data.corpus import CorpusGenerator
from training.evaluation.curvature import fisher_trace, hessian_top_eigenvalue, sam_sharpness
from training.evaluation.heads import head_scores, induction_head_score, repeated_random_sequences
from training.evaluation.icl_vs_gd import icl_vs_gd
from training.evaluation.memorization import recall_likelihood, zero_shot_format
from training.model import GPT, lm_loss

PROBE_SEED_OFFSET = 11  # probe draws come from data.seed + this: distinct from training (1, 2)
# and from training.evaluation.scores's draws (7)


def uniform_prefix_matching(segment_len: int) -> float:
    """Prefix-matching score of a head attending uniformly to positions 0..t, on BOS, x, x:
    mean over t = L+1..2L of 1/(t+1)."""
    return float(np.mean([1 / (t + 1) for t in range(segment_len + 1, 2 * segment_len + 1)]))


@contextmanager
def _timed(timings: dict | None, name: str):
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[name] = time.perf_counter() - start


def curvature_rows(
    model: GPT, corpus: dict, cfg: ProbesConfig, seed: int, timings: dict | None = None
) -> list[tuple]:
    """Hessian top eigenvalue, SAM sharpness, Fisher trace on the first ``probe_batch``
    validation sequences (the mean next-token loss, nats/token)."""
    device = next(model.parameters()).device
    batch = corpus["val"][: cfg.probe_batch].long().to(device)
    params = [p for p in model.parameters() if p.requires_grad]

    def loss() -> torch.Tensor:
        return lm_loss(model(batch[:, :-1]), batch[:, 1:])

    def example_loss(i: int) -> torch.Tensor:
        return lm_loss(model(batch[i : i + 1, :-1]), batch[i : i + 1, 1:])

    with _timed(timings, "hessian"):
        top = hessian_top_eigenvalue(
            loss,
            params,
            n_iter=cfg.hessian_iters,
            rel_tol=cfg.hessian_tol,
            generator=torch.Generator().manual_seed(seed),
        )
    with _timed(timings, "sam"):
        sam = sam_sharpness(loss, params, rho=cfg.sam_rho)
    with _timed(timings, "fisher"):
        fisher = fisher_trace(example_loss, len(batch), params)
    n, nan = len(batch), float("nan")
    return [
        ("hessian_top_eigenvalue", -1, top["eigenvalue"], nan, n),
        ("sam_sharpness", -1, sam["sharpness"], nan, n),
        ("fisher_trace", -1, fisher["trace"], nan, n),
    ]


def head_rows(model: GPT, gen: CorpusGenerator, cfg: ProbesConfig, seed: int) -> list[tuple]:
    """Induction-head score and per-head prefix-matching and copying scores."""
    L, n = cfg.segment_len, cfg.head_sequences
    tokens = repeated_random_sequences(n, L, gen.vocab.ids("copy"), gen.vocab.bos, seed)
    scores = head_scores(model, tokens)
    best = induction_head_score(scores)
    uniform = uniform_prefix_matching(L)
    rows = [
        ("induction_head_score", -1, best["prefix_matching_max"], uniform, n),
        ("induction_head_copying", -1, best["copying_of_that_head"], 0.0, n),
    ]
    for r in scores.itertuples():
        chance = uniform if r.measure == "prefix_matching" else 0.0
        rows.append((f"{r.measure}_l{r.layer}_h{r.head}", -1, r.value, chance, n))
    return rows


def icl_vs_gd_rows(model: GPT, gen: CorpusGenerator, cfg: ProbesConfig, seed: int) -> list[tuple]:
    k, top_k, n_labels = cfg.icl_shots, cfg.top_k, gen.cfg.n_labels
    table = icl_vs_gd(
        model,
        gen,
        shots=k,
        n_episodes=cfg.icl_episodes,
        n_orders=cfg.icl_orders,
        steps=cfg.finetune_steps,
        lr_gd=cfg.lr_gd,
        lr_adam=cfg.lr_adam,
        seed=seed,
        top_k=top_k,
    )
    chance = {"overlap_top": top_k / n_labels, "accuracy": 1 / n_labels}
    return [
        (r.measure, k, r.value, chance.get(r.measure.rsplit("_", 1)[0], float("nan")), r.n_items)
        for r in table.itertuples()
    ]


def memorization_rows(
    model: GPT, gen: CorpusGenerator, cfg: ProbesConfig, seed: int
) -> list[tuple]:
    rows = []
    for family, name in (("facts", "fact"), ("in_weights", "in_weights")):
        out = recall_likelihood(model, gen, family)
        rows.append((f"{name}_logprob", -1, out["logprob"], out["chance_logprob"], out["n_items"]))
        rows.append((f"{name}_rank", -1, out["rank"], out["chance_rank"], out["n_items"]))
    control = zero_shot_format(model, gen, cfg.format_queries, seed)
    n_queries, n_keys, size = cfg.format_queries, gen.cfg.n_facts, gen.vocab.size
    rows.append(("format_accuracy", -1, control["accuracy"], control["chance"], control["n_items"]))
    rows.append(
        ("format_accuracy_icl", -1, control["icl_query"], gen.cfg.n_labels / size, n_queries)
    )
    rows.append(("format_accuracy_facts", -1, control["fact_key"], gen.cfg.n_values / size, n_keys))
    return rows


def probe_scores(
    model: GPT,
    corpus: dict,
    probe_cfg: ProbesConfig | Mapping,
    run_id: str,
    timings: dict | None = None,
) -> pd.DataFrame:
    """Every end-of-run probe of ``model`` in the scores table's long format.

    Parameters
    ----------
    model : GPT
        The trained model (left unchanged, in eval mode).
    corpus : dict
        The stored corpus (``training.data.corpus.build_corpus``).
    probe_cfg : ProbesConfig or mapping
        The probes' settings (config ``probes``; a mapping is checked against the schema).
    run_id : str
    timings : dict, optional
        Filled with the wall seconds of each probe (hessian, sam, fisher, heads,
        icl_vs_gd, memorization).

    Returns
    -------
    DataFrame
        Columns run_id, measure, shots, value, chance, n_items (``preregistration.tables``
        SCORES); one row per measure of the module docstring's table.
    """
    probe_cfg = block_config(ProbesConfig, probe_cfg, "probe config")
    model.eval()
    gen = CorpusGenerator(corpus["data_cfg"], seq_len=corpus["block_size"] + 1)
    seed = int(corpus["data_cfg"]["seed"]) + PROBE_SEED_OFFSET
    rows: list[tuple] = []
    rows += curvature_rows(model, corpus, probe_cfg, seed, timings)
    with _timed(timings, "heads"):
        rows += head_rows(model, gen, probe_cfg, seed + 1)
    with _timed(timings, "icl_vs_gd"):
        rows += icl_vs_gd_rows(model, gen, probe_cfg, seed + 2)
    with _timed(timings, "memorization"):
        rows += memorization_rows(model, gen, probe_cfg, seed + 3)
    model.eval()
    df = pd.DataFrame(rows, columns=["measure", "shots", "value", "chance", "n_items"])
    df["shots"] = df["shots"].astype("int64")
    df["n_items"] = df["n_items"].astype("int64")
    df.insert(0, "run_id", run_id)
    return df
