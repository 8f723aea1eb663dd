rule corpus:
    output:
        f"{RESULTS}/data/corpus.pt",
    log:
        f"{RESULTS}/logs/corpus.log",
    params:
        data=config["data"],
        block_size=config["model"]["block_size"],
    script:
        "../scripts/make_corpus.py"
