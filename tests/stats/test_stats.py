"""Statistics with numbers a reader can check by hand (t tables, Holm on known p-values, a seeded bootstrap)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from archsearch.errors import ConfigError
from archsearch.stats import (
    AnalysisRule,
    Difference,
    Verdict,
    correct,
    difference,
    fisher_interval,
    mean_interval,
    ranks,
    spearman,
    spearman_interval,
    t_cdf,
    t_quantile,
)


@pytest.mark.parametrize(
    "df, q",  # two-sided 95% critical values of Student's t, from any printed table
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423), (1000, 1.9623)],
)
def test_t_quantiles_match_the_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-5)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-4)


def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(t^2 + 2))
    for t in (-3.0, -0.5, 0.0, 0.7, 10.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(t * t + 2)), abs=1e-12)
    assert t_quantile(0.9995, 1) == pytest.approx(math.tan(math.pi * 0.4995), rel=1e-9)  # far tail: 636.6


def test_mean_interval_of_known_data():
    iv = mean_interval([1, 2, 3, 4, 5])  # mean 3, sd sqrt(2.5), se 0.7071, t 2.7764
    assert (iv.mean, iv.n) == (3.0, 5) and iv.sd == pytest.approx(math.sqrt(2.5))
    assert (iv.lo, iv.hi) == (pytest.approx(1.03676, abs=1e-5), pytest.approx(4.96324, abs=1e-5))
    two = mean_interval(
        [0.8, 0.9]
    )  # two seeds: half-width 12.706 x 0.05 = 0.635, wider than the data's range
    assert (two.lo, two.hi) == (pytest.approx(0.21469, abs=1e-5), pytest.approx(1.48531, abs=1e-5))
    assert two.text(3) == "0.850 [0.215, 1.485]"
    one = mean_interval([1.07])
    assert not one.has_interval and one.text(4) == "1.0700 (n=1: no interval)"
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_by_seed_when_the_seeds_match():
    a = [(0, 1.0), (1, 2.0), (2, 3.0)]
    b = [(2, 2.9), (0, 0.9), (1, 1.8)]  # order does not matter, seeds do
    d = difference(a, b)  # differences 0.1, 0.2, 0.1: mean 0.1333, se 0.03333, df 2
    assert d.method == "paired" and d.df == 2
    assert d.estimate == pytest.approx(0.133333, abs=1e-6) and d.se == pytest.approx(0.033333, abs=1e-6)
    lo, hi = d.interval()
    assert (lo, hi) == (pytest.approx(-0.010088, abs=1e-6), pytest.approx(0.276755, abs=1e-6))
    assert d.p_beyond(0.0) == pytest.approx(0.057191, abs=1e-6)  # t = 4.0 on 2 df


def test_welch_when_the_seeds_differ():
    d = difference([(0, 1), (1, 2), (2, 3)], [(0, 2), (1, 4), (2, 6), (3, 8)])
    # means 2 and 5, variances 1 and 20/3: se sqrt(1/3 + 5/3) = sqrt(2), Welch-Satterthwaite df 4.0755
    assert d.method == "welch" and d.estimate == -3.0 and d.se == pytest.approx(math.sqrt(2))
    assert d.df == pytest.approx(4.075472, abs=1e-6)
    assert d.p_beyond() == pytest.approx(0.099913, abs=1e-6)
    none = difference([(0, 1.0)], [(0, 2.0), (1, 3.0)])
    assert none.method == "none" and not none.testable and none.interval() is None and none.p_beyond() == 1.0


def test_margin_p_value_agrees_with_the_interval():
    d = Difference(-0.01, 0.002, 4.0, "welch", 3, 3)
    lo, hi = d.interval(0.95)  # -0.01 +/- 2.7764 x 0.002 = [-0.01555, -0.00445]
    assert hi == pytest.approx(-0.004447, abs=1e-6)
    assert d.p_beyond(0.0) < 0.05  # excludes 0 ...
    assert d.p_beyond(0.005) > 0.05  # ... but not -0.005: hi lies above it
    assert d.p_beyond(0.005) == pytest.approx(2 * t_cdf(-2.5, 4), abs=1e-12)
    assert d.p_beyond(0.004) < 0.05


def test_holm_and_bonferroni_on_known_p_values():
    p = [0.01, 0.015, 0.03, 0.2]
    holm = correct(p, 0.05, "holm")  # 0.01 <= 0.05/4, 0.015 <= 0.05/3, 0.03 > 0.05/2: stop
    assert [d.reject for d in holm] == [True, True, False, False]
    assert [d.p_adjusted for d in holm] == pytest.approx([0.04, 0.045, 0.06, 0.2])
    assert [d.alpha for d in holm] == pytest.approx([0.0125, 0.05 / 3, 0.025, 0.025])
    bonf = correct(p, 0.05, "bonferroni")
    assert [d.reject for d in bonf] == [True, False, False, False]
    assert [d.p_adjusted for d in bonf] == pytest.approx([0.04, 0.06, 0.12, 0.8])
    assert [d.reject for d in correct(p, 0.05, "none")] == [True, True, True, False]
    shuffled = correct([0.2, 0.03, 0.01, 0.015], 0.05)
    assert [d.reject for d in shuffled] == [False, False, True, True]
    with pytest.raises(ValueError, match="unknown correction"):
        correct(p, 0.05, "sidak")


def test_ranks_and_spearman():
    assert list(ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    # docs/paper_proxy.md's cross-size ranking: 2,1,3,4,5 against 1,2,4,3,5 -> 1 - 6 x 4 / (5 x 24) = 0.8
    assert spearman([2, 1, 3, 4, 5], [1, 2, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, 1, 2, 3], [1, 2, 2, 5]) == pytest.approx(0.833333, abs=1e-6)  # ties: Pearson on ranks
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_fisher_interval_for_rho_045_on_8_points():
    # the example: rho 0.45 over 8 patterns has a 95% interval of about [-0.41, 0.89]
    lo, hi = fisher_interval(0.45, 8)
    assert (lo, hi) == (pytest.approx(-0.4096, abs=1e-3), pytest.approx(0.8863, abs=1e-3))
    assert fisher_interval(0.45, 3) is None


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_interval_covers_the_true_rho(method):
    # bivariate normal with r = 0.6: Spearman's population rho is (6 / pi) asin(0.3) = 0.5819
    true = 6 / math.pi * math.asin(0.3)
    rng = np.random.default_rng(7)
    xy = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], size=60)
    res = spearman_interval(xy[:, 0], xy[:, 1], n_boot=1000, seed=0, method=method)
    assert res.lo < true < res.hi and res.lo < res.rho < res.hi
    assert res.hi - res.lo < 0.6 and res.resamples == 1000
    again = spearman_interval(xy[:, 0], xy[:, 1], n_boot=1000, seed=0, method=method)
    assert (again.lo, again.hi) == (res.lo, res.hi)  # seeded


def test_bootstrap_on_few_points():
    assert spearman_interval([1, 2, 3], [1, 3, 2]).text() == "0.50 (n=3: no interval)"
    perfect = spearman_interval([1, 2, 3, 4, 5, 6], [2, 3, 5, 7, 11, 13])
    assert perfect.rho == 1.0 and (perfect.lo, perfect.hi) == (1.0, 1.0)  # every resample agrees
    wide = spearman_interval([2, 1, 3, 4, 5], [1, 2, 4, 3, 5])
    assert wide.rho == pytest.approx(0.8) and wide.lo < 0.2  # five points bound rho only loosely


def _verdict(est: float, se: float, margin: float, reject: bool, alpha: float = 0.05) -> Verdict:
    from archsearch.stats import Decision

    d = Difference(est, se, 4.0, "paired", 5, 5)
    return Verdict("A", "B", d, Decision(reject, alpha, d.p_beyond(margin), d.p_beyond(margin)), margin, True)


def test_verdict_sentences():
    # lower is better: A - B = -0.02 with se 0.002 -> A beats B by 0.0200 [0.0144, 0.0256]
    win = _verdict(-0.02, 0.002, 0.005, True)
    assert win.outcome == "better" and win.text() == "A beats B by 0.0200 [0.0144, 0.0256]"
    lose = _verdict(0.02, 0.002, 0.005, True)
    assert lose.outcome == "worse" and lose.text() == "B beats A by 0.0200 [0.0144, 0.0256]"
    tie = _verdict(0.001, 0.001, 0.005, False)
    assert tie.outcome == "equivalent"
    assert (
        tie.text()
        == "no difference detected between A and B (A - B = 0.0010 [-0.0018, 0.0038], within +/-0.0050)"
    )
    vague = _verdict(0.001, 0.01, 0.005, False)
    assert vague.outcome == "inconclusive" and "not ruled out" in vague.text()
    untested = Verdict("A", "B", Difference(0.1, None, None, "none", 1, 3), None, 0.0, True)
    assert untested.text() == "A vs B: not tested (n=1: no interval; A - B = 0.1000)"


def test_analysis_rule_defaults_and_errors():
    assert AnalysisRule.from_value(None) == AnalysisRule(None, 0.0, 0.05, "holm", None)
    rule = AnalysisRule.from_value({"reference": " M-M- ", "margin": 0.005, "alpha": 0.1}, "s.yaml")
    assert rule.reference == "M-M-" and rule.to_dict()["alpha"] == 0.1
    with pytest.raises(ConfigError, match=r"^s\.yaml: analysis\.alpha: expected a number in \(0, 0\.5\]"):
        AnalysisRule.from_value({"alpha": 0}, "s.yaml")
