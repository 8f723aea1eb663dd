"""The data config of a tiny synthetic corpus, shared by the probe tests (a few items of
every family, so tests build corpora and episodes in milliseconds)."""

from __future__ import annotations

TINY_DATA = {
    "seed": 5,
    "n_labels": 4,
    "icl_items": 12,
    "iw_items": 10,
    "n_facts": 20,
    "fact_keys": 6,
    "n_values": 5,
    "copy_vocab": 6,
    "copy_len": 5,
    "n_way": 2,
    "zipf_exponent": 1.0,
    "mixture": {"icl": 1, "in_weights": 1, "facts": 1, "copy": 1},
    "heldout_mapping_modulus": 2,
}
