"""A deterministic synthetic corpus that separates in-context from in-weights skill.

Every sequence starts with BOS and is one of four kinds (mixture proportions in
the config):

- ``icl``: a bursty episode (Chan et al. 2022). ``n_way`` items get labels drawn
  anew for this sequence; (item, label) pairs repeat, so a label is predictable
  only from an earlier pair of the same sequence: only the context can solve it.
- ``in_weights``: (item, label) pairs under one fixed mapping shared by every
  sequence; learnable only in the weights.
- ``facts``: (key, key, value) triples under fixed facts; a key is an ordered pair
  of key tokens, so many facts fit in a small vocabulary.
- ``copy``: a random segment of 4..``copy_len`` tokens, repeated (induction/copy).
  The segment length varies, so only a content-matching (induction) mechanism,
  not a fixed positional offset, predicts the repeats.

Items and keys are drawn Zipf-distributed (``zipf_exponent``), so that rare items are
learned late and memorization is graded rather than all-or-nothing.

Held out: an ICL mapping belongs to the evaluation split when its hash modulo
``heldout_mapping_modulus`` is 0; training and validation sequences never use such
a mapping, evaluation episodes use only such mappings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from training.config import DataConfig, block_config

KINDS = ("icl", "in_weights", "facts", "copy")


@dataclass(frozen=True)
class Vocab:
    """Token-id layout of a corpus's ``DataConfig``: BOS, then one contiguous range per
    token family (labels, ICL items, in-weights items, fact keys, values, copy tokens)."""

    data: DataConfig

    @property
    def bos(self) -> int:
        return 0

    def _sizes(self) -> dict[str, int]:
        d = self.data
        return {
            "labels": d.n_labels,
            "icl": d.icl_items,
            "iw": d.iw_items,
            "keys": d.fact_keys,
            "values": d.n_values,
            "copy": d.copy_vocab,
        }

    def _start(self, family: str) -> int:
        start = 1  # after BOS, the families in their order
        for name, size in self._sizes().items():
            if name == family:
                return start
            start += size
        raise KeyError(f"no token family {family!r}")

    def ids(self, family: str) -> np.ndarray:
        return np.arange(self._start(family), self._start(family) + self._sizes()[family])

    @property
    def size(self) -> int:
        return self._start("copy") + self.data.copy_vocab


def vocab_from_config(data_cfg: DataConfig | Mapping) -> Vocab:
    return Vocab(block_config(DataConfig, data_cfg))


def zipf_probs(n: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def mapping_hash(items: np.ndarray, labels: np.ndarray, base: int) -> int:
    """Order-free integer hash of an item->label mapping (decides the held-out split)."""
    codes = sorted((items.astype(np.int64) * base + labels.astype(np.int64)).tolist())
    h = 0
    for code in codes:
        h = (h * 1_000_003 + code) % 2_147_483_647
    return h


class CorpusGenerator:
    """Draws sequences of every kind from one seed; the fixed mappings come from ``data.seed``."""

    def __init__(self, data_cfg: DataConfig | Mapping, seq_len: int):
        self.cfg = data_cfg = block_config(DataConfig, data_cfg)
        self.seq_len = seq_len  # tokens per stored sequence (block_size + 1)
        self.vocab = vocab_from_config(data_cfg)
        fixed = np.random.default_rng(data_cfg.seed)
        v = self.vocab
        self.iw_label = fixed.choice(v.ids("labels"), size=data_cfg.iw_items)  # item -> label
        n_keys = data_cfg.fact_keys
        key_codes = fixed.choice(n_keys**2, size=data_cfg.n_facts, replace=False)
        self.fact_key = np.stack([key_codes // n_keys, key_codes % n_keys], axis=1)
        self.fact_key += v.ids("keys")[0]  # (n_facts, 2) token ids of each fact's key
        self.fact_value = fixed.choice(v.ids("values"), size=data_cfg.n_facts)  # key -> value
        self.iw_probs = zipf_probs(data_cfg.iw_items, data_cfg.zipf_exponent)
        self.fact_probs = zipf_probs(data_cfg.n_facts, data_cfg.zipf_exponent)
        self.modulus = int(data_cfg.heldout_mapping_modulus)
        self.icl_ids, self.label_ids = v.ids("icl"), v.ids("labels")  # drawn from per mapping

    # -- one sequence of each kind ------------------------------------------------
    def icl_mapping(self, rng: np.random.Generator, heldout: bool) -> tuple[np.ndarray, np.ndarray]:
        n_way, size = self.cfg.n_way, self.vocab.size
        while True:
            items = rng.choice(self.icl_ids, size=n_way, replace=False)
            labels = rng.choice(self.label_ids, size=n_way, replace=False)
            in_heldout = mapping_hash(items, labels, size) % self.modulus == 0
            if in_heldout == heldout:
                return items, labels

    def icl_sequence(self, rng: np.random.Generator) -> np.ndarray:
        items, labels = self.icl_mapping(rng, heldout=False)
        which = rng.integers(0, len(items), size=self.n_pairs)
        return self._pairs(items[which], labels[which])

    def in_weights_sequence(self, rng: np.random.Generator) -> np.ndarray:
        which = rng.choice(self.cfg.iw_items, size=self.n_pairs, p=self.iw_probs)
        return self._pairs(self.vocab.ids("iw")[which], self.iw_label[which])

    def facts_sequence(self, rng: np.random.Generator) -> np.ndarray:
        which = rng.choice(self.cfg.n_facts, size=(self.seq_len - 1) // 3, p=self.fact_probs)
        triples = np.concatenate([self.fact_key[which], self.fact_value[which, None]], axis=1)
        return self._pad(np.concatenate([[self.vocab.bos], triples.reshape(-1)]))

    def copy_sequence(self, rng: np.random.Generator) -> np.ndarray:
        return self.copy_with_length(rng)[0]

    def copy_with_length(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A copy sequence and its segment length."""
        length = int(rng.integers(4, self.cfg.copy_len + 1))
        segment = rng.choice(self.vocab.ids("copy"), size=length)
        return np.concatenate([[self.vocab.bos], np.resize(segment, self.seq_len - 1)]), length

    @property
    def n_pairs(self) -> int:
        return (self.seq_len - 1) // 2

    def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        body = np.stack([first, second], axis=1).reshape(-1)
        return self._pad(np.concatenate([[self.vocab.bos], body]))

    def _pad(self, seq: np.ndarray) -> np.ndarray:
        return np.pad(seq, (0, self.seq_len - len(seq)), constant_values=self.vocab.bos)

    # -- whole splits ---------------------------------------------------------------
    def sequences(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` mixed sequences (n, seq_len) and their kind index (n,), from ``seed``."""
        rng = np.random.default_rng(seed)
        mixture = self.cfg.mixture
        probs = np.array([mixture[k] for k in KINDS], dtype=float)
        kinds = rng.choice(len(KINDS), size=n, p=probs / probs.sum())
        makers = [
            self.icl_sequence,
            self.in_weights_sequence,
            self.facts_sequence,
            self.copy_sequence,
        ]
        rows = [makers[k](rng) for k in kinds]
        return torch.tensor(np.stack(rows), dtype=torch.long), torch.tensor(kinds)

    def icl_episodes(self, shots: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out k-shot episodes: BOS, k demonstration pairs, query item; and the query's label.

        Every mapping is from the held-out split. The k demonstrations are drawn
        uniformly from the episode's ``n_way`` items, as in training, so the query
        item is shown with probability 1 - (1 - 1/n_way)^k and the Bayes-optimal
        accuracy rises with k; for k = 0 every model is at chance.
        """
        rng = np.random.default_rng(seed)
        inputs, targets = [], []
        for _ in range(n):
            items, labels = self.icl_mapping(rng, heldout=True)
            query = rng.integers(len(items))
            which = rng.integers(0, len(items), size=shots)
            body = np.stack([items[which], labels[which]], axis=1).reshape(-1)
            inputs.append(np.concatenate([[self.vocab.bos], body, [items[query]]]))
            targets.append(labels[query])
        return torch.tensor(np.stack(inputs)), torch.tensor(targets)

    def recall_probes(self, family: str) -> tuple[torch.Tensor, torch.Tensor]:
        """No-context probes BOS, item (or key pair) -> its fixed label (or value), one per item."""
        if family == "in_weights":
            keys, answers = self.vocab.ids("iw")[:, None], self.iw_label
        elif family == "facts":
            keys, answers = self.fact_key, self.fact_value
        else:
            raise ValueError(f"unknown recall family {family!r}")
        bos = np.full((len(keys), 1), self.vocab.bos)
        return torch.tensor(np.concatenate([bos, keys], axis=1)), torch.tensor(answers)


def build_corpus(data_cfg: DataConfig | Mapping, block_size: int) -> dict:
    """The stored corpus: train and validation splits plus the vocabulary layout."""
    data_cfg = block_config(DataConfig, data_cfg)
    gen = CorpusGenerator(data_cfg, seq_len=block_size + 1)
    seed = int(data_cfg.seed)
    train, train_kind = gen.sequences(int(data_cfg.n_train_sequences), seed + 1)
    val, val_kind = gen.sequences(int(data_cfg.n_val_sequences), seed + 2)
    return {
        "train": train.to(torch.int16),
        "train_kind": train_kind.to(torch.int8),
        "val": val.to(torch.int16),
        "val_kind": val_kind.to(torch.int8),
        "vocab_size": gen.vocab.size,
        "data_cfg": dataclasses.asdict(data_cfg),
        "block_size": block_size,
    }
