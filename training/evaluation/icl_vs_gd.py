"""In-context learning against gradient descent on the same demonstrations (seed 004).

Shen, Mishra & Khashabi (2023), "Do pretrained Transformers learn in-context by
gradient descent?", compare ICL with fine-tuning on the demonstrations by
(i) order sensitivity: the standard deviation of the output probabilities over
random orders of the demonstrations, and (ii) the overlap of the output
distributions: top-token overlap and cosine similarity. Here, on held-out ICL
episodes (BOS, k (item, label) pairs, query):

- ICL: the model's label distribution after the prompt;
- fine-tuning: a copy of the model trained on the k pairs *without context*, each
  pair a sequence (BOS, item) -> label, for ``steps`` steps, then asked (BOS, query).
  ``gd``: full-batch gradient descent (order-free by construction); ``adam``:
  full-batch Adam (Kingma & Ba 2015); ``sgd``: one pair per step in the
  demonstrations' order, cycling, the fine-tuning counterpart whose order
  sensitivity Shen et al. set beside ICL's.

Distributions are over the label family (softmax of the label logits), the
answers the ICL accuracy reads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from training.data.corpus import CorpusGenerator
from training.model import GPT

Predictor = Callable[[torch.Tensor, int], np.ndarray]  # (demos (k, 2), query) -> probabilities


def order_spread(probs: np.ndarray) -> np.ndarray:
    """Order sensitivity of each episode from its predictions under n_orders orders.

    S_e = mean_y std_o p_{e,o}(y) for ``probs`` (E, n_orders, n_labels), std with
    divisor n_orders - 1 (Shen et al. 2023, Fig. 4: the std over 10 orders, averaged
    over the output). Returns (E,).
    """
    if probs.ndim != 3 or probs.shape[1] < 2:
        raise ValueError(
            f"probs must be (episodes, orders >= 2, outputs) to measure a spread, got {probs.shape}"
        )
    return probs.std(axis=1, ddof=1).mean(axis=-1)


def order_sensitivity(
    predict: Predictor, demos: torch.Tensor, query: int, n_orders: int, rng: np.random.Generator
) -> float:
    """``order_spread`` of one predictor on one episode over ``n_orders`` random orders
    of ``demos`` (k, 2) drawn from ``rng``: 0 for a predictor that ignores the order."""
    probs = np.stack([predict(demos[rng.permutation(len(demos))], query) for _ in range(n_orders)])
    return float(order_spread(probs[None])[0])


def top_overlap(p: np.ndarray, q: np.ndarray, top_k: int) -> float:
    """|top_k(p) & top_k(q)| / top_k, the top-token overlap of Shen et al. (2023); in [0, 1]."""
    if not 1 <= top_k <= len(p):
        raise ValueError(f"top_k must be in 1..{len(p)}, got {top_k}")
    top = lambda r: set(np.argsort(-r, kind="stable")[:top_k].tolist())  # noqa: E731
    return len(top(p) & top(q)) / top_k


def cosine(p: np.ndarray, q: np.ndarray) -> float:
    """p . q / (|p| |q|), the overlap cosine similarity of Shen et al. (2023)."""
    return float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))


@torch.no_grad()
def label_probs(model: GPT, prompts: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """softmax over the label logits at the last position of each prompt, (N, n_labels)
    for ``prompts`` (N, T)."""
    logits = model.eval()(prompts.to(next(model.parameters()).device))[:, -1].double().cpu()
    return logits[:, torch.as_tensor(labels)].softmax(dim=-1).numpy()


def icl_prompts(demos: torch.Tensor, queries: torch.Tensor, bos: int) -> torch.Tensor:
    """BOS, item_1, label_1, ..., item_k, label_k, query for ``demos`` (N, k, 2) and
    ``queries`` (N,): (N, 2k + 2)."""
    N = len(demos)
    return torch.cat([torch.full((N, 1), bos), demos.reshape(N, -1), queries[:, None]], dim=1)


def finetune_copies(
    model: GPT, pairs: torch.Tensor, bos: int, optimizer: str, steps: int, lr: float
) -> dict[str, torch.Tensor]:
    """Fine-tune C independent copies of ``model``, copy c on its pairs ``pairs[c]`` (k, 2).

    The copies train at once (``torch.func.vmap``); ``model`` itself is not changed.
    Loss of a pair (item, label): cross-entropy of the label at (BOS, item) over the
    vocabulary, no context. ``gd``: w <- w - lr mean-over-pairs gradient (full batch);
    ``sgd``: w <- w - lr grad of the pair pairs[c, t mod k] at step t, so the order of
    ``pairs[c]`` matters; ``adam``: full batch, Adam (Kingma & Ba 2015, Algorithm 1,
    beta1 0.9, beta2 0.999, eps 1e-8, bias-corrected, no weight decay).

    Returns
    -------
    dict
        Parameter name -> the C fine-tuned values stacked, (C, *shape).
    """
    if optimizer not in ("gd", "sgd", "adam"):
        raise ValueError(f"unknown fine-tuning optimizer {optimizer!r}; use gd, sgd or adam")
    C, k, _ = pairs.shape
    pairs = pairs.to(next(model.parameters()).device)
    inputs = torch.stack([torch.full_like(pairs[..., 0], bos), pairs[..., 0]], dim=-1)  # (C, k, 2)
    labels = pairs[..., 1]  # (C, k)
    params = {n: p.detach().expand(C, *p.shape).clone() for n, p in model.named_parameters()}

    def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,))[:, -1], y)

    per_copy_grad = vmap(grad(loss))
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    with sdpa_kernel(SDPBackend.MATH):  # the math kernel has vmap batching rules
        for t in range(steps):
            rows = slice(t % k, t % k + 1) if optimizer == "sgd" else slice(None)
            g = per_copy_grad(params, inputs[:, rows], labels[:, rows])
            for n in params:
                if optimizer == "adam":
                    m[n] = beta1 * m[n] + (1 - beta1) * g[n]
                    v[n] = beta2 * v[n] + (1 - beta2) * g[n] ** 2
                    m_hat, v_hat = m[n] / (1 - beta1 ** (t + 1)), v[n] / (1 - beta2 ** (t + 1))
                    params[n] = params[n] - lr * m_hat / (v_hat.sqrt() + eps)
                else:
                    params[n] = params[n] - lr * g[n]
    return params


@torch.no_grad()
def copies_label_probs(
    model: GPT, params: dict[str, torch.Tensor], queries: torch.Tensor, bos: int, labels: np.ndarray
) -> np.ndarray:
    """Label distribution of fine-tuned copy c at (BOS, queries[c]), (C, n_labels)."""
    queries = queries.to(next(model.parameters()).device)
    prompts = torch.stack([torch.full_like(queries, bos), queries], dim=1)[:, None]  # (C, 1, 2)
    with sdpa_kernel(SDPBackend.MATH):
        logits = vmap(lambda p, x: functional_call(model, p, (x,)))(params, prompts)
    logits = logits[:, 0, -1].double().cpu()  # (C, vocab)
    return logits[:, torch.as_tensor(labels)].softmax(dim=-1).numpy()


def icl_vs_gd(
    model: GPT,
    gen: CorpusGenerator,
    shots: int,
    n_episodes: int,
    n_orders: int,
    steps: int,
    lr_gd: float,
    lr_adam: float,
    seed: int,
    top_k: int = 3,
) -> pd.DataFrame:
    """ICL against fine-tuning on the demonstrations of ``n_episodes`` held-out episodes.

    Parameters
    ----------
    shots : int
        k demonstrations per episode (at least 2, for orders to differ).
    n_orders : int
        Random orders per episode for the order sensitivity (Shen et al. use 10).
    steps, lr_gd, lr_adam : int, float, float
        Fine-tuning steps and learning rates, registered by the caller; ``lr_gd`` serves
        both full-batch GD and one-pair SGD.
    top_k : int
        Labels compared by the top-token overlap.

    Returns
    -------
    DataFrame
        One row per measure, the mean over episodes: ``measure``, ``value``,
        ``n_items`` (episodes). Measures: ``order_std_icl``, ``order_std_sgd``
        (order sensitivity, probability units); ``overlap_top_{gd,adam,icl}`` and
        ``overlap_cos_{gd,adam,icl}`` between the ICL distribution in the drawn order
        and GD / Adam fine-tuning / ICL in another random order (the reference);
        ``accuracy_{icl,gd,adam}``: share of episodes whose argmax label is the
        query's label.
    """
    if shots < 2:
        raise ValueError(
            f"shots must be at least 2 for demonstration orders to differ, got {shots}"
        )
    labels, bos = gen.vocab.ids("labels"), gen.vocab.bos
    inputs, targets = gen.icl_episodes(shots, n_episodes, seed)
    demos = inputs[:, 1:-1].reshape(n_episodes, shots, 2)
    queries = inputs[:, -1]
    # The same random orders for ICL and SGD: episode i's o-th order is orders[i, o].
    rng = np.random.default_rng(seed)
    orders = np.stack([[rng.permutation(shots) for _ in range(n_orders)] for _ in demos])
    ordered = torch.stack([demos[i][orders[i]] for i in range(n_episodes)])  # (E, O, k, 2)
    prompts = icl_prompts(ordered.flatten(0, 1), queries.repeat_interleave(n_orders), bos)
    icl = label_probs(model, prompts, labels).reshape(n_episodes, n_orders, -1)  # (E, O, labels)
    p_icl = label_probs(model, icl_prompts(demos, queries, bos), labels)  # the drawn order
    sgd_params = finetune_copies(model, ordered.flatten(0, 1), bos, "sgd", steps, lr_gd)
    sgd = copies_label_probs(model, sgd_params, queries.repeat_interleave(n_orders), bos, labels)
    sgd = sgd.reshape(n_episodes, n_orders, -1)
    p_gd = copies_label_probs(
        model, finetune_copies(model, demos, bos, "gd", steps, lr_gd), queries, bos, labels
    )
    p_adam = copies_label_probs(
        model, finetune_copies(model, demos, bos, "adam", steps, lr_adam), queries, bos, labels
    )
    answer = np.array([int(np.flatnonzero(labels == int(y))[0]) for y in targets])
    measures = {
        "order_std_icl": order_spread(icl),
        "order_std_sgd": order_spread(sgd),
    }
    # reference: ICL in another order (the first random one) against the drawn order
    for name, p in (("gd", p_gd), ("adam", p_adam), ("icl", icl[:, 0])):
        measures[f"overlap_top_{name}"] = np.array(
            [top_overlap(a, b, top_k) for a, b in zip(p_icl, p, strict=True)]
        )
        measures[f"overlap_cos_{name}"] = np.array(
            [cosine(a, b) for a, b in zip(p_icl, p, strict=True)]
        )
    for name, p in (("icl", p_icl), ("gd", p_gd), ("adam", p_adam)):
        measures[f"accuracy_{name}"] = (p.argmax(axis=1) == answer).astype(float)
    return pd.DataFrame(
        {
            "measure": list(measures),
            "value": [float(np.mean(x)) for x in measures.values()],
            "n_items": n_episodes,
        }
    )
