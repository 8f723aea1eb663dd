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


# The documents of the project's lm-eval tasks, built on the synthetic corpus's families.
rule lm_eval_data:
    input:
        corpus=f"{RESULTS}/data/corpus.pt",
    output:
        [f"{RESULTS}/lm_eval/data/{task}.jsonl" for task in config["lm_eval"]["tasks"]],
    benchmark:
        f"{RESULTS}/benchmarks/lm_eval_data.tsv"
    log:
        f"{RESULTS}/logs/lm_eval_data.log",
    params:
        lm_eval=config["lm_eval"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    localrule: True
    conda:
        ENV
    script:
        "../scripts/lm_eval_data.py"
