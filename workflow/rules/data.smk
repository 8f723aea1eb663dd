rule corpus:
    output:
        f"{RESULTS}/data/corpus.pt",
    benchmark:
        f"{RESULTS}/benchmarks/corpus.tsv"
    log:
        f"{RESULTS}/logs/corpus.log",
    params:
        data=config["data"],
        block_size=config["model"]["block_size"],
    conda:
        ENV
    script:
        "../scripts/make_corpus.py"


import glob


def get_text_files(split):
    """The user's text files of one split (globs of config text.<split>); none: the job says so."""
    return sorted({f for p in config["text"][split] for f in glob.glob(p, recursive=True)})


if config.get("text") and not (get_text_files("train") and get_text_files("val")):
    from snakemake.logging import logger

    logger.warning(
        f"config text.train {config['text']['train']} or text.val {config['text']['val']} "
        "matches no file yet: rule text_shards will stop until your UTF-8 text is there"
    )


rule text_shards:
    input:
        train=lambda w: get_text_files("train"),
        val=lambda w: get_text_files("val"),
    output:
        header=f"{RESULTS}/data/shards/corpus.json",
        train=f"{RESULTS}/data/shards/train.bin",
        val=f"{RESULTS}/data/shards/val.bin",
        tokenizer=f"{RESULTS}/data/shards/tokenizer.json",
    benchmark:
        f"{RESULTS}/benchmarks/text_shards.tsv"
    log:
        f"{RESULTS}/logs/text_shards.log",
    params:
        corpus_config=lambda w: {k: config[k] for k in ("text", "data", "model")},
    conda:
        ENV
    script:
        "../scripts/make_shards.py"
