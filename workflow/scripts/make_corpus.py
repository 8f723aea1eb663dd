"""Snakemake script: build the synthetic corpus (training.data.corpus.build_corpus)."""

import sys

from training.checkpoints import save_plain
from training.data.corpus import build_corpus

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821
corpus = build_corpus(snakemake.params.data, snakemake.params.block_size)  # noqa: F821
save_plain(corpus, snakemake.output[0], "corpus")  # noqa: F821
print(
    f"corpus: {len(corpus['train'])} train, {len(corpus['val'])} validation sequences, "
    f"vocabulary {corpus['vocab_size']}",
    file=sys.stderr,
)
