"""The corpora a run trains on, as arrays of token ids.

- ``corpus``  the deterministic synthetic corpus: its vocabulary, its generator (ICL,
              facts, copy and format families) and the stored corpus file
- ``shards``  the natural-text corpus: a BPE tokenizer trained on the user's text, flat
              token shards with the synthetic suites mixed in, and the loader of either
              corpus

Imports nothing of the loop, the evaluations or the paper scale (the import-linter
contracts of ``pyproject.toml`` check it).
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "corpus": (
        "KINDS",
        "Vocab",
        "vocab_from_config",
        "zipf_probs",
        "mapping_hash",
        "CorpusGenerator",
        "build_corpus",
    ),
    "shards": (
        "FORMAT",
        "EOT",
        "CHUNK_ROWS",
        "text_files",
        "read_documents",
        "train_tokenizer",
        "token_stream",
        "storage_dtype",
        "write_split",
        "build_shards",
        "ShardRows",
        "load_shards",
        "load_corpus",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
