"""Holm correction over the registered confirmatory family (DESIGN §5, plan ``correction``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from analysis.stats.inputs import require_columns, require_frame, require_probability


def holm(
    data: pd.DataFrame,
    p: str = "p",
    family: str = "hypothesis",
    members: list[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Holm-adjusted p-values for the rows of a registered family.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per test, with a p-value column and a label column.
    p : str
        Column of unadjusted p-values (NaN: the test was not run).
    family : str
        Column naming each test (``hypothesis``).
    members : list of str, optional
        The registered family (plan ``correction.family``); default: every row.
    alpha : float
        Family-wise error rate, for the ``reject`` column.

    Returns
    -------
    pandas.DataFrame
        ``data`` with two columns added: ``p_holm`` (NaN outside the family and
        for tests not run) and ``reject_holm``.

    Notes
    -----
    Holm (1979): order the m p-values :math:`p_{(1)} \\le \\dots \\le p_{(m)}`;
    :math:`\\tilde p_{(i)} = \\max_{j \\le i} \\min(1, (m - j + 1) p_{(j)})`. It
    controls the family-wise error rate at alpha under any dependence. Computed by
    statsmodels ``multipletests(method="holm")`` (its default is Holm-Sidak, a
    different method). A registered member that was not run enters with p = 1, so
    that m stays the registered family size: the adjustment of the tests that ran
    is never weaker than registered.

    References
    ----------
    .. [1] Holm, S. (1979). A simple sequentially rejective multiple test
           procedure. Scand. J. Statist. 6, 65-70.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"hypothesis": ["H1", "H2", "H3"], "p": [0.01, 0.04, 0.03]})
    >>> holm(t)["p_holm"].round(4).tolist()
    [0.03, 0.06, 0.06]
    """
    func = "holm"
    require_frame(data, func)
    require_columns(data, [p, family], func)
    require_probability(alpha, "alpha", func)
    out = data.copy()
    names = list(out[family]) if members is None else list(members)
    in_family = out[family].isin(names).to_numpy()
    values = pd.to_numeric(out[p], errors="coerce").to_numpy(dtype=float)
    padded = np.where(np.isnan(values[in_family]), 1.0, values[in_family])
    missing = len(set(names) - set(out.loc[in_family, family]))
    adjusted = np.full(len(out), np.nan)
    if in_family.any():
        corrected = multipletests(np.concatenate([padded, np.ones(missing)]), method="holm")[1]
        adjusted[in_family] = corrected[: in_family.sum()]
    adjusted[np.isnan(values)] = np.nan
    out["p_holm"] = adjusted
    out["reject_holm"] = adjusted < alpha
    return out
