# Entry points. Each target creates .venv from the pinned requirements when it is missing.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
CONFIG ?= config/config.yaml
CORES ?= 2
# pytest-xdist workers of make test and make test-fast (auto: one per core; 0: no workers).
TEST_WORKERS ?= auto
# The report file: report.html in the results directory the config names.
REPORT ?= $(shell $(PY) -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["results"])' $(CONFIG))/report.html
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Python's default: a module's bytecode is cached on its first import. Where the environment
# turns that off, every job would compile each module it imports again (torch, pandas and
# the rest: about 12 s a process).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv reproduce test test-fast analysis report audit lock lint docs bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-lock.txt pyproject.toml gradnoise/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt -c requirements-lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e ./gradnoise -e .
	@# No bytecode ahead of time: of the 2.2 GB of packages the study imports a small part, and
	@# Python writes each imported module's bytecode on its first import (about 15 s in all,
	@# against 50-80 s to compile every file ahead, or 130 s more in pip on one core).
	touch $@

# A server that imports torch and the run jobs' modules once; the jobs fork from it. It
# imports the analysis jobs' modules afterwards, while the runs train.
SERVE := $(PY) workflow/warm_start.py serve
WARM_START := $(SERVE) --idle-preload-for analysis --
# TCMalloc under the study's processes when it can be had (workflow/allocator.sh: the same
# numbers, faster steps); PNE_ALLOCATOR=system keeps glibc's malloc.
WITH_ALLOCATOR = LD_PRELOAD="$$(workflow/allocator.sh)"

## The whole study: data, training, scores, analysis, tables, figures, audit.
## The run jobs fork from a warm-start server instead of importing torch each.
reproduce: venv
	$(WITH_ALLOCATOR) $(WARM_START) $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --rerun-incomplete --printshellcmds

## The test suite, every tier (the slowest tests listed at the end).
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

## The fast tier, for the edit-test loop: every test not marked slow (tests/conftest.py).
test-fast: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

## Only the analysis, tables, figures and audit, on existing traces (no training job); the
## jobs fork from a warm-start server that has imported the statistics and plotting stack.
## Every table is rebuilt from the per-run files; a registered run whose files are missing
## stops it at once, naming the run and the files (workflow/rules/common.smk).
analysis: venv
	$(WITH_ALLOCATOR) $(SERVE) --preload-for analysis -- $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --config analysis_only=True --forceall --printshellcmds

## One self-contained HTML report of a finished study ($(REPORT)): first the missing
## analysis outputs and report pages (never a training job), then Snakemake's report.
report: venv
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --config analysis_only=True --rerun-incomplete --printshellcmds
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report $(REPORT) --report-stylesheet workflow/report/report.css

## Audit the study against its pre-registration.
audit: venv
	$(PY) -m analysis.audit.checks --config $(CONFIG)

## Write the pre-registration lock (refuses once confirmatory traces exist).
lock: venv
	$(PY) -m preregistration lock --config $(CONFIG)

## Ruff (lint and format) and the import contracts of pyproject.toml (the stages' layers).
lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

## The documentation site (mkdocs.yml, docs/) into site/: offline, and any warning fails it
## (the tables page is generated from the table contracts, the API pages from the docstrings).
docs: venv
	$(BIN)/mkdocs build --strict --site-dir site

bench: venv
	$(PY) bench/stage_times.py

## Tokens/s and MFU of the study's model against Hugging Face GPT-2 at the same shapes
## (the config's model, then 4 layers x 128 wide).
.PHONY: bench-throughput
bench-throughput: venv
	$(PY) bench/throughput.py --config $(CONFIG)
	$(PY) bench/throughput.py --config $(CONFIG) --n-layer 4 --n-embd 128 --n-head 4

clean:
	rm -rf results .snakemake

.PHONY: preflight estimate cluster-test
ESTIMATE_CONFIG ?= config/gpu.yaml

## Each registered model size built as a train job builds it, a few dozen steps of the largest
## forward pass on this machine's devices (at most 10 minutes on one GPU): tokens/s, MFU, peak
## memory, the P-NE logger's overhead, compile off and on, and the all-reduce of a gradient over
## every GPU. Writes <results>/preflight/preflight.json (training/scale/preflight.py); on a machine
## without CUDA, at shrunken shapes.
preflight: venv
	$(PY) -m training.scale.preflight --config $(ESTIMATE_CONFIG)

## What the registered design needs before anything is submitted: FLOPs (6ND plus attention),
## GPU-hours and the number of jobs (training/scale/compute_estimate.py); the throughput is the
## preflight's when its JSON measured this model, else the config's peak x MFU (it says which).
estimate: venv
	$(PY) -m training.scale.compute_estimate --config $(ESTIMATE_CONFIG)

## The smoke study on a one-node SLURM cluster started here (Debian's slurm-wlm and munge,
## installed when missing), with one training job cancelled part-way and resumed.
cluster-test: venv
	cluster/test/run_cluster_test.sh
