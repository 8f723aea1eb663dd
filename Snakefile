# A pre-registered study of optimizer-preconditioned gradient noise and in-context
# learning. `make reproduce` runs the CPU-scale study of config/config.yaml;
# `snakemake --profile cluster` the GPU-scale one of config/gpu.yaml.
configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


if not ANALYSIS_ONLY:

    include: "workflow/rules/data.smk"

    if config["one_job_per_run"]:

        include: "workflow/rules/train_and_evaluate.smk"

    else:

        include: "workflow/rules/train.smk"
        include: "workflow/rules/score.smk"
        include: "workflow/rules/evaluate.smk"


include: "workflow/rules/cnr.smk"
include: "workflow/rules/cnr_tables.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        get_final_outputs(),
        rules.report_pages.output,
    default_target: True
