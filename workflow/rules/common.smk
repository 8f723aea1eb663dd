import glob
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, workflow.basedir)

from analysis.runs.files import missing_run_files  # noqa: E402
from preregistration.design import arm_family, expand_design  # noqa: E402
from preregistration.plan import load_plan  # noqa: E402

validate(config, workflow.source_path("../schemas/config.schema.yaml"))

# The paper scale names its model shapes (training/scale/paper_scale.py): the chosen one
# becomes `model`.
from training.scale.paper_scale import check_registered, job_resources  # noqa: E402
from training.scale.paper_scale import launcher_command, resolve_model  # noqa: E402

config.update(resolve_model(config, "config"))

RESULTS = config["results"]
ANALYSIS_ONLY = bool(config.get("analysis_only", False))
TRACES = config.get("traces") or f"{RESULTS}/runs"
PLAN = load_plan(config["plan"])
check_registered(config, PLAN, "config", config["plan"])
RUN_SPECS = expand_design(PLAN, config["scale"], config["plan"])
# The arms whose runs log the extra curvature proxies must be arms of this scale.
_ARMS = sorted({s.arm for s in RUN_SPECS})
_PROXY_ARMS = config["train"].get("curvature_proxy_arms") or []
if set(_PROXY_ARMS) - set(_ARMS):
    raise WorkflowError(
        f"config train.curvature_proxy_arms: {sorted(set(_PROXY_ARMS) - set(_ARMS))} is no "
        f"arm of scale {config['scale']!r} (its arms: {_ARMS})"
    )
RUN_KEYS = [(s.condition, s.seed) for s in RUN_SPECS]
# condition -> task family of its arm (plan design.arms.<arm>.family: language, regression)
RUN_FAMILY = {s.condition: arm_family(PLAN, s.arm) for s in RUN_SPECS}
if ANALYSIS_ONLY:
    # Nothing makes run files here: without this check Snakemake would skip
    # collect_runs and reuse a runs table of an earlier collection.
    _MISSING = missing_run_files(TRACES, RUN_SPECS)
    if _MISSING:
        raise WorkflowError(
            "analysis_only: registered runs lack their files:\n  " + "\n  ".join(_MISSING)
        )
# The training corpus: token shards of the user's text when the config has `text`
# (text_shards in workflow/rules/data.smk), else the synthetic corpus.
CORPUS = f"{RESULTS}/data/shards/corpus.json" if config.get("text") else f"{RESULTS}/data/corpus.pt"
TABLES = f"{RESULTS}/tables"
# One environment for every rule (the pins of environment.yml), used with `--sdm conda`.
ENV = "../envs/study.yaml"
FIGURES = f"{RESULTS}/figures"

ANALYSIS_TABLES = ["h1", "t1_confirmatory", "t2_inventory", "t3_equivalence", "t4_loss_matching"]
EXPLORATORY_TABLES = [
    "sensitivity", "power", "noise_control", "evaluation", "h1_regression", "regression_shots",
    "clock_runs", "clock_summary", "precision", "regression_excess",
]  # fmt: skip
FIGURE_STEMS = [
    "fig1_pne_icl", "fig2_phase", "fig3_equivalence", "fig4_frontier", "fig6_clipping", "icl_curves"
]
FIGURE_STEMS += ["fig5_induction_sharpness"]  # Figure 5 (figures.smk)
FIGURE_STEMS += ["clock_decomposition"]  # P-NE* against the step-size clock (figures.smk)

wildcard_constraints:
    condition=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",


def run_files(name):
    """Path of one per-run file for every registered run."""
    return [f"{TRACES}/{c}/seed{s}/{name}" for c, s in RUN_KEYS]


def language_run_files(name):
    """Path of one per-run file for every registered run of the language family.

    The probes and the lm-eval tasks read a language model; an arm registered with
    another task family (plan design.arms.<arm>.family, e.g. regression) has none.
    """
    return [
        f"{TRACES}/{s.condition}/seed{s.seed}/{name}"
        for s in RUN_SPECS
        if arm_family(PLAN, s.arm) == "language"
    ]


def family_condition_pattern(family):
    """Regex matching exactly the conditions of the registered runs of one task family.

    A language run is evaluated by the `evaluate` job (scores, probes and lm-eval in one
    process), a run of another family by `score` alone; the patterns keep the two apart.
    A family without runs gets a pattern that matches nothing.
    """
    names = sorted({s.condition for s in RUN_SPECS if arm_family(PLAN, s.arm) == family})
    return "|".join(re.escape(n) for n in names) or "(?!)"


# The client of workflow/warm_start.py: a job forked from the warm-start server that
# `make reproduce` runs beside Snakemake, or without a server the interpreter itself.
WARM_START = Path(workflow.basedir) / "workflow" / "warm_start.py"


def get_launcher(wildcards):
    """The training launcher of the run; plain "python" means the interpreter running
    Snakemake (through the warm-start client), {gpus} in a torchrun line the GPU count
    of the run's train job."""
    launcher = launcher_command(config, sys.executable, RUN_FAMILY[wildcards.condition])
    if config.get("launcher", "python") == "python":
        launcher += f" {shlex.quote(str(WARM_START))} run"
    return launcher


# The launcher of the statistics, figure and audit jobs (python -m workflow.scripts.<job>):
# this interpreter through the warm-start client, so that `make analysis` forks them from a
# server that has imported pandas, statsmodels, pingouin and matplotlib once.
JOB_LAUNCHER = f"{shlex.quote(sys.executable)} {shlex.quote(str(WARM_START))} run"


def get_resources(rule, family="language"):
    """SLURM resources of one job of `rule` for a run of task `family`: the model size's
    row of cluster_resources for a language run, the family's own row for a family
    that trains its own model (regression)."""
    return job_resources(config, rule, family)


def get_run_resources(rule):
    """get_resources of each run by its task family, for a rule shared by the families
    (train): one function of the wildcards per resource."""
    by_family = {f: get_resources(rule, f) for f in sorted(set(RUN_FAMILY.values()))}
    if len({tuple(sorted(r)) for r in by_family.values()}) > 1:
        raise WorkflowError(
            f"cluster_resources: the {rule} rows of the task families {sorted(by_family)} "
            "name different resources (gpus 0 in one of them?): "
            f"{ {f: sorted(r) for f, r in by_family.items()} }"
        )

    def per_run(key):
        return lambda wildcards: by_family[RUN_FAMILY[wildcards.condition]][key]

    return {key: per_run(key) for key in next(iter(by_family.values()), {})}


# Keys of how the workflow lays out its jobs, not of what a run does: left out of the jobs'
# command lines and of the config a run records (its meta.json, StudyConfig.run_record),
# which are then the same whichever layout made the run.
from training.config import LAYOUT_KEYS  # noqa: E402


def get_config_json(wildcards=None):
    """The resolved config, without LAYOUT_KEYS, quoted for a shell command line."""
    return shlex.quote(json.dumps({k: v for k, v in config.items() if k not in LAYOUT_KEYS}))


def get_final_outputs():
    tables = [f"{TABLES}/{t}.{ext}" for t in ANALYSIS_TABLES + EXPLORATORY_TABLES
              for ext in ("csv", "md")]  # fmt: skip
    figures = [f"{FIGURES}/{f}.{ext}" for f in FIGURE_STEMS for ext in ("png", "pdf")]
    return tables + figures + [f"{RESULTS}/audit.md", f"{RESULTS}/audit.json"]


# The paper scale's text corpus (its shards are made in data.smk).
def get_text_files(split):
    """The user's text files of one split (globs of config text.<split>); none: the job says so."""
    return sorted({f for p in config["text"][split] for f in glob.glob(p, recursive=True)})


if config.get("text") and not (get_text_files("train") and get_text_files("val")):
    from snakemake.logging import logger

    logger.warning(
        f"config text.train {config['text']['train']} or text.val {config['text']['val']} "
        "matches no file yet: rule text_shards will stop until your UTF-8 text is there"
    )


def get_reference_trace(wildcards):
    """The trace of the run's reference (noise arms, issue 10); none for other runs."""
    spec = next(
        s for s in RUN_SPECS if s.condition == wildcards.condition and s.seed == int(wildcards.seed)
    )
    if spec.reference is None:
        return {}
    return {"reference": f"{TRACES}/{spec.reference}/seed{spec.seed}/trace.parquet"}


def get_reference_arg(wildcards, input):
    return f"--reference-trace {input.reference}" if "reference" in input.keys() else ""


# Counterfactual Noise Replay (plan section replay; cnr.smk, cnr_tables.smk).
from training.replay.plan import replay_plan  # noqa: E402

REPLAY = replay_plan(PLAN, config["scale"], config["plan"])
REPLAY_DIR = f"{RESULTS}/replay"


def cnr_case_files():
    """Every replay case's predictions.csv and retrains.csv; none without a replay at this
    scale, and with analysis_only those of an earlier study only if all of them exist."""
    if REPLAY is None:
        return []
    files = [
        f"{REPLAY_DIR}/{REPLAY.base_condition}/seed{seed}/switch{switch:g}/{name}.csv"
        for seed in REPLAY.base_seeds
        for switch in REPLAY.switch_points
        for name in ("predictions", "retrains")
    ]
    if ANALYSIS_ONLY and not all(Path(f).exists() for f in files):
        return []
    return files
