"""Simulation-based power of H2's late - early contrast (DESIGN §5; plan ``hypotheses.H2``).

Each simulated study has the registered phase design: every seed runs every budget
level early and late; the contrast test is that of
``analysis.hypotheses.h2_phase.late_minus_early``, computed from the simulated within-seed
differences (``tests/analysis/test_power.py`` checks it against the noncentral t and against
``late_minus_early`` on simulated runs). ``analysis.exploratory.power.seeds_needed`` uses it with
the pilot's residual SD. The simulated studies, the rejection rule and the Monte-Carlo
SE are ``analysis.stats.monte_carlo``'s, shared with ``analysis.exploratory.power``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats.inputs import require_alternative, require_probability
from analysis.stats.monte_carlo import rejection_rate, rejections, simulate_studies


def simulate_phase_contrasts(
    effect: float,
    sd_resid: float,
    n_seeds: int,
    n_budgets: int,
    n_sim: int,
    alpha: float = 0.05,
    alternative: str = "greater",
    random_state: int = 0,
) -> np.ndarray:
    """Rejections (one per simulated study) of H2's late - early contrast test.

    Each study: ``n_seeds`` seeds x ``n_budgets`` budget levels x {early, late},
    y = mu_budget + effect * [late] + u_seed + e, e ~ N(0, sd_resid^2). The test is
    ``analysis.hypotheses.h2_phase.late_minus_early``: per seed d_s = mean over budgets of
    y_late - y_early (the seed and budget terms cancel), t = mean(d) / (s_d /
    sqrt(n)) on n - 1 df. The mid phase does not enter the contrast.
    """
    if n_seeds < 2 or n_budgets < 1:
        raise ValueError("simulate_phase_contrasts: needs >= 2 seeds and >= 1 budget level")
    rng = np.random.default_rng(random_state)
    # The seed and budget terms cancel in d and the effect enters it additively, so the
    # cells (budget x {early, late}) are simulated around 0, with no seed intercept, and
    # the effect is added to d.
    y = simulate_studies(np.zeros(2 * n_budgets), n_seeds, None, sd_resid, n_sim, rng)
    y = y.reshape(n_sim, n_seeds, n_budgets, 2)
    d = effect + (y[..., 1] - y[..., 0]).mean(-1)  # (n_sim, n_seeds)
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n_seeds))
    return rejections(t, n_seeds - 1, alpha, alternative)


def power_h2(
    effect: float,
    sd_resid: float,
    n_seeds: int,
    n_budgets: int = 2,
    alpha: float = 0.05,
    alternative: str = "greater",
    n_sim: int = 4000,
    random_state: int = 0,
) -> pd.DataFrame:
    """Power of H2's registered late - early contrast with ``n_seeds`` seeds.

    Returns
    -------
    pandas.DataFrame
        One row: ``n_seeds``, ``n_budgets``, ``effect``, ``sd_resid``, ``power``,
        ``mc_se``, ``n_sim``.

    Notes
    -----
    :math:`d_s \\sim N(\\Delta, 2\\sigma^2 / L)` with L budget levels, so the power
    is that of a one-sample t test with noncentrality
    :math:`\\Delta \\sqrt{n L / 2} / \\sigma` (``tests/analysis/test_power.py`` checks the
    simulation against it and against ``late_minus_early`` on simulated runs).
    The seed intercept cancels within seed, so only the residual SD enters.
    """
    func = "power_h2"
    require_alternative(alternative, func)
    require_probability(alpha, "alpha", func)
    reject = simulate_phase_contrasts(
        effect, sd_resid, n_seeds, n_budgets, n_sim, alpha, alternative, random_state
    )
    row = {"n_seeds": n_seeds, "n_budgets": n_budgets, "effect": effect, "sd_resid": sd_resid}
    return pd.DataFrame([row | rejection_rate(reject)])
