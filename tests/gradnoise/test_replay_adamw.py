"""The functional AdamW step equals torch.optim.AdamW (issue 21 items 2 and 7).

50 steps in float64 on a small model with random gradients, with and without weight
decay, with the learning rate changed every step: the parameters and both moments agree
to 1e-12. Also: the hyper-parameters and state read from a real AdamW, the frozen second
moment against gradnoise.injection.frozen_adamw_step, and the refusals.
"""

from __future__ import annotations

import pytest
import torch

from gradnoise.injection import frozen_adamw_step
from gradnoise.replay import AdamState, adamw_from_optimizer, adamw_step

TOL = 1e-12


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    return model.double()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize(
    ("weight_decay", "lr_changes", "foreach"),
    [(0.0, False, False), (0.1, False, False), (0.1, True, False), (0.05, True, True)],
)
def test_adamw_step_equals_torch_over_50_steps(weight_decay, lr_changes, foreach):
    model = small_model()
    betas, eps = (0.9, 0.95), 1e-8
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-2, betas=betas, eps=eps, weight_decay=weight_decay,
        foreach=foreach,
    )  # fmt: skip
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    state = AdamState.zeros_like(params)
    gen = torch.Generator().manual_seed(1)
    for step in range(1, 51):
        lr = 1e-2 * (1 + 0.5 * torch.rand((), generator=gen).item()) if lr_changes else 1e-2
        opt.param_groups[0]["lr"] = lr
        grads = {
            k: torch.randn(p.shape, generator=gen, dtype=torch.float64) * 10 ** (step % 3 - 1)
            for k, p in params.items()
        }
        for k, p in model.named_parameters():
            p.grad = grads[k].clone()
        opt.step()
        params, state = adamw_step(params, grads, state, lr, betas, eps, weight_decay, step)
    torch_params = {k: p.detach() for k, p in model.named_parameters()}
    by_name = dict(model.named_parameters())
    m = {k: opt.state[by_name[k]]["exp_avg"] for k in params}
    v = {k: opt.state[by_name[k]]["exp_avg_sq"] for k in params}
    assert max_diff(params, torch_params) < TOL
    assert max_diff(state.exp_avg, m) < TOL
    assert max_diff(state.exp_avg_sq, v) < TOL


def test_a_wrong_bias_correction_is_caught():
    """The comparison can fail: the step number off by one differs from torch by far more."""
    model = small_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    grads = {k: torch.randn_like(p) for k, p in params.items()}
    for k, p in model.named_parameters():
        p.grad = grads[k].clone()
    opt.step()
    wrong, _ = adamw_step(
        params, grads, AdamState.zeros_like(params), 1e-2, (0.9, 0.999), 1e-8, 0.1, 2
    )
    assert max_diff(wrong, {k: p.detach() for k, p in model.named_parameters()}) > 1e-4


def test_read_from_optimizer_and_continue():
    """adamw_from_optimizer's state, stepped functionally, stays equal to torch's optimizer."""
    model = small_model(3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.8, 0.99), weight_decay=0.02)
    gen = torch.Generator().manual_seed(2)

    def draw():
        return {
            k: torch.randn(p.shape, generator=gen, dtype=p.dtype)
            for k, p in model.named_parameters()
        }

    for _ in range(5):
        for k, p in model.named_parameters():
            p.grad = draw()[k]
        opt.step()
    hyper, lr, params, state, done = adamw_from_optimizer(opt, model)
    assert (done, lr, hyper.betas, hyper.weight_decay) == (5, 3e-3, (0.8, 0.99), 0.02)
    for step in range(done + 1, done + 11):
        grads = draw()
        for k, p in model.named_parameters():
            p.grad = grads[k].clone()
        opt.step()
        params, state = adamw_step(
            params, grads, state, lr, hyper.betas, hyper.eps, hyper.weight_decay, step
        )
    assert max_diff(params, {k: p.detach() for k, p in model.named_parameters()}) < TOL


def test_groups_that_differ_in_weight_decay_only():
    """No decay on biases (the nanoGPT groups): read per parameter, equal to torch's steps."""
    model = small_model(4)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": 0.1}, {"params": vectors, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(5)
    draw = lambda: {  # noqa: E731
        k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in model.named_parameters()
    }
    for k, p in model.named_parameters():
        p.grad = draw()[k]
    opt.step()
    hyper, lr, params, state, done = adamw_from_optimizer(opt, model)
    assert hyper.weight_decay == {"0.weight": 0.1, "0.bias": 0.0, "2.weight": 0.1, "2.bias": 0.0}
    for step in range(done + 1, done + 21):
        grads = draw()
        for k, p in model.named_parameters():
            p.grad = grads[k].clone()
        opt.step()
        params, state = adamw_step(
            params, grads, state, lr, hyper.betas, hyper.eps, hyper.weight_decay, step
        )
    assert max_diff(params, {k: p.detach() for k, p in model.named_parameters()}) < TOL
    # one decay for all would differ: the biases would shrink
    wrong, _ = adamw_step(params, grads, state, lr, hyper.betas, hyper.eps, 0.1, done + 21)
    right, _ = adamw_step(
        params, grads, state, lr, hyper.betas, hyper.eps, hyper.weight_decay, done + 21
    )
    assert max_diff(wrong, right) > 1e-6


def test_frozen_second_moment_equals_the_freeze_arm():
    model = small_model(4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    hyper, lr, params, state, done = adamw_from_optimizer(opt, model)
    grads = {k: torch.randn_like(p) for k, p in params.items()}
    for k, p in model.named_parameters():
        p.grad = grads[k].clone()
    frozen_adamw_step(opt)
    new, new_state = adamw_step(
        params, grads, state, lr, hyper.betas, hyper.eps, hyper.weight_decay, done + 1,
        freeze_second_moment=True,
    )  # fmt: skip
    assert max_diff(new, {k: p.detach() for k, p in model.named_parameters()}) < TOL
    assert max_diff(new_state.exp_avg_sq, state.exp_avg_sq) == 0


def test_refusals():
    model = small_model()
    params = {k: p.detach() for k, p in model.named_parameters()}
    with pytest.raises(ValueError, match="amsgrad"):
        adamw_step(
            params,
            params,
            AdamState.zeros_like(params),
            1e-3,
            (0.9, 0.99),
            1e-8,
            0.0,
            1,
            amsgrad=True,
        )
    with pytest.raises(ValueError, match="amsgrad"):
        adamw_from_optimizer(torch.optim.AdamW(model.parameters(), amsgrad=True), model)
    with pytest.raises(ValueError, match="coupled"):
        adamw_from_optimizer(torch.optim.Adam(model.parameters(), weight_decay=0.1), model)
    with pytest.raises(TypeError):
        adamw_from_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)
