"""The Monte Carlo set-up of the power simulations (DESIGN §5).

``analysis.exploratory.power`` (H1, H3) and ``analysis.exploratory.power_phase`` (H2)
simulate studies of the registered design from pilot variance components, apply the
registered test to each and report the share that rejects. The three steps they share live here:

- ``simulate_studies``: the outcomes of simulated studies, seeds x cells, from the
  seed (random-intercept) and residual SDs, drawn from the caller's generator;
- ``rejections``: a t test's rejections at ``alpha`` for the registered sidedness;
- ``rejection_rate``: the power, its binomial Monte-Carlo standard error and the
  number of simulated studies.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def simulate_studies(
    cell_means: np.ndarray,
    n_seeds: int,
    sd_group: float | None,
    sd_resid: float,
    n_sim: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Outcomes of ``n_sim`` simulated studies in which every seed runs every cell.

    Parameters
    ----------
    cell_means : array of shape (n_cells,)
        Expected outcome of each cell (a condition, a budget level and phase, ...).
    n_seeds : int
        Seeds per study.
    sd_group : float or None
        SD of the seed random intercept; None when the test applied is a
        within-seed difference, which cancels it: no intercept is drawn.
    sd_resid : float
        Residual SD.
    n_sim : int
        Simulated studies.
    rng : numpy.random.Generator
        Drawn from in a fixed order: the intercepts, then the residuals.

    Returns
    -------
    numpy.ndarray
        Shape (n_sim, n_seeds, n_cells): y[b, s, c] = cell_means[c] + u[b, s] + e[b, s, c]
        with u ~ N(0, sd_group^2) and e ~ N(0, sd_resid^2), all independent.
    """
    cell_means = np.asarray(cell_means, dtype=float)
    shape = (n_sim, n_seeds, len(cell_means))
    if sd_group is None:
        return rng.normal(cell_means, sd_resid, shape)
    u = rng.normal(0, sd_group, (n_sim, n_seeds, 1))
    return cell_means + u + rng.normal(0, sd_resid, shape)


def rejections(t: np.ndarray, dof: float, alpha: float, alternative: str) -> np.ndarray:
    """Whether a t test on ``dof`` degrees of freedom rejects at level ``alpha``, per statistic.

    ``alternative``: 'greater' rejects when t > t_{1-alpha}, 'less' when t < -t_{1-alpha},
    'two-sided' when |t| > t_{1-alpha/2}.
    """
    crit = stats.t.ppf(1 - alpha, dof)
    if alternative == "greater":
        return t > crit
    if alternative == "less":
        return t < -crit
    return np.abs(t) > stats.t.ppf(1 - alpha / 2, dof)


def rejection_rate(reject: np.ndarray) -> dict[str, float | int]:
    """``power`` (share of the simulated studies whose test rejects), ``mc_se`` and ``n_sim``.

    ``mc_se`` is the binomial Monte-Carlo standard error sqrt(p (1 - p) / n_sim).
    """
    n_sim = len(reject)
    power = float(np.mean(reject))
    return {"power": power, "mc_se": float(np.sqrt(power * (1 - power) / n_sim)), "n_sim": n_sim}
