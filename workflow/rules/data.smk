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
