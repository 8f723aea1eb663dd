"""The natural-text corpus: a BPE tokenizer trained on the user's text, and flat token shards.

Layout of ``<results>/data/shards/`` (config/README.md):

- ``tokenizer.json``: a byte-level BPE tokenizer (Hugging Face ``tokenizers``),
  trained offline on the train split's files; ``<|endoftext|>`` ends every document.
- ``train.bin``, ``val.bin``: one flat little-endian array of token ids per split
  (``dtype`` uint16 when the vocabulary fits, else uint32), read as
  ``n_sequences`` rows of ``block_size + 1`` tokens by ``numpy.memmap``.
- ``corpus.json``: the header: format, dtype, block_size, vocab_size,
  ``text_offset``, per split its file, sequence counts and byte size, and the
  synthetic suites' ``data_cfg``.

Id space: the synthetic suites keep their ids ``0 .. text_offset - 1``
(training/data/corpus.py, BOS = 0), so the ICL and memorization evaluations are the same
on either corpus; BPE token ``t`` is stored as ``text_offset + t``. A text row is
the next ``block_size + 1`` tokens of the split's document stream (files in
sorted order, each followed by end-of-text; a last partial row is dropped). A
fraction ``synthetic_fraction`` of the rows are synthetic sequences (mixture
``data.mixture``), placed at positions drawn from ``data.seed``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from training.checkpoints import load_plain
from training.config import DataConfig, ModelConfig, StudyConfig, TextConfig, block_config
from training.data.corpus import CorpusGenerator

FORMAT = "pne-icl-shards/1"
EOT = "<|endoftext|>"
CHUNK_ROWS = 4096  # rows written per batch: bounds memory at paper scale


def text_files(patterns: list[str], key: str) -> list[Path]:
    """Sorted files matched by the globs of ``text.<key>``; none matched stops with the globs."""
    files = sorted({Path(f) for p in patterns for f in glob.glob(p, recursive=True)})
    if not files:
        raise FileNotFoundError(
            f"config text.{key}: no file matches {patterns}; put UTF-8 text files there "
            "(relative paths are read from the working directory)"
        )
    return files


def read_documents(files: list[Path], lines_per_chunk: int = 10_000) -> Iterator[tuple[str, bool]]:
    """(text, ends_document) pieces of every file, cut at line ends so no file is read whole."""
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                lines: list[str] = []
                for line in handle:
                    lines.append(line)
                    if len(lines) == lines_per_chunk:
                        yield "".join(lines), False
                        lines = []
                yield "".join(lines), True
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err})") from err


def train_tokenizer(files: list[Path], vocab_size: int, min_frequency: int):
    """A byte-level BPE tokenizer (Sennrich et al. 2016; GPT-2's byte-level variant) on ``files``.

    Byte-level: every string encodes and ``decode(encode(s)) == s`` exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((text for text, _ in read_documents(files)), trainer=trainer)
    return tokenizer


def token_stream(tokenizer, files: list[Path]) -> Iterator[np.ndarray]:
    """BPE ids of the files in order, end-of-text after each file."""
    eot = tokenizer.token_to_id(EOT)
    for text, ends in read_documents(files):
        ids = tokenizer.encode(text).ids if text else []
        yield np.asarray(ids + ([eot] if ends else []), dtype=np.int64)


def storage_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_split(
    out: Path,
    tokenizer,
    files: list[Path],
    generator: CorpusGenerator,
    text_offset: int,
    dtype: np.dtype,
    synthetic_fraction: float,
    seed: int,
) -> dict:
    """Write one split's rows to ``out``; return its header entry.

    Two passes: the document stream goes to ``out.tmp``, then text rows and
    ``round(n_text f / (1 - f))`` synthetic rows are interleaved into ``out``.
    """
    seq_len = generator.seq_len
    tmp = out.with_suffix(".tmp")
    n_stream = 0
    with open(tmp, "wb") as handle:
        for ids in token_stream(tokenizer, files):
            handle.write((ids + text_offset).astype(dtype).tobytes())
            n_stream += len(ids)
    n_text = n_stream // seq_len
    if n_text == 0:
        raise ValueError(
            f"text files {[str(f) for f in files]}: {n_stream} tokens, fewer than one row of "
            f"block_size + 1 = {seq_len} tokens"
        )
    n_synthetic = round(n_text * synthetic_fraction / (1.0 - synthetic_fraction))
    n_rows = n_text + n_synthetic
    rng = np.random.default_rng(seed)
    is_synthetic = np.zeros(n_rows, dtype=bool)
    is_synthetic[rng.choice(n_rows, size=n_synthetic, replace=False)] = True
    text_rows = np.memmap(tmp, dtype=dtype, mode="r", shape=(n_text, seq_len))
    next_text = next_synthetic = 0
    with open(out, "wb") as handle:
        for start in range(0, n_rows, CHUNK_ROWS):
            mask = is_synthetic[start : start + CHUNK_ROWS]
            rows = np.empty((len(mask), seq_len), dtype=dtype)
            k = int(mask.sum())
            if k:
                chunk_seed = seed * 1_000_003 + start // CHUNK_ROWS
                rows[mask] = generator.sequences(k, chunk_seed)[0].numpy().astype(dtype)
                next_synthetic += k
            rows[~mask] = text_rows[next_text : next_text + len(mask) - k]
            next_text += len(mask) - k
            handle.write(rows.tobytes())
    del text_rows
    tmp.unlink()
    return {
        "file": out.name,
        "n_sequences": n_rows,
        "n_text": n_text,
        "n_synthetic": n_synthetic,
        "text_tokens": n_stream,
        "bytes": n_rows * seq_len * dtype.itemsize,
    }


def build_shards(config: StudyConfig | Mapping, out_dir: Path) -> dict:
    """Tokenizer and shards of the config's ``text`` under ``out_dir``; return their header.

    ``config``: the study config, or a mapping with its ``text``, ``data`` and ``model``
    blocks (what the workflow's ``text_shards`` rule passes)."""

    def block(cls, key):
        return block_config(
            cls, getattr(config, key) if isinstance(config, StudyConfig) else config[key]
        )

    text, data_cfg = block(TextConfig, "text"), block(DataConfig, "data")
    block_size = block(ModelConfig, "model").block_size
    out_dir.mkdir(parents=True, exist_ok=True)
    train_files = text_files(text.train, "train")
    val_files = text_files(text.val, "val")
    tokenizer = train_tokenizer(train_files, int(text.vocab_size), int(text.min_frequency))
    tokenizer.save(str(out_dir / "tokenizer.json"))
    generator = CorpusGenerator(data_cfg, seq_len=block_size + 1)
    text_offset = generator.vocab.size
    # The configured size, not the trained one (smaller on a small text): the model's shape,
    # hence its parameter count, is then that of the config (training/scale/paper_scale.py).
    vocab_size = text_offset + int(text.vocab_size)
    dtype = storage_dtype(vocab_size)
    fraction, seed = float(text.synthetic_fraction), data_cfg.seed
    splits = {
        name: write_split(
            out_dir / f"{name}.bin",
            tokenizer,
            files,
            generator,
            text_offset,
            dtype,
            fraction,
            seed + offset,
        )  # fmt: skip
        for name, files, offset in (("train", train_files, 1), ("val", val_files, 2))
    }
    header = {
        "format": FORMAT,
        "dtype": dtype.name,
        "block_size": block_size,
        "vocab_size": vocab_size,
        "text_offset": text_offset,
        "tokenizer": "tokenizer.json",
        "eot": text_offset + tokenizer.token_to_id(EOT),
        "synthetic_fraction": fraction,
        "splits": splits,
        "data_cfg": dataclasses.asdict(data_cfg),
        "text_files": {"train": [str(f) for f in train_files], "val": [str(f) for f in val_files]},
    }
    (out_dir / "corpus.json").write_text(json.dumps(header, indent=2))
    return header


class ShardRows:
    """Rows ``(n_sequences, block_size + 1)`` of a memory-mapped split, indexed like a tensor.

    ``rows[i]``, ``rows[a:b]`` and ``rows[index_tensor]`` return int64 tensors, read
    from disk on demand: the training loop indexes it exactly as the synthetic
    corpus's in-memory tensor.
    """

    def __init__(self, path: Path, dtype: str, n_rows: int, seq_len: int):
        expected = n_rows * seq_len * np.dtype(dtype).itemsize
        if not path.exists() or path.stat().st_size != expected:
            size = path.stat().st_size if path.exists() else "missing"
            raise ValueError(
                f"{path}: expected {expected} bytes ({n_rows} x {seq_len} {dtype}), found {size}"
            )
        self.rows = np.memmap(path, dtype=dtype, mode="r", shape=(n_rows, seq_len))

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return torch.from_numpy(np.asarray(self.rows[index], dtype=np.int64))


def load_shards(header_path: Path) -> dict:
    """The corpus dict the trainer and scorer read (as data.py's build_corpus), from a header."""
    header_path = Path(header_path)
    try:
        header = json.loads(header_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{header_path}: not a readable shard header ({err})") from err
    if header.get("format") != FORMAT:
        raise ValueError(f"{header_path}: format is {header.get('format')!r}; expected {FORMAT!r}")
    seq_len = int(header["block_size"]) + 1
    splits = {
        name: ShardRows(
            header_path.parent / s["file"], header["dtype"], int(s["n_sequences"]), seq_len
        )
        for name, s in header["splits"].items()
    }
    return {
        "train": splits["train"],
        "val": splits["val"],
        "vocab_size": int(header["vocab_size"]),
        "data_cfg": header["data_cfg"],
        "block_size": int(header["block_size"]),
        "text_offset": int(header["text_offset"]),
    }


def load_corpus(path: Path) -> dict:
    """A corpus file of either kind: a shard header (.json) or the synthetic corpus (.pt)."""
    path = Path(path)
    if path.suffix == ".json":
        return load_shards(path)
    return load_plain(path, "corpus")
