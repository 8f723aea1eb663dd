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
