"""Memorization by likelihood, beside exact match, and a zero-shot skill control.

Exact-match recall (``training.evaluation.scores``) is all-or-nothing per fact; at the CPU
scale it sits near chance, where an accuracy difference is mostly noise. The
log-probability of the correct answer and its rank among the answers grade
partial knowledge (the likelihood view of memorization; Carlini et al. 2021 use
the same quantity for extraction). They are read on the same no-context probes:
BOS, key -> value (``CorpusGenerator.recall_probes``).

Control: a skill that needs neither context nor a memorized association, so that
a run's memorization is not confused with general competence. We use the
sequence grammar of the synthetic corpus: after BOS and an item the next token is
a label, after BOS and a key pair it is a value. ``format_accuracy`` is the share
of probes whose argmax over the whole vocabulary lies in the right answer family;
any label (value) counts, so no item-specific memory helps. Probes: queries of
held-out ICL mappings with no demonstrations (the item's label is unknowable, its
family is not) and the fact keys.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from training.data.corpus import CorpusGenerator


@torch.no_grad()
def _last_logits(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.eval()(inputs.to(device))[:, -1, :].double().cpu()  # (N, vocab)


def answer_log_likelihood(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, answers: np.ndarray
) -> pd.DataFrame:
    """Log-probability and rank of each probe's correct answer.

    With z the last-position logits and A the answer family (e.g. the values),
    log p_A(y) = z_y - log sum_{a in A} exp(z_a) (the distribution renormalized over
    the answers, as exact match reads the argmax over A), log p(y) = z_y -
    log sum_v exp(z_v) over the whole vocabulary, and rank(y) = 1 + #{a in A :
    z_a > z_y} (1 = the model's answer; ties count in the target's favour).

    Returns
    -------
    DataFrame
        One row per probe: ``target`` (token id), ``logprob`` (log p_A(y), nats),
        ``logprob_vocab`` (log p(y), nats), ``rank`` (1..|A|), ``correct`` (rank == 1).
    """
    answer_ids = torch.as_tensor(np.asarray(answers))
    targets = torch.as_tensor(targets)
    missing = ~torch.isin(targets, answer_ids)
    if missing.any():
        raise ValueError(
            f"target token {int(targets[missing][0])} (probe {int(missing.nonzero()[0])}) is not "
            f"in the answer family of {len(answer_ids)} tokens"
        )
    logits = _last_logits(model, inputs)
    z_target = logits.gather(1, targets[:, None].long())[:, 0]
    family = logits[:, answer_ids]
    return pd.DataFrame(
        {
            "target": targets.numpy(),
            "logprob": (z_target - family.logsumexp(dim=1)).numpy(),
            "logprob_vocab": (z_target - logits.logsumexp(dim=1)).numpy(),
            "rank": (1 + (family > z_target[:, None]).sum(dim=1)).numpy(),
            "correct": ((family > z_target[:, None]).sum(dim=1) == 0).numpy(),
        }
    )


def recall_likelihood(model: torch.nn.Module, gen: CorpusGenerator, family: str) -> dict:
    """Likelihood recall on every no-context probe of ``family`` ("facts" or "in_weights").

    Returns
    -------
    dict
        ``logprob``: mean log p_A(y) (nats; chance -log|A|); ``rank``: mean rank (chance
        (|A| + 1)/2); ``accuracy``: share of rank 1; ``chance_logprob``, ``chance_rank``;
        ``n_items``: number of probes; ``n_answers``: |A|.
    """
    answers = gen.vocab.ids("values" if family == "facts" else "labels")
    inputs, targets = gen.recall_probes(family)
    table = answer_log_likelihood(model, inputs, targets, answers)
    return {
        "logprob": float(table.logprob.mean()),
        "rank": float(table["rank"].mean()),
        "accuracy": float(table.correct.mean()),
        "chance_logprob": -math.log(len(answers)),
        "chance_rank": (len(answers) + 1) / 2,
        "n_items": len(table),
        "n_answers": len(answers),
    }


def format_accuracy(model: torch.nn.Module, inputs: torch.Tensor, family: np.ndarray) -> float:
    """Share of probes whose argmax over the whole vocabulary is a token of ``family``."""
    pred = _last_logits(model, inputs).argmax(dim=1)
    return float(torch.isin(pred, torch.as_tensor(np.asarray(family))).double().mean())


def zero_shot_format(model: torch.nn.Module, gen: CorpusGenerator, n: int, seed: int) -> dict:
    """The zero-shot skill control: format accuracy on ``n`` held-out ICL queries without
    demonstrations (BOS, item -> a label) and on every fact key (BOS, key pair -> a value).

    Returns
    -------
    dict
        ``accuracy``: pooled share of probes answered in the right family;
        ``icl_query``, ``fact_key``: the two parts; ``chance``: the pooled share a
        uniform predictor attains, sum_probes |family| / vocab / n_probes;
        ``n_items``: probes in all.
    """
    labels, values = gen.vocab.ids("labels"), gen.vocab.ids("values")
    queries, _ = gen.icl_episodes(0, n, seed)
    keys, _ = gen.recall_probes("facts")
    icl_part = format_accuracy(model, queries, labels)
    fact_part = format_accuracy(model, keys, values)
    n_items = len(queries) + len(keys)
    size = gen.vocab.size
    return {
        "accuracy": (icl_part * len(queries) + fact_part * len(keys)) / n_items,
        "icl_query": icl_part,
        "fact_key": fact_part,
        "chance": (len(queries) * len(labels) + len(keys) * len(values)) / size / n_items,
        "n_items": n_items,
    }
