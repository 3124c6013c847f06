"""Are the methods' per-attribute test r different? Omnibus and paired tests with attributes as observations.

Parametric tests run on Fisher z = artanh(r), not on r: r is bounded by +-1 and its sampling distribution is
skewed (increasingly so near the bounds), while z is close to normal with a variance that does not depend on the
true correlation, which is what ANOVA and the t-test assume. Rank tests need no transform (Friedman ranks are
unchanged by it; the Wilcoxon test runs on the r differences themselves).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from facetraits.report.comparison import method_scores

MIN_ATTRIBUTES = 3

ANOVA = "one-way ANOVA on Fisher z(r), methods as groups"
FRIEDMAN = "Friedman test on r, attributes as repeated measures"
PAIRED_T = "paired t-test on Fisher z(r)"
WILCOXON = "Wilcoxon signed-rank test on r"


@dataclass(frozen=True)
class HypothesisTest:
    """One test's outcome; NaN statistic and p with a `reason` where the data cannot support the test."""

    test: str
    statistic: float
    p_value: float
    df: tuple[int, ...] = ()
    reason: str = ""
    p_holm: float | None = None


@dataclass(frozen=True)
class PairedComparison:
    """`first` against `second` over the attributes both have; `mean_difference` is mean(first - second) in r."""

    first: str
    second: str
    n: int
    mean_difference: float
    t_test: HypothesisTest
    wilcoxon: HypothesisTest


@dataclass(frozen=True)
class MethodComparison:
    """Omnibus tests over `attributes` (those every method has), then every pair of methods, Holm-corrected."""

    methods: tuple[str, ...]
    attributes: tuple[str, ...]
    anova: HypothesisTest
    friedman: HypothesisTest
    pairs: tuple[PairedComparison, ...]


def not_run(test: str, reason: str) -> HypothesisTest:
    return HypothesisTest(test=test, statistic=math.nan, p_value=math.nan, reason=reason)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values in input order; NaN entries are not tests and do not count in the family."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * (len(order) - np.arange(len(order)))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def fisher_z(r: np.ndarray) -> np.ndarray:
    return np.arctanh(r)


def perfect_correlation_reason(scores: pd.DataFrame) -> str:
    """r = +-1 has an infinite z; saying so beats an inf or a NaN from scipy with no explanation."""
    rows, columns = np.nonzero(np.abs(scores.to_numpy()) == 1.0)
    perfect = [f"{scores.columns[c]} on {scores.index[r]}" for r, c in zip(rows, columns)]
    return f"|r| = 1 has no finite Fisher z ({', '.join(perfect)})" if perfect else ""


def one_way_anova(complete: pd.DataFrame) -> HypothesisTest:
    k, n = complete.shape[1], complete.shape[0]
    if k < 2:
        return not_run(ANOVA, f"needs at least 2 methods, got {k}")
    if n < MIN_ATTRIBUTES:
        return not_run(ANOVA, f"only {n} attribute(s) scored by every method; needs at least {MIN_ATTRIBUTES}")
    if reason := perfect_correlation_reason(complete):
        return not_run(ANOVA, reason)
    z = fisher_z(complete.to_numpy())
    if np.all(np.ptp(z, axis=0) == 0):
        return not_run(ANOVA, "no variation within any method: F is undefined")
    result = stats.f_oneway(*z.T)
    return HypothesisTest(ANOVA, float(result.statistic), float(result.pvalue), df=(k - 1, k * n - k))


def friedman(complete: pd.DataFrame) -> HypothesisTest:
    k, n = complete.shape[1], complete.shape[0]
    if k < 3:
        return not_run(FRIEDMAN, f"needs at least 3 methods, got {k}")
    if n < MIN_ATTRIBUTES:
        return not_run(FRIEDMAN, f"only {n} attribute(s) scored by every method; needs at least {MIN_ATTRIBUTES}")
    if np.all(np.ptp(complete.to_numpy(), axis=1) == 0):
        return not_run(FRIEDMAN, "every method scores the same r on every attribute: nothing to rank")
    result = stats.friedmanchisquare(*complete.to_numpy().T)
    return HypothesisTest(FRIEDMAN, float(result.statistic), float(result.pvalue), df=(k - 1,))


def paired_t_test(shared: pd.DataFrame) -> HypothesisTest:
    if reason := perfect_correlation_reason(shared):
        return not_run(PAIRED_T, reason)
    z = fisher_z(shared.to_numpy())
    if np.ptp(z[:, 0] - z[:, 1]) == 0:
        return not_run(PAIRED_T, "the z differences are all equal: no variance to test against")
    result = stats.ttest_rel(z[:, 0], z[:, 1])
    return HypothesisTest(PAIRED_T, float(result.statistic), float(result.pvalue), df=(int(result.df),))


def wilcoxon(shared: pd.DataFrame) -> HypothesisTest:
    differences = shared.iloc[:, 0].to_numpy() - shared.iloc[:, 1].to_numpy()
    if np.all(differences == 0):
        return not_run(WILCOXON, "identical r on every shared attribute")
    result = stats.wilcoxon(differences)
    return HypothesisTest(WILCOXON, float(result.statistic), float(result.pvalue))


def paired_comparison(scores: pd.DataFrame, first: str, second: str) -> PairedComparison:
    shared = scores[[first, second]].dropna()
    n = len(shared)
    mean_difference = float((shared[first] - shared[second]).mean()) if n else math.nan
    if n < MIN_ATTRIBUTES:
        reason = f"only {n} attribute(s) scored by both; needs at least {MIN_ATTRIBUTES}"
        return PairedComparison(first, second, n, mean_difference, not_run(PAIRED_T, reason), not_run(WILCOXON, reason))
    return PairedComparison(first, second, n, mean_difference, paired_t_test(shared), wilcoxon(shared))


def with_holm(tests: Sequence[HypothesisTest]) -> list[HypothesisTest]:
    adjusted = holm_adjust([t.p_value for t in tests])
    return [replace(test, p_holm=float(p)) for test, p in zip(tests, adjusted)]


def compare_methods(methods: Mapping[str, Mapping[str, float]], attributes: Sequence[str]) -> MethodComparison:
    """All tests the report shows. Omnibus tests use only attributes every method has, so no method is judged on an
    easier subset; each pair uses the attributes both have. Holm corrects each paired test family across pairs."""
    scores = method_scores(methods, attributes)
    complete = scores.dropna()
    pairs = [paired_comparison(scores, a, b) for a, b in itertools.combinations(scores.columns, 2)]
    t_tests = with_holm([p.t_test for p in pairs])
    wilcoxons = with_holm([p.wilcoxon for p in pairs])
    return MethodComparison(
        methods=tuple(scores.columns),
        attributes=tuple(complete.index),
        anova=one_way_anova(complete),
        friedman=friedman(complete),
        pairs=tuple(replace(p, t_test=t, wilcoxon=w) for p, t, w in zip(pairs, t_tests, wilcoxons)),
    )
