"""Properties of the P-NE logger that hold exactly or by construction (DESIGN §2, seed 003).

Clipping changes effective, not potential, exposure; SGD has P = I and Adam's P
is the factor its update applied; the held estimate is integrated with each
step's own learning rate; a resumed logger equals an uninterrupted one; logging
does not change training; the Hill estimator recovers Student-t tail indices;
the randomized sketch recovers a planted low-rank spectrum.
"""

from __future__ import annotations

import math

import pytest
import torch

from gradnoise.estimation.formulas import b_simple, curvature_floor, pne_star, preconditioner
from gradnoise.estimation.logger import NoiseLogger
from gradnoise.estimation.spectrum import (
    count_sketch,
    effective_rank,
    gram_spectrum,
    hill_k,
    hill_tail_index,
    largest_abs,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class LinearProbe(torch.nn.Module):
    """loss = mean_i <w, x_i>: each example's gradient is exactly its input x_i."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w).mean()


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def classification_data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    return x, (x[:, 0] + 0.5 * torch.randn(n, generator=gen) > 0).long() + (x[:, 1] > 1).long()


def train_step(model, optimizer, logger, step, batch, n_micro, lr, max_norm=None):
    """Optimizer step ``step`` as the trainer takes it (``logger`` may be None).

    Returns (record, clip_coef).
    """
    x, y = batch
    micro = x.shape[0] // n_micro
    if logger is not None:
        logger.begin_step(step)
    for j in range(n_micro):
        part = slice(j * micro, (j + 1) * micro)
        loss = torch.nn.functional.cross_entropy(model(x[part]), y[part]) / n_micro
        loss.backward()
        if logger is not None:
            logger.after_micro_backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm or math.inf))
    clip_coef = min(1.0, max_norm / (norm + 1e-6)) if max_norm else 1.0
    optimizer.step()
    record = logger.after_update(lr, norm, clip_coef) if logger is not None else None
    optimizer.zero_grad()
    return record, clip_coef


def batches(count: int, size: int, seed: int = 0):
    x, y = classification_data()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        idx = torch.randperm(x.shape[0], generator=gen)[:size]
        yield x[idx], y[idx]


def test_clipping_changes_effective_but_not_potential_exposure():
    """Clipping .grad in place must not reach the potential estimate.

    Effective exposure is sum_s lr_s c_s^2 held_s; potential is the same with c = 1.
    """
    n_micro, lrs = 4, [0.1 * (1 + s) for s in range(8)]
    max_norms = [None, 0.05, None, 0.02, 0.05, None, 0.01, 0.03]
    runs = {}
    for clipped in (False, True):
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # frozen: same states in both runs
        logger = NoiseLogger(model, optimizer, n_micro=n_micro, micro_batch_size=8, log_interval=4)
        held, clips, records = [], [], []
        for step, (batch, lr, max_norm) in enumerate(
            zip(batches(8, 32), lrs, max_norms, strict=True), 1
        ):
            record, clip = train_step(
                model, optimizer, logger, step, batch, n_micro, lr, max_norm if clipped else None
            )
            held.append(logger.step_traces["trace_pcp"])
            clips.append(clip)
            records.append(record)
        runs[clipped] = (records, held, clips, logger.sums)
    (_, held, _, sums_plain), (clip_records, held_c, clips, sums_clip) = runs[False], runs[True]
    assert sum(c < 1 for c in clips) == 5, "the test needs clipped and unclipped steps"
    assert held_c == held, "clipping .grad changed the potential (unclipped) estimate"
    assert sums_clip["int_pne"] == pytest.approx(sums_plain["int_pne"], rel=1e-12)
    expected_eff = sum(lr * c**2 * h for lr, c, h in zip(lrs, clips, held, strict=True))
    assert sums_clip["int_pne_eff"] == pytest.approx(expected_eff, rel=1e-12)
    assert sums_clip["int_pne_eff"] < 0.9 * sums_clip["int_pne"]
    assert sums_plain["int_pne_eff"] == pytest.approx(sums_plain["int_pne"], rel=1e-12)
    logged = [r for r in clip_records if r is not None]  # steps 1, 2, 4, 8
    assert [r["clip_rate"] for r in logged] == [0.0, 1.0, 1 / 2, 3 / 4]
    assert logged[-1]["pne_eff"] == pytest.approx(clips[-1] ** 2 * logged[-1]["pne"], rel=1e-12)
    assert logged[-1]["pne_star_eff"] == pytest.approx(
        clips[-1] ** 2 * logged[-1]["pne_star"], rel=1e-12
    )


def test_sgd_preconditioner_is_identity():
    """With SGD, P = I: Tr(P C P)/B = Tr(C)/B and Tr(P F P) = Tr(C) + |G|^2."""
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    logger = NoiseLogger(model, optimizer, n_micro=4, micro_batch_size=8)
    record, _ = train_step(model, optimizer, logger, 1, next(batches(1, 32)), 4, 0.01)
    assert torch.equal(logger.last_precond, torch.ones_like(logger.last_precond))
    assert record["trace_pcp"] == pytest.approx(record["trace_cov"] / 32, rel=1e-6)
    assert record["trace_pfp"] == pytest.approx(record["trace_cov"] + record["grad_sq"], rel=1e-6)


def test_adam_preconditioner_is_the_factor_the_update_applied():
    """Adam with beta1 = 0 updates by -lr * P * g: P = -delta / (lr * g) for the step just taken."""
    model = mlp()
    lr = 1e-2
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.0, 0.95), weight_decay=0.0)
    logger = NoiseLogger(model, optimizer, n_micro=4, micro_batch_size=8, log_interval=2)
    for step, batch in enumerate(batches(4, 32), start=1):
        before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
        logger.begin_step(step)
        x, y = batch
        for j in range(4):
            loss = torch.nn.functional.cross_entropy(
                model(x[j * 8 : (j + 1) * 8]), y[j * 8 : (j + 1) * 8]
            )
            (loss / 4).backward()
            logger.after_micro_backward()
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        optimizer.step()
        record = logger.after_update(lr, 1.0, 1.0)
        after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        optimizer.zero_grad()
        if record is None:
            continue
        usable = grads.abs() > 1e-3 * grads.abs().max()
        applied = -(after - before)[usable] / (lr * grads[usable])
        torch.testing.assert_close(logger.last_precond[usable], applied, rtol=2e-3, atol=0)


def test_held_noise_is_integrated_under_each_steps_own_precond_and_lr():
    """Between logging steps the noise diagonal diag(C) is held; every step applies its own
    P_t (recomputed here from Adam's state) and eta_t (DESIGN §2; issue 8, item 2)."""
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logger = NoiseLogger(
        model, optimizer, n_micro=2, micro_batch_size=16, log_interval=5, precond_interval=1
    )
    lrs = [1e-3 * (1 + 0.3 * math.sin(s)) for s in range(12)]
    expected, logged_steps = [], []
    for step, (batch, lr) in enumerate(zip(batches(12, 32), lrs, strict=True), start=1):
        record, _ = train_step(model, optimizer, logger, step, batch, 2, lr)
        precond = torch.cat([p.reshape(-1) for p in preconditioner(optimizer, logger.params)])
        cov, fisher = logger.integral.held[0].double(), logger.integral.held[1].double()
        trace = float((precond.double() ** 2 * cov).sum()) / 32
        curvature = float((precond.double() ** 2 * fisher).sum())
        expected.append((lr, trace, curvature))
        assert logger.step_traces["trace_pcp"] == pytest.approx(trace, rel=1e-5)
        if record is not None:
            logged_steps.append(step)
            assert record["trace_pcp"] == pytest.approx(trace, rel=1e-5)
    assert logged_steps == [1, 2, 4, 5, 10], "dense early (1, 2, 4 < N), then every N-th"
    assert logger.sums["int_pne"] == pytest.approx(sum(lr * t for lr, t, _ in expected), rel=1e-5)
    assert logger.sums["int_pne_eta2"] == pytest.approx(
        sum(lr**2 * t for lr, t, _ in expected), rel=1e-5
    )
    assert logger.sums["int_pne_star"] == pytest.approx(
        sum(lr * t / f for lr, t, f in expected), rel=1e-5
    )
    assert len({t for _, t, _ in expected}) == 12, "P_t changes the held trace every step"


def test_precond_is_refreshed_at_logging_steps_and_every_rth_step():
    """precond_interval = 4: the integrand takes a fresh P at steps 1, 2, 4, 5, 8, 10, 12 (log
    steps and multiples of 4) and repeats the latest traces in between; the sums follow."""
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logger = NoiseLogger(
        model, optimizer, n_micro=2, micro_batch_size=16, log_interval=5, precond_interval=4
    )
    fresh, traces, total = [], [], 0.0
    for step, batch in enumerate(batches(12, 32), start=1):
        train_step(model, optimizer, logger, step, batch, 2, 1e-3)
        precond = torch.cat([p.reshape(-1) for p in preconditioner(optimizer, logger.params)])
        exact = float((precond.double() ** 2 * logger.integral.held[0].double()).sum()) / 32
        value = logger.step_traces["trace_pcp"]
        fresh.append(value == pytest.approx(exact, rel=1e-5))
        traces.append(value)
        total += 1e-3 * value
    assert [s for s, ok in enumerate(fresh, 1) if ok] == [1, 2, 4, 5, 8, 10, 12]
    assert traces[2] == traces[1] and traces[5:7] == [traces[4]] * 2 and traces[8] == traces[7]
    assert logger.sums["int_pne"] == pytest.approx(total, rel=1e-12)


def test_a_forced_logging_step_estimates_and_a_skipped_one_does_not():
    """begin_step(step, log=True/False) overrides the default rule; is_log_step stays the rule."""
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logger = NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=16, log_interval=100)
    assert [s for s in range(1, 301) if logger.is_log_step(s)] == [1, 2, 4, 8, 16, 32, 64, 100,
                                                                    200, 300]  # fmt: skip
    logged = []
    for step, batch in enumerate(batches(7, 32), start=1):
        x, y = batch
        logger.begin_step(step, log={3: True, 4: False}.get(step))
        assert logger.logging == (step in (1, 2, 3))
        for j in range(2):
            part = slice(16 * j, 16 * (j + 1))
            (torch.nn.functional.cross_entropy(model(x[part]), y[part]) / 2).backward()
            logger.after_micro_backward()
        optimizer.step()
        if logger.after_update(1e-3, 1.0, 1.0) is not None:
            logged.append(step)
        optimizer.zero_grad()
    assert logged == [1, 2, 3]


def test_resumed_logger_equals_uninterrupted_one():
    def run(interrupt_at: int | None) -> dict:
        model = mlp()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        make = lambda: NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=16, log_interval=4)  # noqa: E731
        logger = make()
        for step, batch in enumerate(batches(10, 32), start=1):
            if step == interrupt_at:
                state = logger.state_dict()
                logger = make()
                logger.load_state_dict(state)
            train_step(model, optimizer, logger, step, batch, 2, 1e-2, max_norm=0.1)
        return logger.sums

    assert run(interrupt_at=7) == pytest.approx(run(interrupt_at=None), rel=0, abs=0, nan_ok=True)


def test_logging_does_not_change_training():
    """The logger draws no number from the global RNG and leaves .grad and parameters alone."""

    def final_params(with_logger: bool) -> torch.Tensor:
        model = mlp()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        logger = (
            NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=16, log_interval=2)
            if with_logger
            else None
        )
        x, y = classification_data()
        torch.manual_seed(3)
        for step in range(1, 7):
            idx = torch.randperm(x.shape[0])[:32]  # global RNG: data order
            train_step(model, optimizer, logger, step, (x[idx], y[idx]), 2, 1e-2, max_norm=0.5)
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    assert torch.equal(final_params(True), final_params(False))


@pytest.mark.parametrize("df", [2.0, 3.0])
def test_hill_recovers_student_t_tail_index(df):
    """Hill on 10^6 |t_df| draws, k = 1 % of them: within 10 % of df (SE ~ df/100; bias for
    Student-t ~ (k/n)^(2/df), about -3 % at df = 3); a Gaussian reads as far lighter."""
    torch.manual_seed(int(df))
    n = 1_000_000
    draws = torch.distributions.StudentT(df).sample((n,))
    k = hill_k(n, 0.01)
    assert hill_tail_index(largest_abs(draws, k + 1), k) == pytest.approx(df, rel=0.10)
    gaussian = torch.randn(n)
    assert hill_tail_index(largest_abs(gaussian, k + 1), k) > 2 * df


def test_logger_reads_the_tail_index_of_student_t_gradients():
    """Per-example gradients that are Student-t (df = 3) coordinates give a tail index near 3."""
    dim, n_micro, df = 20_000, 32, 3.0
    torch.manual_seed(0)
    model = LinearProbe(dim)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    logger = NoiseLogger(model, optimizer, n_micro=n_micro, micro_batch_size=1)
    examples = torch.distributions.StudentT(df).sample((n_micro, dim))
    logger.begin_step(1)
    for j in range(n_micro):
        (model(examples[j : j + 1]) / n_micro).backward()
        logger.after_micro_backward()
    record = logger.after_update(1.0, 1.0, 1.0)
    assert record["hill_tail_index"] == pytest.approx(df, rel=0.15)


def test_sketch_recovers_planted_low_rank_spectrum():
    """Rows X = V diag(sqrt(lambda)) U^T (orthonormal U, V) have Gram spectrum exactly lambda;
    the CountSketch of width 4096 (Gram entries to ~sqrt(2/4096) = 2 %) recovers it."""
    gen = torch.Generator().manual_seed(0)
    dim, n_rows, planted = 50_000, 12, torch.tensor([100.0, 30.0, 10.0, 3.0])
    u, _ = torch.linalg.qr(torch.randn(dim, 4, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n_rows, 4, generator=gen, dtype=torch.float64))
    rows = (v * planted.double().sqrt()) @ u.T  # (n_rows, dim)
    sketch = count_sketch(rows.float(), 4096, torch.Generator().manual_seed(1))
    spectrum = gram_spectrum(sketch)
    torch.testing.assert_close(spectrum[:4].float(), planted, rtol=0.06, atol=0.0)
    assert float(spectrum[4:].max()) < 0.01 * 100.0
    assert effective_rank(spectrum) == pytest.approx(effective_rank(planted), rel=0.05)


def test_logger_spectrum_matches_the_exact_spectrum_of_its_estimate():
    """Sketched eigenvalues of P C_hat P / B (D = 20000 > width) match exact ones from the data."""
    dim, n_micro, micro = 20_000, 16, 4
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(3, dim, generator=gen) * torch.tensor([[5.0], [2.0], [1.0]])
    examples = torch.randn(n_micro * micro, 3, generator=gen) @ basis + 0.1 * torch.randn(
        n_micro * micro, dim, generator=gen
    )
    model = LinearProbe(dim)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    logger = NoiseLogger(model, optimizer, n_micro=n_micro, micro_batch_size=micro)
    logger.begin_step(1)
    for j in range(n_micro):
        (model(examples[j * micro : (j + 1) * micro]) / n_micro).backward()
        logger.after_micro_backward()
    record = logger.after_update(1.0, 1.0, 1.0)
    means = examples.view(n_micro, micro, dim).mean(1).double()
    rows = (means - means.mean(0)) * math.sqrt(micro / ((n_micro - 1) * n_micro * micro))
    exact = gram_spectrum(rows)
    torch.testing.assert_close(logger.last_spectrum[:3], exact[:3], rtol=0.06, atol=0.0)
    assert record["spectrum_top"] == pytest.approx(float(exact[0]), rel=0.06)
    assert float(exact.sum()) == pytest.approx(record["trace_pcp"], rel=1e-4)


def test_noise_scale_is_infinite_not_nan_when_noise_swamps_signal():
    assert b_simple(2.0, -0.1) == math.inf
    assert b_simple(2.0, 0.0) == math.inf
    assert b_simple(2.0, 0.5) == 4.0


def test_curvature_floor_is_relative_to_the_fisher_trace():
    """The floor scales with Tr(P F_emp P): a rescaled loss (curvature x 1e6) floors alike, and
    a proxy trace <= 0 is replaced by the floor, never used as a denominator (finite P-NE*)."""
    for scale in (1.0, 1e6):
        floor = curvature_floor(1e-6, 2.0 * scale)
        assert pne_star(3.0 * scale, 0.0, floor) == pytest.approx(3.0 / 2e-6)
        assert pne_star(3.0 * scale, -5.0 * scale, floor) == pytest.approx(3.0 / 2e-6)
        assert pne_star(3.0 * scale, 1.5 * scale, floor) == pytest.approx(2.0)
    assert pne_star(0.0, 0.0, curvature_floor(1e-6, 0.0)) == 0.0
    assert math.isnan(pne_star(1.0, math.nan, 1.0))


def test_misuse_raises_with_a_message():
    model = mlp()
    with pytest.raises(TypeError, match="Adam, AdamW and SGD"):
        NoiseLogger(model, torch.optim.RMSprop(model.parameters()), n_micro=2, micro_batch_size=1)
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="at least two micro-batches"):
        NoiseLogger(model, optimizer, n_micro=1, micro_batch_size=8)
    with pytest.raises(ValueError, match="curvature"):
        NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=8, curvature="kfac")
    logger = NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=8)
    with pytest.raises(RuntimeError, match="before begin_step"):
        logger.after_update(1e-3, 1.0, 1.0)
    logger.begin_step(1)
    model(torch.randn(8, 5)).sum().backward()
    logger.after_micro_backward()
    optimizer.step()
    with pytest.raises(RuntimeError, match="saw 1 micro-batch"):
        logger.after_update(1e-3, 1.0, 1.0)
    fresh = NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=8)
    fresh.begin_step(3)  # not a logging step
    with pytest.raises(RuntimeError, match="load_state_dict"):
        fresh.after_update(1e-3, 1.0, 1.0)
    with pytest.raises(ValueError, match="raw Hessian is only reported"):
        NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=8, curvature="hessian")
    hessian = NoiseLogger(model, optimizer, n_micro=2, micro_batch_size=8, proxies=("hessian",))
    hessian.begin_step(1)
    for _ in range(2):
        model(torch.randn(8, 5)).sum().backward()
        hessian.after_micro_backward()
    with pytest.raises(ValueError, match="logits_closure"):
        hessian.after_update(1e-3, 1.0, 1.0)
