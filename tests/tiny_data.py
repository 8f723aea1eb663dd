"""The data config of a tiny synthetic corpus, shared by the probe tests (a few items of
every family, so tests build corpora and episodes in milliseconds): a whole ``data`` block
of the config schema (training.config.DataConfig)."""

from __future__ import annotations

from pathlib import Path

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
    "n_train_sequences": 64,
    "n_val_sequences": 8,
    "heldout_mapping_modulus": 2,
}


def smoke_config_with(**blocks: dict) -> dict:
    """The smoke config (config/smoke.yaml) with the given blocks replaced: a whole config
    (training.config.StudyConfig) for tests that train a tiny model."""
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/smoke.yaml").read_text())
    return config | blocks
