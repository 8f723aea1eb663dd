"""The per-run checks on the files of a real training run, untouched and damaged.

One registered smoke run is trained and scored here, in process, exactly as the
workflow's ``train`` and ``score`` rules do (``training.run.main``,
``training.evaluation.scores.score_model``). Its status, steps, tokens and final loss as
derived from the trace must equal what the trainer recorded in meta.json; and
damage to any of its files must be reported naming that file.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from run_factory import REPO, SCALE

from analysis.runs.files import read_run, run_dir
from preregistration.design import expand_design
from preregistration.plan import load_plan
from preregistration.tables import write_table
from training.checkpoints import load_plain
from training.data.corpus import build_corpus
from training.evaluation.scores import score_model
from training.model import GPT, GPTConfig
from training.run import main as train_main

CONDITION, SEED = "bs8_sqrt", 1


def _spec():
    plan = load_plan(REPO / "preregistration" / "plan.yaml")
    return next(s for s in expand_design(plan, SCALE) if (s.condition, s.seed) == (CONDITION, SEED))


@pytest.fixture(scope="module")
def real_traces(tmp_path_factory) -> Path:
    """<traces> holding one real, trained and scored smoke run."""
    root = tmp_path_factory.mktemp("real")
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    config |= {"plan": str(REPO / "preregistration" / "plan.yaml"), "results": str(root)}
    corpus = build_corpus(config["data"], config["model"]["block_size"])
    torch.save(corpus, root / "corpus.pt")
    out = run_dir(root / "runs", CONDITION, SEED)
    threads = torch.get_num_threads()
    try:
        args = ["--config-json", json.dumps(config), "--corpus", str(root / "corpus.pt")]
        args += ["--condition", CONDITION, "--seed", str(SEED), "--out", str(out)]
        assert train_main(args) == 0
    finally:
        torch.set_num_threads(threads)
    ckpt = load_plain(out / "checkpoint.pt")
    model = GPT(GPTConfig(**ckpt["gpt_config"]))
    model.load_state_dict(ckpt["model"])
    scores = score_model(model, corpus, config["evaluate"], _spec().run_id)
    write_table(scores, "scores", out / "scores.parquet")
    return root / "runs"


@pytest.fixture
def traces(real_traces: Path, tmp_path: Path) -> Path:
    shutil.copytree(real_traces, tmp_path / "runs")
    return tmp_path / "runs"


def test_derived_ending_equals_what_the_trainer_recorded(traces: Path):
    record, problems = read_run(traces, _spec())
    assert problems == []
    meta = json.loads((run_dir(traces, CONDITION, SEED) / "meta.json").read_text())
    for key in ("status", "steps", "tokens"):
        assert record.row[key] == meta[key], key
    assert math.isclose(record.row["final_val_loss"], meta["final_val_loss"], rel_tol=1e-12)
    assert record.row["int_pne_star"] == record.trace["int_pne_star"].iloc[-1] > 0


def _edit_meta(directory: Path, **changes) -> None:
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps(meta | changes))


def _edit(directory: Path, name: str, change) -> None:
    change(pd.read_parquet(directory / name)).to_parquet(directory / name, index=False)


def _other_status(directory: Path) -> str:
    status = json.loads((directory / "meta.json").read_text())["status"]
    return "diverged" if status != "diverged" else "reached_target"


DAMAGE = {
    "meta status contradicts the trace": (
        "meta.json",
        lambda d: _edit_meta(d, status=_other_status(d)),
        "but the trace gives",
    ),
    "meta of another seed": ("meta.json", lambda d: _edit_meta(d, seed=0), "seed is 0"),
    "meta final loss changed": (
        "meta.json",
        lambda d: _edit_meta(d, final_val_loss=1.0),
        "final_val_loss 1.0, but the last finite val_loss",
    ),
    "trace truncated": (
        "trace.parquet",
        lambda d: (d / "trace.parquet").write_bytes((d / "trace.parquet").read_bytes()[:500]),
        "cannot be read as table 'steps'",
    ),
    "trace rows of another run": (
        "trace.parquet",
        lambda d: _edit(d, "trace.parquet", lambda df: df.assign(run_id="bs8_sqrt_s0")),
        "column 'run_id' is ['bs8_sqrt_s0']",
    ),
    "trace exposure negated": (
        "trace.parquet",
        lambda d: _edit(d, "trace.parquet", lambda df: df.assign(int_pne=-df.int_pne)),
        "'int_pne': expected finite and >= 0",
    ),
    "scores of another run": (
        "scores.parquet",
        lambda d: _edit(d, "scores.parquet", lambda df: df.assign(run_id="bs4_sqrt_s1")),
        "column 'run_id' is ['bs4_sqrt_s1']",
    ),
    "layers of another run": (
        "layers.parquet",
        lambda d: _edit(d, "layers.parquet", lambda df: df.assign(run_id="bs4_sqrt_s1")),
        "this file belongs to run 'bs8_sqrt_s1'",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_real_run_is_reported_naming_the_file(traces: Path, case: str):
    name, change, expect = DAMAGE[case]
    directory = run_dir(traces, CONDITION, SEED)
    change(directory)
    record, problems = read_run(traces, _spec())
    assert record is None
    message = "\n".join(problems)
    assert f"{directory / name}: " in message and expect in message, message
