"""Snakemake script: tokenizer and token shards of the user's text (training.data.shards)."""

import sys
from pathlib import Path

from training.data.shards import build_shards

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
header = build_shards(snakemake.params.corpus_config, Path(snakemake.output.header).parent)  # noqa: F821
for name, split in header["splits"].items():
    print(
        f"{name}: {split['n_sequences']} rows ({split['n_text']} text, {split['n_synthetic']} "
        f"synthetic), {split['text_tokens']} text tokens, {header['dtype']}",
        file=sys.stderr,
    )
print(f"vocabulary {header['vocab_size']} (text from id {header['text_offset']})", file=sys.stderr)
