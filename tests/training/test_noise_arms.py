"""Every noise arm is deterministic under its seed and resumes after a kill to the same trace;
only the noise options differ between the resolved runs of any two arms (issue 10, items 7, 9)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from preregistration.design import expand_design
from preregistration.plan import load_plan
from tests.tiny_data import TINY_DATA, smoke_config_with
from training.config import study_config
from training.data.corpus import build_corpus
from training.run_setup import setup_run
from training.train import train_run

REPO = Path(__file__).resolve().parents[2]
STEPS, KILL_AT = 30, 23
# What may differ between two runs of one seed: the noise options and the registered
# batch / LR / condition / arm / role / reference / phase / budget (issue 10, item 7).
MAY_DIFFER = {
    "noise", "global_batch", "lr_peak", "lr_rule", "condition", "run_id", "arm", "role",
    "reference", "phase", "pne_budget",
}  # fmt: skip
ONE_PER_FORM = (
    "inj_gaussian_bs8",
    "inj_anisotropic_bs8",
    "inj_student_t_bs8",
    "nap_bs8",
    "phase_late_b1_bs8",
    "freeze_bs8",
    "sgld_T3e-06_bs8",
)


@pytest.fixture(scope="module")
def tiny():
    """A tiny config (the smoke plan's specs, 30 steps) and its corpus."""
    cfg = smoke_config_with(
        model={"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0},
        data=TINY_DATA | {"n_train_sequences": 512, "n_val_sequences": 32},
        train={
            "n_micro": 2, "log_interval": 2, "warmup_steps": 3, "min_lr_ratio": 0.1,
            "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8,
            "grad_clip": 1.0, "curvature": "fisher", "checkpoint_interval": 2,
        },
    )  # fmt: skip
    corpus = build_corpus(cfg["data"], cfg["model"]["block_size"])
    specs = {
        (s.condition, s.seed): replace(
            s,
            target_val_loss=0.0,
            token_cap=STEPS * s.global_batch * 16,
            validation=(512, 256, 0.5),
        )
        for s in expand_design(load_plan(REPO / "preregistration/plan.yaml"), "smoke")
    }
    traces = {}
    for spec in specs.values():
        if spec.role == "reference" or spec.condition in ("bs4_fixed", "bs8_fixed"):
            if spec.seed == 0:
                traces[spec.condition] = train_run(spec, cfg, corpus, show_progress=False)[1].trace
    return cfg, corpus, specs, traces


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("condition", [*ONE_PER_FORM, "inj_gaussian_bs8 with lead"])
def test_arm_is_deterministic_and_resumes_to_the_same_trace(tiny, condition, tmp_path, monkeypatch):
    import training.train as train_module

    cfg, corpus, specs, traces = tiny
    spec = specs[(condition.removesuffix(" with lead"), 0)]
    if condition.endswith(" with lead"):
        spec = with_controller(spec, **LEAD)
    reference = traces.get(spec.reference)
    model_a, whole = train_run(spec, cfg, corpus, show_progress=False, reference_trace=reference)

    resume = tmp_path / "resume.pt"
    real_lr_at = train_module.lr_at

    def killed(step, *args):
        if step == KILL_AT:
            raise KeyboardInterrupt("simulated kill")
        return real_lr_at(step, *args)

    monkeypatch.setattr(train_module, "lr_at", killed)
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, cfg, corpus, False, resume_path=resume, reference_trace=reference)
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    model_b, resumed = train_run(
        spec, cfg, corpus, False, resume_path=resume, reference_trace=reference
    )
    pd.testing.assert_frame_equal(whole.trace, resumed.trace, check_exact=True)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert whole.noise_control == resumed.noise_control
    form = spec.noise["form"]
    assert whole.noise_control["form"] == form
    if spec.reference is not None:  # controlled: noise was injected and is in the integral
        assert whole.trace["noise_scale"].max() > 0
        assert whole.trace["int_pne_star_injected"].iloc[-1] > 0
        assert whole.noise_control["tracking_error_median"] is not None


LEAD = {"lead": 3, "slope_window": 8, "end_horizon": 2}  # noise.controller keys (issue 22)


def with_controller(spec, **options):
    return replace(spec, noise=spec.noise | {"controller": spec.noise["controller"] | options})


def test_controller_lead_comes_from_the_noise_options(tiny):
    """noise.controller's lead, slope_window and end_horizon reach the controller, with the
    run's target loss as its stop loss; without them it has no lead (the law before D9);
    a bad value stops the run's setup. The plan registers the lead (D9)."""
    cfg, corpus, specs, traces = tiny
    spec, reference = specs[("inj_gaussian_bs8", 0)], traces["bs4_fixed"]
    assert {k: spec.noise["controller"].get(k) for k in LEAD} == LEAD  # as registered
    control = {k: v for k, v in spec.noise["controller"].items() if k not in LEAD}
    spec = replace(spec, noise=spec.noise | {"controller": control})
    plain = setup_run(spec, study_config(cfg), corpus, reference).arm.controller
    assert (plain.lead, plain.slope_window, plain.end_horizon) == (None, None, None)
    lead = setup_run(with_controller(spec, **LEAD), study_config(cfg), corpus, reference)
    controller = lead.arm.controller
    assert (controller.lead, controller.slope_window, controller.end_horizon) == (3, 8, 2)
    assert controller.stop_loss == spec.target_val_loss and plain.stop_loss is None
    with pytest.raises(ValueError, match="slope_window must be an integer"):
        setup_run(with_controller(spec, lead=3, slope_window=2.5), study_config(cfg), corpus,
                  reference)  # fmt: skip


def test_noise_arm_differs_from_its_plain_run(tiny):
    """The same seed without noise options is the batch sweep's run: the noise changes the run."""
    cfg, corpus, specs, traces = tiny
    spec = specs[("inj_gaussian_bs8", 0)]
    plain = replace(spec, noise={}, reference=None, condition="bs8_fixed", arm="batch_sweep")
    noisy = train_run(spec, cfg, corpus, False, reference_trace=traces["bs4_fixed"])[1].trace
    assert plain == specs[("bs8_fixed", 0)]
    assert not noisy["train_loss"].equals(traces["bs8_fixed"]["train_loss"])
    assert noisy["train_loss"].iloc[0] == traces["bs8_fixed"]["train_loss"].iloc[0]  # same data


def test_injected_run_needs_its_reference_trace(tiny):
    cfg, corpus, specs, _ = tiny
    with pytest.raises(ValueError, match="needs the trace of its reference run 'bs4_fixed'"):
        train_run(specs[("inj_gaussian_bs8", 0)], cfg, corpus, show_progress=False)


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_only_noise_options_differ_between_any_two_arms(scale):
    """Resolve every registered run (spec + config as the trainer sees it); any two runs of
    one seed differ in nothing but the noise options and the registered design factors."""
    plan = load_plan(REPO / "preregistration/plan.yaml")
    arm_defs = plan["design"]["arms"]
    # The regression family is another task (its own data, model head and target), not a
    # noise manipulation of the language runs; it is compared with nothing here.
    specs = [
        s for s in expand_design(plan, scale)
        if arm_defs[s.arm].get("family", "language") == "language"
    ]  # fmt: skip
    arms = {s.arm for s in specs}
    assert arms == {"batch_sweep", "noise_injection", "phase_schedule", "precond_freeze",
                    "sgld", "nap"}  # fmt: skip
    for a, b in itertools.combinations(specs, 2):
        if a.seed != b.seed:
            continue
        da, db = a.as_dict(), b.as_dict()
        differ = {k for k in da if da[k] != db[k]}
        # the NAP runs' own token cap (D8), where the scale registers one
        allowed = MAY_DIFFER | ({"token_cap"} if "nap" in (a.arm, b.arm) else set())
        assert differ <= allowed, f"{a.run_id} vs {b.run_id} differ in {differ - allowed}"
    largest = max(s.global_batch for s in specs)
    for spec in specs:
        if spec.arm != "batch_sweep" and spec.role == "condition":
            assert spec.global_batch == largest and spec.lr_rule == "fixed", spec.run_id
            assert spec.noise.get("form"), spec.run_id
    keys = [(s.condition, s.seed) for s in specs]
    assert len(keys) == len(set(keys))  # a run registered by two arms is run once


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_nap_token_cap_applies_to_the_nap_runs_only(scale):
    """A scale's nap_token_cap (D8) is the NAP runs' token cap; their references and every
    other run keep the scale's, and without one the NAP runs have the scale's too."""
    plan = load_plan(REPO / "preregistration/plan.yaml")
    block = plan["design"]["scales"][scale]
    own = block["arms"]["nap"].get("nap_token_cap", block["token_cap"])
    specs = expand_design(plan, scale)
    nap = [s for s in specs if s.arm == "nap" and s.role == "condition"]
    assert nap and all(s.token_cap == own for s in nap)
    references = {(s.reference, s.seed) for s in nap}
    for spec in specs:
        if (spec.condition, spec.seed) in references:
            assert spec.token_cap == block["token_cap"], spec.run_id
    language = [s for s in specs if s.arm not in ("nap", "regression_sweep")]
    assert {s.token_cap for s in language} == {block["token_cap"]}


def test_curvature_proxies_are_measurements_only(tiny):
    """A run that logs the extra curvature proxies trains exactly as one that does not
    (config train.curvature_proxy_arms), so logging them in some arms only varies no
    more than the measurement; the proxy columns are there only where they are logged."""
    cfg, corpus, specs, traces = tiny
    spec = specs[("inj_gaussian_bs8", 0)]
    proxies = ["ggn", "true_fisher", "hessian"]
    runs = {}
    for arms in (["noise_injection"], ["batch_sweep"]):
        run_cfg = cfg | {
            "train": cfg["train"] | {"curvature_proxies": proxies, "curvature_proxy_arms": arms}
        }
        model, result = train_run(
            spec, run_cfg, corpus, show_progress=False, reference_trace=traces["bs4_fixed"]
        )
        runs[arms[0]] = model, result.trace
    (with_model, with_trace), (without_model, without_trace) = runs.values()
    assert with_trace["trace_pgp_ggn"].notna().all()
    assert with_trace["trace_php_hessian"].notna().all()
    assert without_trace["trace_pgp_ggn"].isna().all()
    training = ["step", "tokens", "train_loss", "grad_norm", "val_loss", "trace_pcp",
                "int_pne_star", "noise_scale"]  # fmt: skip
    pd.testing.assert_frame_equal(with_trace[training], without_trace[training], check_exact=True)
    for a, b in zip(with_model.state_dict().values(), without_model.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
