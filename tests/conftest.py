"""Fixtures shared by test files (the smoke study, run once per test session) and the
test tiers.

Tiers: ``make test`` runs every test, on every core (pytest-xdist); ``make test-fast``
(``-m "not slow"``) leaves out the tests marked ``slow``: end-to-end Snakemake runs,
training beyond a few steps, worker processes and virtual environments. The mark is
given here to every test that asks for a fixture of ``SLOW_FIXTURES`` (directly or
through another fixture), and by hand (``pytest.mark.slow``) to the other expensive
tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from preregistration.design import expand_design
from preregistration.plan import load_plan
from tests.snakemake_cli import run_snakemake
from training.data.corpus import build_corpus

REPO = Path(__file__).resolve().parents[1]

# Fixtures that run the workflow (or a dry run of it) or train a run: a test that uses
# one is slow.
SLOW_FIXTURES = frozenset({"smoke_study", "smoke", "cluster_dry_run"})


# Session fixtures that run the workflow: under pytest-xdist (``make test`` runs ``-n auto
# --dist loadgroup``) every test that asks for one goes to one worker, so each runs once;
# the other tests go with their file.
SHARED_FIXTURES = ("smoke_study", "cluster_dry_run")


def pytest_configure(config) -> None:
    """One torch thread per xdist worker: the workers already use every core."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark ``slow`` every test whose fixtures (their closure) include a slow fixture, and
    give each test its xdist group: its shared workflow fixture's, else its file's."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        shared = [name for name in SHARED_FIXTURES if name in fixtures]
        # Else the test's file: a module's fixtures are built once, on one worker.
        group = shared[0] if shared else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> Path:
    """Run the smoke study (config/smoke.yaml) once, end to end, into a temporary results
    directory; the workflow tests and the report test read it."""
    results = tmp_path_factory.mktemp("smoke")
    args = ["--cores", "2", "--configfile", "config/smoke.yaml", "--config", f"results={results}"]
    run_snakemake(*args, warm_start=True, what="the smoke study")
    return results


@pytest.fixture(scope="session")
def cluster_dry_run(tmp_path_factory) -> str:
    """Standard output of ``snakemake --profile cluster -n`` at the 1.3B size, run once:
    the jobs a cluster user would submit (config/gpu.yaml), with their resources and
    shell commands, and the job-stats table."""
    results = tmp_path_factory.mktemp("cluster")
    args = ["--profile", "cluster", "-n", "--config", f"results={results}", "model_size=1.3b"]
    return run_snakemake(*args, what="the cluster dry run").stdout


@pytest.fixture(scope="session")
def smoke():
    """The smoke config, its corpus and its first registered run spec (for training tests)."""
    cfg = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    corpus = build_corpus(cfg["data"], cfg["model"]["block_size"])
    spec = expand_design(load_plan(REPO / cfg["plan"]), "smoke")[0]
    return cfg, corpus, spec


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small-tensor tests (no OpenMP contention on a
    2-core machine); the thread count before it is restored afterwards. A module asks
    for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
