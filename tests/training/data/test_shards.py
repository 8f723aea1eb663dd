"""The text corpus: a generated text goes through the BPE tokenizer into the shards and back
exactly, the synthetic suites are mixed in at the configured fraction, and the trainer
reads the memory-mapped rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tokenizers import Tokenizer

from preregistration.design import expand_design
from preregistration.plan import load_plan
from training.data.corpus import CorpusGenerator
from training.data.shards import EOT, build_shards, load_corpus
from training.train import train_run

REPO = Path(__file__).resolve().parents[3]
WORDS = (
    "the a noise gradient step model learns context weights loss batch small large late "
    "early preconditioned adam sum of squares où naïve café 語 🙂"
).split()


def generated_text(seed: int, n_lines: int) -> str:
    """Sentences of a small vocabulary (with non-ASCII words), one per line, from ``seed``."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_lines):
        words = rng.choice(WORDS, size=int(rng.integers(3, 12)))
        lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?"]) + "\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def text_config(tmp_path_factory) -> tuple[dict, Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("text")
    texts: dict[str, list[str]] = {"train": [], "val": []}
    for split, n_files, seed in (("train", 3, 1), ("val", 1, 2)):
        (root / split).mkdir()
        for i in range(n_files):
            text = generated_text(seed * 10 + i, 300)
            (root / split / f"doc{i}.txt").write_text(text, encoding="utf-8")
            texts[split].append(text)
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    cfg["text"] = {
        "train": [str(root / "train" / "*.txt")],
        "val": [str(root / "val" / "*.txt")],
        "vocab_size": 400,
        "min_frequency": 2,
        "synthetic_fraction": 0.25,
    }
    out = root / "shards"
    build_shards(cfg, out)
    return cfg, out, texts


def split_rows(out: Path, split: str) -> tuple[dict, np.ndarray]:
    header = json.loads((out / "corpus.json").read_text())
    rows = np.fromfile(out / f"{split}.bin", dtype=header["dtype"])
    return header, rows.reshape(-1, header["block_size"] + 1)


@pytest.mark.parametrize("split", ["train", "val"])
def test_text_round_trips_through_tokenizer_and_shards(text_config, split):
    cfg, out, texts = text_config
    header, rows = split_rows(out, split)
    offset = header["text_offset"]
    is_text = rows.min(axis=1) >= offset
    # A row is all text ids or all synthetic ids: the two id ranges never mix in a row.
    assert np.all(is_text | (rows.max(axis=1) < offset))
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = (rows[is_text].reshape(-1) - offset).tolist()
    decoded = tokenizer.decode(ids, skip_special_tokens=False)
    stream = "".join(t + EOT for t in texts[split])  # files in sorted order, EOT after each
    assert len(decoded) > 0.9 * len(stream)
    assert decoded == stream[: len(decoded)]
    # Only the last partial row of the stream is dropped.
    entry = header["splits"][split]
    assert 0 <= entry["text_tokens"] - entry["n_text"] * rows.shape[1] < rows.shape[1]


@pytest.mark.parametrize("split", ["train", "val"])
def test_synthetic_rows_are_mixed_in_at_the_fraction(text_config, split):
    cfg, out, _ = text_config
    header, rows = split_rows(out, split)
    entry = header["splits"][split]
    synthetic = rows[rows.max(axis=1) < header["text_offset"]]
    fraction = cfg["text"]["synthetic_fraction"]
    assert (
        len(synthetic) == entry["n_synthetic"] == round(entry["n_text"] * fraction / (1 - fraction))
    )
    assert np.all(synthetic[:, 0] == 0)  # every synthetic sequence starts with BOS
    # Spread through the split, not appended as a block.
    where = np.flatnonzero(rows.max(axis=1) < header["text_offset"])
    assert where.min() < len(rows) / 4 and where.max() > 3 * len(rows) / 4
    gen = CorpusGenerator(cfg["data"], seq_len=rows.shape[1])
    assert header["text_offset"] == gen.vocab.size
    assert header["vocab_size"] == gen.vocab.size + 400


def test_trainer_reads_the_memory_mapped_rows(text_config):
    cfg, out, _ = text_config
    corpus = load_corpus(out / "corpus.json")
    _, rows = split_rows(out, "train")
    index = torch.tensor([5, 0, 17, 5])
    assert torch.equal(
        corpus["train"][index], torch.from_numpy(rows[[5, 0, 17, 5]].astype(np.int64))
    )
    assert corpus["val"][:3].dtype == torch.int64 and len(corpus["train"]) == len(rows)
    spec = expand_design(load_plan(REPO / cfg["plan"]), "smoke")[0]
    spec = replace(spec, token_cap=6 * spec.global_batch * cfg["model"]["block_size"])
    fast = cfg | {"train": cfg["train"] | {"curvature_proxies": []}}
    model, result = train_run(spec, fast, corpus, show_progress=False)
    assert model.cfg.vocab_size == corpus["vocab_size"]
    assert result.steps == 6 and np.isfinite(result.trace["train_loss"]).all()


def test_damaged_shard_and_missing_text_are_named(text_config, tmp_path):
    cfg, out, _ = text_config
    for name in ("corpus.json", "tokenizer.json", "val.bin"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    (tmp_path / "train.bin").write_bytes((out / "train.bin").read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"train\.bin: expected \d+ bytes"):
        load_corpus(tmp_path / "corpus.json")
    missing = cfg | {"text": cfg["text"] | {"train": [str(tmp_path / "none" / "*.txt")]}}
    with pytest.raises(FileNotFoundError, match=r"text\.train: no file matches"):
        build_shards(missing, tmp_path / "other")


@pytest.mark.slow
def test_the_workflow_rule_writes_the_shards_a_train_job_reads(tmp_path):
    """Rule text_shards (workflow/rules/data.smk) on a generated text, through Snakemake;
    the train rule's corpus is then the shard header."""
    for split, seed in (("train", 7), ("val", 8)):
        (tmp_path / split).mkdir()
        (tmp_path / split / "a.txt").write_text(generated_text(seed, 200), encoding="utf-8")
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["text"] = {
        "train": [str(tmp_path / "train" / "*.txt")],
        "val": [str(tmp_path / "val" / "*.txt")],
        "vocab_size": 300,
        "min_frequency": 2,
        "synthetic_fraction": 0.5,
    }
    config_file = tmp_path / "text.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    header_path = tmp_path / "results/data/shards/corpus.json"
    args = ["--cores", "1", "--configfile", str(config_file)]
    proc = subprocess.run(
        [snakemake, str(header_path), *args], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    corpus = load_corpus(header_path)
    header = json.loads(header_path.read_text())
    assert corpus["vocab_size"] == header["text_offset"] + 300
    rows = corpus["train"][torch.arange(len(corpus["train"]))]
    tokenizer = Tokenizer.from_file(str(header_path.parent / "tokenizer.json"))
    is_text = rows.min(dim=1).values >= header["text_offset"]
    assert int((~is_text).sum()) == header["splits"]["train"]["n_synthetic"] > 0
    decoded = tokenizer.decode((rows[is_text].reshape(-1) - header["text_offset"]).tolist())
    assert decoded == generated_text(7, 200)[: len(decoded)]
    dry = subprocess.run(
        [snakemake, *args, "-n"], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"input: {header_path}, preregistration/plan.yaml" in dry.stdout  # rule train
