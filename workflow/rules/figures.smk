# Figures, PNG and PDF, in two jobs: those of the hypotheses (after the tables) and
# the exploratory ones, which read only the gathered tables and so run beside the
# analysis tables. Each PNG is marked for the report (category: the hypothesis it
# bears on; caption in workflow/report/<figure>.rst).
from analysis.report.pages import SECTIONS  # noqa: E402


rule figures:
    input:
        runs=f"{TABLES}/runs.parquet",
        tables=[f"{TABLES}/{t}.csv" for t in ANALYSIS_TABLES],
        plan=config["plan"],
    output:
        fig1=report(
            f"{FIGURES}/fig1_pne_icl.png",
            caption="../report/fig1_pne_icl.rst",
            category=SECTIONS["H1"],
            labels={"item": "Figure 1"},
        ),
        fig1_pdf=f"{FIGURES}/fig1_pne_icl.pdf",
        fig2=report(
            f"{FIGURES}/fig2_phase.png",
            caption="../report/fig2_phase.rst",
            category=SECTIONS["H2"],
            labels={"item": "Figure 2"},
        ),
        fig2_pdf=f"{FIGURES}/fig2_phase.pdf",
        fig3=report(
            f"{FIGURES}/fig3_equivalence.png",
            caption="../report/fig3_equivalence.rst",
            category=SECTIONS["H3"],
            labels={"item": "Figure 3"},
        ),
        fig3_pdf=f"{FIGURES}/fig3_equivalence.pdf",
        fig4=report(
            f"{FIGURES}/fig4_frontier.png",
            caption="../report/fig4_frontier.rst",
            category=SECTIONS["H4"],
            labels={"item": "Figure 4"},
        ),
        fig4_pdf=f"{FIGURES}/fig4_frontier.pdf",
    benchmark:
        f"{RESULTS}/benchmarks/figures.tsv"
    log:
        f"{RESULTS}/logs/figures.log",
    params:
        launcher=JOB_LAUNCHER,
        tables_dir=lambda wildcards, input: str(Path(input.tables[0]).parent),
        out_dir=lambda wildcards, output: str(Path(output.fig1).parent),
    # on the longest path of `make analysis` (collect, tables, these figures): first
    priority: 1
    localrule: True
    conda:
        ENV
    shell:
        "{params.launcher} -m workflow.scripts.figures --runs {input.runs:q} "
        "--tables-dir {params.tables_dir:q} --plan {input.plan:q} --out-dir {params.out_dir:q} "
        "2> {log:q}"


rule exploratory_figures:
    input:
        runs=f"{TABLES}/runs.parquet",
        steps=f"{TABLES}/steps.parquet",
        scores=f"{TABLES}/scores.parquet",
    output:
        fig5=report(
            f"{FIGURES}/fig5_induction_sharpness.png",
            caption="../report/fig5_induction_sharpness.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Figure 5"},
        ),
        fig5_pdf=f"{FIGURES}/fig5_induction_sharpness.pdf",
        fig6=report(
            f"{FIGURES}/fig6_clipping.png",
            caption="../report/fig6_clipping.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Figure 6"},
        ),
        fig6_pdf=f"{FIGURES}/fig6_clipping.pdf",
        icl_curves=report(
            f"{FIGURES}/icl_curves.png",
            caption="../report/icl_curves.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "ICL curves"},
        ),
        icl_curves_pdf=f"{FIGURES}/icl_curves.pdf",
        clock=report(
            f"{FIGURES}/clock_decomposition.png",
            caption="../report/clock_decomposition.rst",
            category=SECTIONS["H1"],
            labels={"item": "P-NE* against the clock"},
        ),
        clock_pdf=f"{FIGURES}/clock_decomposition.pdf",
    benchmark:
        f"{RESULTS}/benchmarks/exploratory_figures.tsv"
    log:
        f"{RESULTS}/logs/exploratory_figures.log",
    params:
        launcher=JOB_LAUNCHER,
        tables_dir=lambda wildcards, input: str(Path(input.runs).parent),
        out_dir=lambda wildcards, output: str(Path(output.fig5).parent),
        # Figure 5's uniform-attention level: the chance of induction_head_score there
        probes=language_run_files("probes.parquet"),
    localrule: True
    conda:
        ENV
    shell:
        "{params.launcher} -m workflow.scripts.exploratory_figures "
        "--tables-dir {params.tables_dir:q} --out-dir {params.out_dir:q} "
        "--probes {params.probes:q} 2> {log:q}"
