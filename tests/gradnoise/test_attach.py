"""``gradnoise.tap.attach``: the manual logger's records from hooks; a refusal where they differ.

The model and data are tests/gradnoise/test_pne_exact.py's (149 parameters). Equalities
here are up to float rounding, not sampling error: hook mode and manual mode see
the same micro-batch gradients of the same trajectory (the hooks never change
training), read once as increments and once as differences of ``.grad``
snapshots, so the records agree to about 1e-6 relative; 1e-4 is the tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_pne_exact import MICRO, make_data, make_model

from gradnoise.estimation.logger import NoiseLogger
from gradnoise.injection.gradient_noise import GradientNoise
from gradnoise.tap import NoiseTap, attach

MAX_NORM, RTOL = 0.5, 1e-4
INPUTS, LABELS = make_data()

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def micro_loss(model, idx: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(INPUTS[idx]), LABELS[idx], reduction=reduction)


def train(n_micro: int, steps: int, *, manual: bool = False, log_interval: int = 3,
          max_norm: float | None = MAX_NORM, scaler=None, inf_at: int | None = None,
          inject: float = 0.0, every_hook: bool = False,
          **options) -> NoiseTap | list[dict]:  # fmt: skip
    """Adam on the small classifier; the tap's records, or the manual logger's (``manual``).

    ``inf_at``: the iteration whose last micro-batch loss is made infinite (a GradScaler
    skips that step; the unscaled reference run just draws and drops its batch).
    ``inject``: scale s of Gaussian noise s * diag(1e-4) added to ``.grad`` and declared.
    ``every_hook``: the tap keeps every parameter's hook on at every step (no sentinels).
    """
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    noise = GradientNoise(model.parameters(), "gaussian", seed=3) if inject else None
    if manual:
        logger = NoiseLogger(model, optimizer, n_micro=n_micro, micro_batch_size=MICRO,
                             log_interval=log_interval, **options)  # fmt: skip
        records = []
    else:
        tap = attach(model, optimizer, n_micro=n_micro, log_interval=log_interval,
                     scaler=scaler, **options)  # fmt: skip
        if every_hook:
            tap._next_step_hooks = lambda step: None
    gen, step = torch.Generator().manual_seed(5), 0
    for iteration in range(1, steps + 1):
        idx = torch.randperm(len(INPUTS), generator=gen)[: n_micro * MICRO]
        if iteration == inf_at and scaler is None:
            continue  # the reference run: the batch the scaled run loses to its skipped step
        step += 1
        if manual:
            logger.begin_step(step)
        for j in range(n_micro):
            loss = micro_loss(model, idx[j * MICRO : (j + 1) * MICRO]) / n_micro
            if iteration == inf_at and j == n_micro - 1:
                loss = loss * math.inf
            (loss if scaler is None else scaler.scale(loss)).backward()
            if manual:
                logger.after_micro_backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        if noise is not None:
            cov = noise.inject(
                inject, diag=torch.full((sum(p.numel() for p in model.parameters()),), 1e-4)
            )
            (logger if manual else tap).add_injected(cov)
        norm = math.inf
        if max_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
        if scaler is not None:
            scaler.update()
        if manual:
            clip = 1.0 if max_norm is None else min(1.0, max_norm / (norm + 1e-6))
            record = logger.after_update(1e-2, norm, clip)
            records.append(record) if record is not None else None
        optimizer.zero_grad(set_to_none=True)
    return records if manual else tap


def assert_same_records(tapped: list[dict], manual: list[dict]) -> None:
    """Every column of every logging step, and every per-layer row, within RTOL."""
    assert len(tapped) == len(manual) > 0
    for t, m in zip(tapped, manual, strict=True):
        assert t.keys() == m.keys()
        for key in t:
            if key == "layers":
                for lt, lm in zip(t[key], m[key], strict=True):
                    for col, value in lm.items():
                        assert lt[col] == _approx(value), f"layer {lm['layer']} {col}"
            else:
                assert t[key] == _approx(m[key]), key


def _approx(value):
    if isinstance(value, float):
        return pytest.approx(value, rel=RTOL, abs=1e-12, nan_ok=True)
    return value


@pytest.mark.parametrize("streaming", [False, True], ids=["rows", "streaming"])
@pytest.mark.parametrize("n_micro", [2, 8])
def test_hook_records_equal_manual_records(n_micro, streaming):
    tap = train(n_micro, 10, streaming=streaming)
    manual = train(n_micro, 10, manual=True, streaming=streaming)
    assert tap.step == 10 and tap.skipped_steps == 0
    assert_same_records(tap.records, manual)
    assert tap.logger.micro_batch_size == MICRO  # read from the forward pass
    assert any(r["clip_rate"] > 0 for r in manual)  # clipping was active: c_t read, not assumed


@pytest.mark.parametrize("streaming", [False, True], ids=["rows", "streaming"])
def test_declared_injected_noise_equals_manual_mode(streaming):
    tap = train(4, 6, inject=3.0, max_norm=None, log_interval=1, streaming=streaming)
    manual = train(4, 6, manual=True, inject=3.0, max_norm=None, log_interval=1,
                   streaming=streaming)  # fmt: skip
    assert_same_records(tap.records, manual)
    assert tap.records[-1]["int_pne_star_injected"] > 0


def test_undeclared_noise_in_grad_raises():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    attach(model, optimizer, n_micro=2)
    for j in range(2):
        (micro_loss(model, torch.arange(j * MICRO, (j + 1) * MICRO)) / 2).backward()
    for p in model.parameters():
        p.grad.add_(torch.randn_like(p) * 0.1)
    with pytest.raises(RuntimeError, match="add_injected"):
        optimizer.step()


@pytest.mark.parametrize("streaming", [False, True], ids=["rows", "streaming"])
def test_grad_scaler_records_equal_unscaled_and_skipped_step_is_not_logged(streaming):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    # iteration 4 would be logging step 4: its inf gradient must be dropped, not logged
    tap = train(4, 9, scaler=scaler, inf_at=4, log_interval=2, streaming=streaming)
    manual = train(4, 9, manual=True, inf_at=4, log_interval=2, streaming=streaming)
    assert tap.skipped_steps == 1 and tap.step == 8
    assert scaler.get_scale() == 2.0**15  # the scaler did back off once
    assert_same_records(tap.records, manual)


def _two_backwards(model, n: int) -> None:
    for j in range(n):
        (micro_loss(model, torch.arange(j * MICRO, (j + 1) * MICRO)) / 2).backward()


def test_wrong_number_of_backward_passes_raises():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    attach(model, optimizer, n_micro=2)
    _two_backwards(model, 1)
    with pytest.raises(RuntimeError, match="after 1 backward passes, n_micro=2"):
        optimizer.step()
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    attach(model, optimizer, n_micro=2)
    with pytest.raises(RuntimeError, match="backward pass 3 in step 1"):
        _two_backwards(model, 3)


def _zero_grad_between(model, optimizer) -> None:
    for j in range(2):
        optimizer.zero_grad()
        (micro_loss(model, torch.arange(j * MICRO, (j + 1) * MICRO)) / 2).backward()


def _clip_by_value(model, optimizer) -> None:
    _two_backwards(model, 2)
    torch.nn.utils.clip_grad_value_(model.parameters(), 1e-3)


def _undeclared_scaler(model, optimizer) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for j in range(2):
        scaler.scale(micro_loss(model, torch.arange(j * MICRO, (j + 1) * MICRO)) / 2).backward()
    scaler.unscale_(optimizer)


@pytest.mark.parametrize("streaming", [False, True], ids=["rows", "streaming"])
@pytest.mark.parametrize(
    "tamper, message",
    [
        (_zero_grad_between, "not the sum of the micro-batch gradients"),
        (_clip_by_value, "not the sum of the micro-batch gradients"),
        (_undeclared_scaler, "scaler="),
    ],
    ids=["zero_grad_between", "clip_by_value", "undeclared_scaler"],
)
def test_grad_changed_between_backward_and_step_raises(tamper, message, streaming):
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    tap = attach(model, optimizer, n_micro=2, streaming=streaming)
    tamper(model, optimizer)
    with pytest.raises(RuntimeError, match=message):
        optimizer.step()  # step 1 logs: the check runs
    assert tap.records == []


@pytest.mark.parametrize("streaming", [False, True], ids=["rows", "streaming"])
def test_summed_loss_declared_sum_equals_mean_loss(streaming):
    """A loss summed over the step's m K examples, declared "sum", gives the mean loss's records.

    Adam's update and P_t scale with the gradient's units (P_t by 1 / (m K) here, eps
    aside), so P-NE, P-NE* and every trace under P are the same for both losses; the two
    unpreconditioned columns are per example of the loss under either declaration.
    """

    def run(reduction: str, declared: str | None = None) -> list[dict]:
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-12)
        tap = attach(model, optimizer, n_micro=4, loss_reduction=declared or reduction,
                     log_interval=1, streaming=streaming)  # fmt: skip
        gen = torch.Generator().manual_seed(5)
        for _ in range(6):
            idx = torch.randperm(len(INPUTS), generator=gen)[: 4 * MICRO]
            for j in range(4):
                loss = micro_loss(model, idx[j * MICRO : (j + 1) * MICRO], reduction)
                (loss / 4 if reduction == "mean" else loss).backward()
            optimizer.step()
            optimizer.zero_grad()
        return tap.records

    mean = run("mean")
    assert_same_records(run("sum"), mean)
    # The limit the docstring of attach states: a mean loss declared "sum" is a consistent
    # rescaling nothing can tell; P-NE stays right, trace_cov and grad_sq are off by (m K)^2.
    misdeclared = run("mean", declared="sum")
    for wrong, right in zip(misdeclared, mean, strict=True):
        assert wrong["pne"] == pytest.approx(right["pne"], rel=RTOL)
        assert wrong["trace_cov"] == pytest.approx(right["trace_cov"] / (4 * MICRO) ** 2, rel=RTOL)
        assert wrong["grad_sq"] == pytest.approx(right["grad_sq"] / (4 * MICRO) ** 2, rel=RTOL)


def test_clip_coefficient_is_read_from_the_gradient_norms():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    tap = attach(model, optimizer, n_micro=2, log_interval=1)
    gen = torch.Generator().manual_seed(0)
    for max_norm in (1e-3, 1e3, None, 1e-3):
        idx = torch.randperm(len(INPUTS), generator=gen)[: 2 * MICRO]
        _two_backwards_of(model, idx)
        norm = math.nan
        if max_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        optimizer.step()
        optimizer.zero_grad()
        if max_norm is None or max_norm > norm:
            assert tap.last_clip_coef == 1.0  # exactly: no clip counted
        else:
            assert tap.last_clip_coef == pytest.approx(max_norm / (norm + 1e-6), rel=1e-5)
            assert tap.last_grad_norm == pytest.approx(norm, rel=1e-5)
        record = tap.records[-1]
        assert record["pne_eff"] == pytest.approx(tap.last_clip_coef**2 * record["pne"])
    assert tap.records[-1]["clip_rate"] == 1.0 and tap.records[-2]["clip_rate"] == 0.0


def _two_backwards_of(model, idx: torch.Tensor) -> None:
    for j in range(2):
        (micro_loss(model, idx[j * MICRO : (j + 1) * MICRO]) / 2).backward()


def test_zero_gradient_has_clip_coefficient_one():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    tap = attach(model, optimizer, n_micro=2, log_interval=1)
    for _ in range(2):
        for j in range(2):
            (0.0 * micro_loss(model, torch.arange(j * MICRO, (j + 1) * MICRO))).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        optimizer.step()
        optimizer.zero_grad()
    assert tap.last_grad_norm == 0.0 and tap.last_clip_coef == 1.0
    assert tap.records[-1]["trace_pcp"] == 0.0 and tap.records[-1]["pne_eff"] == 0.0


def test_detach_removes_every_hook():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with attach(model, optimizer, n_micro=2, log_interval=1) as tap:
        _two_backwards(model, 2)
        optimizer.step()
        optimizer.zero_grad()
    assert tap.step == 1 and len(tap.records) == 1
    _two_backwards(model, 3)  # no count checked any more
    optimizer.step()
    assert tap.step == 1 and len(tap.records) == 1


def test_attach_rejects_bad_arguments():
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="loss_reduction"):
        attach(model, optimizer, n_micro=2, loss_reduction="average")
    with pytest.raises(TypeError, match="unknown NoiseLogger option"):
        attach(model, optimizer, n_micro=2, log_intervall=5)
    with pytest.raises(ValueError, match="DistributedDataParallel"):
        attach(model, optimizer, n_micro=2, world_size=2)


@pytest.mark.parametrize("options", [{}, {"streaming": True}], ids=["standard", "streaming"])
def test_steps_that_do_not_log_run_two_hooks_per_pass_and_keep_the_records(options, monkeypatch):
    # Every parameter's hook on logging steps; on the others only the two sentinels
    # (the first and last parameter to get a gradient), so an idle step costs two
    # Python calls per pass. The records, whose integrals run over every step, are
    # those of the same tap with every hook on at every step.
    n_micro, log_interval, steps = 4, 4, 9
    n_params = len(list(make_model().parameters()))
    kept_on = train(n_micro, steps, log_interval=log_interval, every_hook=True, **options)
    calls: list[int] = []
    cls = type(kept_on)
    real = cls._on_grad
    monkeypatch.setattr(
        cls, "_on_grad", lambda self, i, g: (calls.append(self.step + 1), real(self, i, g))[1]
    )
    tap = train(n_micro, steps, log_interval=log_interval, **options)
    for step in range(1, steps + 1):
        logs = tap.logger.is_log_step(step)
        assert calls.count(step) == n_micro * (n_params if logs else 2), (step, logs)
    assert not all(tap.logger.is_log_step(s) for s in range(1, steps + 1))
    assert_same_records(tap.records, kept_on.records)
