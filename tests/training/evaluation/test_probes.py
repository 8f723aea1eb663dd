"""probe_scores: the scores table's long format with every documented measure, fixed
inputs (two calls agree), the model left as it was, and a config error that names keys."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from preregistration.tables import columns, validate
from tests.tiny_data import TINY_DATA
from training.config import ConfigError
from training.data.corpus import build_corpus
from training.evaluation.probes import probe_scores, uniform_prefix_matching
from training.model import GPT, GPTConfig

DATA = TINY_DATA | {"copy_vocab": 8, "n_train_sequences": 8, "n_val_sequences": 12}
PROBE_CFG = {
    "probe_batch": 6,
    "hessian_iters": 5,
    "hessian_tol": 1e-3,
    "sam_rho": 0.05,
    "head_sequences": 8,
    "segment_len": 5,
    "icl_shots": 3,
    "icl_episodes": 4,
    "icl_orders": 10,
    "finetune_steps": 3,
    "lr_gd": 0.1,
    "lr_adam": 1e-3,
    "top_k": 2,
    "format_queries": 10,
}


@pytest.fixture(scope="module")
def setup():
    """A tiny corpus and model; one thread (tiny tensors on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = build_corpus(DATA, block_size=16)
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=corpus["vocab_size"],
            block_size=16,
            n_layer=2,
            n_head=2,
            n_embd=8,
            smeared_keys=True,
        )
    )
    yield model, corpus
    torch.set_num_threads(before)


def test_probe_scores_is_a_valid_scores_table_with_every_measure(setup):
    model, corpus = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    timings: dict[str, float] = {}
    table = probe_scores(model, corpus, PROBE_CFG, "bs8_fixed_s0", timings)
    assert list(table.columns) == columns("scores")
    validate(table, "scores")
    heads = {
        f"{m}_l{layer}_h{h}"
        for m in ("prefix_matching", "copying")
        for layer in (0, 1)
        for h in (0, 1)
    }
    expected = (
        heads
        | {
            "hessian_top_eigenvalue",
            "sam_sharpness",
            "fisher_trace",
            "induction_head_score",
            "induction_head_copying",
            "order_std_icl",
            "order_std_sgd",
            "accuracy_icl",
            "accuracy_gd",
            "accuracy_adam",
            "fact_logprob",
            "fact_rank",
            "in_weights_logprob",
            "in_weights_rank",
            "format_accuracy",
            "format_accuracy_icl",
            "format_accuracy_facts",
        }
        | {f"overlap_{m}_{n}" for m in ("top", "cos") for n in ("gd", "adam", "icl")}
    )
    assert set(table.measure) == expected and table.measure.is_unique
    assert (table.run_id == "bs8_fixed_s0").all()
    row = table.set_index("measure")
    assert (
        row.loc[[m for m in expected if m.startswith(("order", "overlap", "accuracy"))], "shots"]
        == 3
    ).all()
    assert row.loc["fact_logprob", "chance"] == pytest.approx(-math.log(5))
    assert row.loc["fact_rank", "chance"] == 3.0 and row.loc["fact_rank", "n_items"] == 20
    assert row.loc["in_weights_rank", "chance"] == 2.5
    parts = row.loc[["format_accuracy_icl", "format_accuracy_facts"]]
    assert list(parts.n_items) == [10, 20]
    assert row.loc["format_accuracy", "value"] == pytest.approx(
        (parts.value * parts.n_items).sum() / 30
    )
    assert row.loc["format_accuracy_facts", "chance"] == pytest.approx(5 / corpus["vocab_size"])
    assert row.loc["overlap_top_gd", "chance"] == 0.5 and row.loc["accuracy_gd", "chance"] == 0.25
    assert row.loc["induction_head_score", "chance"] == pytest.approx(uniform_prefix_matching(5))
    assert (
        row.loc["induction_head_score", "value"]
        == row.loc[
            [f"prefix_matching_l{layer}_h{h}" for layer in (0, 1) for h in (0, 1)], "value"
        ].max()
    )
    assert row.loc["hessian_top_eigenvalue", "n_items"] == 6
    assert set(timings) == {"hessian", "sam", "fisher", "heads", "icl_vs_gd", "memorization"}
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), f"probe_scores changed {name}"
    again = probe_scores(model, corpus, PROBE_CFG, "bs8_fixed_s0")
    pd.testing.assert_frame_equal(table, again)


def test_uniform_prefix_matching_by_hand():
    assert uniform_prefix_matching(2) == pytest.approx((1 / 4 + 1 / 5) / 2)


def test_a_wrong_probe_config_names_the_keys(setup):
    model, corpus = setup
    cfg = {k: v for k, v in PROBE_CFG.items() if k != "sam_rho"} | {"rho": 0.05}
    with pytest.raises(ConfigError) as err:
        probe_scores(model, corpus, cfg, "x")
    message = str(err.value)
    assert message.startswith("probe config: ")
    assert "'sam_rho' is a required property" in message
    assert "'rho' was unexpected" in message
