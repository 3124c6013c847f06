import math

import numpy as np
import pytest
from scipy import stats

from facetraits.report.statistics import (
    ANOVA,
    FRIEDMAN,
    PAIRED_T,
    WILCOXON,
    compare_methods,
    holm_adjust,
)

ATTRIBUTES = ["a1", "a2", "a3", "a4", "a5", "a6"]
SCORES = {
    "hand": [0.21, 0.35, 0.12, 0.40, 0.28, 0.33],
    "vgg": [0.52, 0.61, 0.30, 0.66, 0.49, 0.58],
    "vgg_noaug": [0.47, 0.60, 0.33, 0.59, 0.41, math.nan],
}


def methods() -> dict[str, dict[str, float]]:
    return {m: {a: r for a, r in zip(ATTRIBUTES, rs) if not math.isnan(r)} for m, rs in SCORES.items()}


def test_holm_matches_r_p_adjust_and_ignores_missing_p() -> None:
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    adjusted = holm_adjust([0.01, 0.04, math.nan, 0.03, 0.005])
    np.testing.assert_allclose(adjusted[[0, 1, 3, 4]], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[2])
    np.testing.assert_array_equal(holm_adjust([0.5, 0.6]), [1.0, 1.0])
    assert holm_adjust([]).shape == (0,)


def test_omnibus_tests_equal_scipy_on_the_attributes_every_method_has() -> None:
    comparison = compare_methods(methods(), ATTRIBUTES)
    complete = np.array([rs[:5] for rs in SCORES.values()])
    assert comparison.attributes == tuple(ATTRIBUTES[:5])
    assert comparison.methods == tuple(SCORES)

    z = np.arctanh(complete)
    expected = stats.f_oneway(*z)
    assert comparison.anova.test == ANOVA
    assert comparison.anova.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert comparison.anova.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert comparison.anova.df == (2, 12)
    between = 5 * ((z.mean(axis=1) - z.mean()) ** 2).sum() / 2
    within = ((z - z.mean(axis=1, keepdims=True)) ** 2).sum() / 12
    assert comparison.anova.statistic == pytest.approx(between / within, rel=1e-12)

    expected = stats.friedmanchisquare(*complete)
    assert comparison.friedman.test == FRIEDMAN
    assert comparison.friedman.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert comparison.friedman.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert comparison.friedman.df == (2,)
    assert comparison.anova.p_holm is None and comparison.friedman.p_holm is None


def test_paired_tests_equal_scipy_on_the_attributes_both_methods_have() -> None:
    comparison = compare_methods(methods(), ATTRIBUTES)
    assert [(p.first, p.second) for p in comparison.pairs] == [
        ("hand", "vgg"),
        ("hand", "vgg_noaug"),
        ("vgg", "vgg_noaug"),
    ]
    t_p, w_p = [], []
    for pair in comparison.pairs:
        first, second = np.array(SCORES[pair.first]), np.array(SCORES[pair.second])
        both = ~np.isnan(first) & ~np.isnan(second)
        first, second = first[both], second[both]
        assert pair.n == both.sum()
        assert pair.mean_difference == pytest.approx(np.mean(first - second), rel=1e-12)
        t = stats.ttest_rel(np.arctanh(first), np.arctanh(second))
        assert (pair.t_test.test, pair.t_test.df) == (PAIRED_T, (pair.n - 1,))
        assert pair.t_test.statistic == pytest.approx(t.statistic, rel=1e-12)
        assert pair.t_test.p_value == pytest.approx(t.pvalue, rel=1e-12)
        w = stats.wilcoxon(first - second)
        assert pair.wilcoxon.test == WILCOXON
        assert pair.wilcoxon.statistic == w.statistic
        assert pair.wilcoxon.p_value == pytest.approx(w.pvalue, rel=1e-12)
        t_p.append(t.pvalue)
        w_p.append(w.pvalue)
    np.testing.assert_allclose([p.t_test.p_holm for p in comparison.pairs], holm_adjust(t_p))
    np.testing.assert_allclose([p.wilcoxon.p_holm for p in comparison.pairs], holm_adjust(w_p))
    assert comparison.pairs[0].t_test.p_value < 0.001  # vgg beats hand on every attribute by a wide margin


@pytest.mark.filterwarnings("error")
def test_one_method_gives_no_tests_and_says_why() -> None:
    comparison = compare_methods({"vgg": methods()["vgg"]}, ATTRIBUTES)
    assert math.isnan(comparison.anova.p_value) and "at least 2 methods" in comparison.anova.reason
    assert math.isnan(comparison.friedman.statistic) and "at least 3 methods" in comparison.friedman.reason
    assert comparison.pairs == ()


@pytest.mark.filterwarnings("error")
def test_two_methods_run_anova_but_not_friedman() -> None:
    comparison = compare_methods({m: methods()[m] for m in ("hand", "vgg")}, ATTRIBUTES)
    assert comparison.anova.p_value < 0.05
    assert "at least 3 methods" in comparison.friedman.reason


@pytest.mark.filterwarnings("error")
def test_too_few_shared_attributes_give_nan_with_reason() -> None:
    few = {"hand": {"a1": 0.2, "a2": 0.3}, "vgg": {"a1": 0.5, "a2": 0.6, "a3": 0.4}, "x": {"a3": 0.1}}
    comparison = compare_methods(few, ATTRIBUTES)
    assert comparison.attributes == ()
    assert "only 0 attribute(s)" in comparison.anova.reason
    assert "only 0 attribute(s)" in comparison.friedman.reason
    for pair in comparison.pairs:
        assert pair.n < 3
        assert math.isnan(pair.t_test.p_value) and math.isnan(pair.wilcoxon.p_value)
        assert "needs at least 3" in pair.t_test.reason and "needs at least 3" in pair.wilcoxon.reason
        assert math.isnan(pair.t_test.p_holm)
    assert comparison.pairs[0].mean_difference == pytest.approx(-0.3)
    assert math.isnan(comparison.pairs[1].mean_difference)


@pytest.mark.filterwarnings("error")
def test_identical_methods_give_nan_with_reason_and_leave_the_holm_family() -> None:
    vgg = methods()["vgg"]
    comparison = compare_methods({"vgg": vgg, "copy": dict(vgg), "hand": methods()["hand"]}, ATTRIBUTES)
    identical = comparison.pairs[0]
    assert (identical.first, identical.second, identical.mean_difference) == ("vgg", "copy", 0.0)
    assert math.isnan(identical.t_test.p_value) and "all equal" in identical.t_test.reason
    assert math.isnan(identical.wilcoxon.p_value) and "identical" in identical.wilcoxon.reason
    others = comparison.pairs[1:]
    np.testing.assert_allclose([p.t_test.p_holm for p in others], holm_adjust([p.t_test.p_value for p in others]))


@pytest.mark.filterwarnings("error")
def test_constant_methods_and_perfect_r_give_nan_with_reason() -> None:
    flat = {m: dict.fromkeys(ATTRIBUTES[:4], 0.5 + k / 10) for k, m in enumerate(("a", "b", "c"))}
    comparison = compare_methods(flat, ATTRIBUTES)
    assert math.isnan(comparison.anova.p_value) and "no variation" in comparison.anova.reason
    assert comparison.friedman.p_value < 0.05  # the ranks are perfectly consistent
    assert all(math.isnan(p.t_test.p_value) for p in comparison.pairs)
    assert all(p.wilcoxon.p_value == 0.125 for p in comparison.pairs)  # exact, n = 4, all one sign

    perfect = {"a": {"a1": 1.0, "a2": 0.3, "a3": 0.4}, "b": {"a1": 0.5, "a2": 0.2, "a3": 0.1}}
    comparison = compare_methods(perfect, ATTRIBUTES)
    assert "a on a1" in comparison.anova.reason
    assert "a on a1" in comparison.pairs[0].t_test.reason
    assert not math.isnan(comparison.pairs[0].wilcoxon.p_value)


@pytest.mark.filterwarnings("error")
def test_every_method_tied_on_every_attribute_is_not_ranked() -> None:
    same = {m: dict(zip(ATTRIBUTES, [0.1, 0.2, 0.3, 0.4])) for m in ("a", "b", "c")}
    comparison = compare_methods(same, ATTRIBUTES)
    assert math.isnan(comparison.friedman.p_value) and "nothing to rank" in comparison.friedman.reason
    assert (comparison.anova.statistic, comparison.anova.p_value) == (0.0, 1.0)
