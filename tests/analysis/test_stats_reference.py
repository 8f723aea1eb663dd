"""Each statistical routine reproduces published reference values to 1e-4.

Sources (documented examples, not values computed here):
- pingouin 0.7.0, ``pingouin.tost`` docstring examples (paired, one-sample).
- TOSTER (Lakens), documented examples ``TOSTpaired.raw(n=65, m1=5.83, m2=5.75,
  sd1=1.17, sd2=1.30, r12=0.745, low_eqbound=-0.34, high_eqbound=0.34)`` and
  ``TOSTone.raw(m=0.52, mu=0.5, sd=0.5, n=300, low_eqbound=-0.1,
  high_eqbound=0.1)``, values as asserted in TOSTER's tests/testthat/test-known_results.R.
  TOST depends on the data only through n, mean and SD, so samples with exactly
  those moments reproduce them.
- Holm: the four-hypothesis example of the Wikipedia article "Holm-Bonferroni
  method" (p = 0.01, 0.04, 0.03, 0.005 at alpha = 0.05: H1 and H4 rejected);
  adjusted p-values by Holm's (1979) step-down formula.
- Page's L: scipy.stats.page_trend_test documented example (Page 1963 data as
  given by scipy: 10 students rating three teaching methods).
- Jonckheere-Terpstra: the three-treatment example (n = 5 each, one three-way
  tie) of S. Sawyer's one-way-layout notes, Washington University Math 408
  (www.math.wustl.edu/~sawyer/m408s07/cprogs/OneWayLayout.txt): J = 62.5,
  E(J) = 37.5, tie-corrected Var(J) = 88.8919, Z = 2.6516, two-sided P = 0.00801.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis.hypotheses.h3_equivalence import paired_tost, tost_against_target
from analysis.stats.multiplicity import holm
from analysis.stats.trend import _jt_exact_counts, _jt_statistic, jonckheere_terpstra, page_trend

TOL = 1e-4
A = [4, 7, 8, 6, 3, 2]  # pingouin.tost docstring
B = [6, 8, 7, 10, 11, 9]


def _with_moments(n: int, mean: float, sd: float) -> np.ndarray:
    """A sample of size n whose mean and SD (ddof=1) are exactly ``mean`` and ``sd``."""
    z = np.random.default_rng(0).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


def _pairs(a, b) -> pd.DataFrame:
    n = len(a)
    return pd.DataFrame(
        {"condition": ["a"] * n + ["b"] * n, "seed": list(range(n)) * 2, "y": [*a, *b]}
    )


def test_paired_tost_pingouin_docstring():
    res = paired_tost(_pairs(A, B), "y", ("a", "b"), margin=0.5).iloc[0]
    assert res["p"] == pytest.approx(0.954854, abs=TOL)
    assert res["df"] == 5 and res["n_pairs"] == 6


def test_one_sample_tost_pingouin_docstring():
    df = pd.DataFrame({"condition": "a", "y": A})
    res = tost_against_target(df, "y", target=0.0, margin=4.0).iloc[0]
    assert res["p"] == pytest.approx(0.825967, abs=TOL)


def test_paired_tost_toster_tostpaired_raw():
    sd1, sd2, r12 = 1.17, 1.30, 0.745
    sd_diff = np.sqrt(sd1**2 + sd2**2 - 2 * r12 * sd1 * sd2)
    diffs = _with_moments(65, 5.83 - 5.75, sd_diff)
    res = paired_tost(_pairs(diffs, np.zeros(65)), "y", ("a", "b"), margin=0.34).iloc[0]
    assert res["estimate"] == pytest.approx(0.08, abs=TOL)
    assert res["p"] == pytest.approx(max(0.0001606103, 0.01081349), abs=TOL)
    assert res["ci_low"] == pytest.approx(-0.1043032, abs=TOL)
    assert res["ci_high"] == pytest.approx(0.2643032, abs=TOL)
    assert res["df"] == 64


def test_one_sample_tost_toster_tostone_raw():
    df = pd.DataFrame({"condition": "a", "y": _with_moments(300, 0.52, 0.5)})
    res = tost_against_target(df, "y", target=0.5, margin=0.1).iloc[0]
    assert res["estimate"] == pytest.approx(0.02, abs=TOL)
    assert res["p"] == pytest.approx(max(0.00002108451, 0.002966762), abs=TOL)
    assert res["ci_low"] == pytest.approx(-0.02763041, abs=TOL)
    assert res["ci_high"] == pytest.approx(0.06763041, abs=TOL)


def test_holm_textbook_example():
    tests = pd.DataFrame({"hypothesis": ["H1", "H2", "H3", "H4"], "p": [0.01, 0.04, 0.03, 0.005]})
    out = holm(tests, alpha=0.05)
    assert out["reject_holm"].tolist() == [True, False, False, True]
    # Holm (1979): p~(i) = max_{j<=i} min(1, (m - j + 1) p(j)) over the sorted p-values
    np.testing.assert_allclose(out["p_holm"], [0.03, 0.06, 0.06, 0.02], atol=TOL)
    # statsmodels' default (Holm-Sidak) differs: the routine must ask for "holm"
    sidak = multipletests(tests["p"], method="hs")[1]
    assert abs(sidak[3] - 0.02) > TOL


def test_holm_keeps_registered_family_size_when_a_member_was_not_run():
    tests = pd.DataFrame({"hypothesis": ["H1", "H2"], "p": [0.01, np.nan]})
    out = holm(tests, members=["H1", "H2", "H3", "H4"])
    assert out["p_holm"].iloc[0] == pytest.approx(0.04, abs=1e-12)  # m = 4, not 1
    assert np.isnan(out["p_holm"].iloc[1])


PAGE_TABLE = [
    [3, 4, 3],
    [2, 2, 4],
    [3, 3, 5],
    [1, 3, 2],
    [2, 3, 2],
    [2, 4, 5],
    [1, 2, 4],
    [3, 4, 4],
    [2, 4, 5],
    [1, 3, 4],
]


def _page_long() -> pd.DataFrame:
    methods = [("tutorial", 1.0), ("lecture", 2.0), ("seminar", 3.0)]  # predicted order
    rows = [
        {"seed": s, "condition": m, "int_pne_star": e, "icl_auc": float(PAGE_TABLE[s][j])}
        for s in range(len(PAGE_TABLE))
        for j, (m, e) in enumerate(methods)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter


def test_page_trend_scipy_documented_example():
    res = page_trend(_page_long()).iloc[0]
    assert res["statistic"] == pytest.approx(133.5, abs=TOL)
    assert res["p"] == pytest.approx(0.0018191161948127822, abs=TOL)
    assert res["method"] == "exact"
    assert res["order"] == "tutorial,lecture,seminar"
    asym = page_trend(_page_long(), method="asymptotic").iloc[0]
    assert asym["p"] == pytest.approx(0.0012693433690751756, abs=TOL)


def test_jonckheere_terpstra_published_example_with_ties():
    y = [53, 31, 139, 5, 16, 75, 64, 205, 97, 139, 54, 139, 194, 1253, 275]
    df = pd.DataFrame({"y": y, "g": np.repeat([1, 2, 3], 5)})
    res = jonckheere_terpstra(df, "y", "g", alternative="two-sided", method="asymptotic").iloc[0]
    assert res["statistic"] == pytest.approx(62.5, abs=TOL)
    assert res["mean_null"] == pytest.approx(37.5, abs=TOL)
    assert res["var_null"] == pytest.approx(88.8919, abs=TOL)
    assert res["z"] == pytest.approx(2.6516, abs=TOL)
    assert res["p"] == pytest.approx(0.00801, abs=TOL)


def test_jonckheere_terpstra_exact_distribution_equals_full_enumeration():
    # No published exact table value was at hand; the exact path is checked
    # against the definition instead: J over every arrangement of 2+2+3 values.
    sizes, values = [2, 2, 3], np.arange(7.0)
    counts = np.zeros(sum(a * b for a, b in itertools.combinations(sizes, 2)) + 1)
    for labels in set(itertools.permutations([0, 0, 1, 1, 2, 2, 2])):
        groups = [values[np.array(labels) == g] for g in range(3)]
        counts[int(_jt_statistic(groups))] += 1
    np.testing.assert_array_equal(np.array(_jt_exact_counts(sizes), dtype=float), counts)
