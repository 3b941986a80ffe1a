"""Empirical auditing: Clopper-Pearson, epsilon lower bounds, the GDP estimator, threshold choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from accountants import (
    audit_scores,
    clopper_pearson_upper,
    epsilon_lower_bound,
    gdp_epsilon,
    gdp_epsilon_lower_bound,
    gdp_mu_lower_bound,
    run_distinguishing_game,
)
from accountants.audit import clopper_pearson_lower


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (0, 5000), (17, 5000), (250, 500)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    # scipy's two-sided exact interval at level 1 - 2a has the one-sided bounds at level 1 - a as ends
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact")
    assert clopper_pearson_upper(k, n, 0.95) == pytest.approx(interval.high, rel=1e-9, abs=1e-15)
    assert clopper_pearson_lower(k, n, 0.95) == pytest.approx(interval.low, rel=1e-9, abs=1e-15)


def test_clopper_pearson_coverage_by_monte_carlo():
    rng = np.random.default_rng(11)
    reps = 20_000
    for p in (0.003, 0.05, 0.3, 0.7):
        for n in (20, 200):
            counts = rng.binomial(n, p, size=reps)
            upper = clopper_pearson_upper(counts, n, 0.95)
            coverage = float(np.mean(p <= upper))
            assert coverage >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / reps)


def test_epsilon_lower_bound_hand_computed():
    n, delta = 1000, 1e-5
    upper = 1 - 0.025 ** (1 / n)  # CP upper for 0 of n at 1 - 0.05/2
    assert epsilon_lower_bound(0, 0, n, delta, 0.95) == pytest.approx(math.log((1 - delta - upper) / upper), rel=1e-9)
    fpr = stats.beta.ppf(0.975, 101, 900)
    fnr = stats.beta.ppf(0.975, 301, 700)
    expected = max(math.log((1 - delta - fnr) / fpr), math.log((1 - delta - fpr) / fnr), 0.0)
    assert epsilon_lower_bound(100, 300, n, delta) == pytest.approx(expected, rel=1e-9)
    assert epsilon_lower_bound(500, 500, n, delta) == 0.0  # no signal: clamped at 0
    mu = stats.norm.ppf(1 - fpr) - stats.norm.ppf(fnr)
    assert gdp_mu_lower_bound(100, 300, n) == pytest.approx(mu, rel=1e-9)
    assert gdp_epsilon_lower_bound(100, 300, n, delta) == pytest.approx(gdp_epsilon(mu, delta), rel=1e-9)
    assert gdp_epsilon_lower_bound(600, 600, n, delta) == 0.0


@pytest.mark.parametrize("call,name", [
    (lambda: epsilon_lower_bound(5, 1, 4, 1e-5), "false_positives"),
    (lambda: epsilon_lower_bound(1, -1, 4, 1e-5), "false_negatives"),
    (lambda: epsilon_lower_bound(1, 1, 0, 1e-5), "trials"),
    (lambda: epsilon_lower_bound(1, 1, 10, 0.0), "delta"),
    (lambda: epsilon_lower_bound(1, 1, 10, 1e-5, confidence=1.0), "confidence"),
    (lambda: epsilon_lower_bound(1.5, 1, 10, 1e-5), "false_positives"),
    (lambda: audit_scores([0.0, np.nan], [1.0, 2.0], 1e-5), "scores_0"),
    (lambda: audit_scores([0.0, 1.0], [1.0, 2.0], 1e-5, threshold="best"), "threshold"),
])
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("strategy", ["split", "bonferroni"])
def test_gaussian_scores_bound_stays_below_exact_and_comes_near(strategy):
    """As jax_privacy tests its auditor: scores N(mu, 1) vs N(0, 1) are exactly mu-GDP."""
    mu, delta = 2.0, 1e-3
    exact = gdp_epsilon(mu, delta)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        result = audit_scores(rng.normal(0, 1, 40_000), rng.normal(mu, 1, 40_000), delta, 0.95, threshold=strategy, seed=seed)
        assert result.epsilon_lb <= exact
        assert result.epsilon_lb >= 0.5 * exact
        assert result.epsilon_gdp <= exact * 1.001
        assert result.epsilon_gdp >= 0.85 * exact
    small = audit_scores(np.random.default_rng(9).normal(0, 1, 300), np.random.default_rng(10).normal(mu, 1, 300), delta,
                         threshold=strategy)
    assert small.epsilon_lb < result.epsilon_lb  # fewer trials, looser bound


def test_threshold_search_without_correction_is_invalid_and_corrections_fix_it():
    """Under D0 = D1 (epsilon = 0) a bound at confidence c must be 0 in >= c of the repetitions;
    searching the threshold on the same scores breaks that, a split or Bonferroni does not."""
    delta, reps, n, confidence = 1e-5, 300, 200, 0.8
    per_rate = 1 - (1 - confidence) / 2
    allowed = (1 - confidence) + 3 * math.sqrt(confidence * (1 - confidence) / reps)
    naive_positive = split_positive = bonferroni_positive = 0
    rng = np.random.default_rng(1)
    for rep in range(reps):
        s0, s1 = rng.normal(size=n), rng.normal(size=n)
        grid = np.unique(np.concatenate([s0, s1]))
        fpr = clopper_pearson_upper(n - np.searchsorted(np.sort(s0), grid, side="right"), n, per_rate)
        fnr = clopper_pearson_upper(np.searchsorted(np.sort(s1), grid, side="right"), n, per_rate)
        with np.errstate(invalid="ignore", divide="ignore"):
            naive = np.nanmax(np.maximum(np.log((1 - delta - fnr) / fpr), np.log((1 - delta - fpr) / fnr)))
        naive_positive += naive > 0
        split_positive += audit_scores(s0, s1, delta, confidence, threshold="split", seed=rep).epsilon_lb > 0
        bonferroni_positive += audit_scores(s0, s1, delta, confidence, threshold="bonferroni").epsilon_lb > 0
    assert naive_positive / reps > allowed
    assert split_positive / reps <= allowed
    assert bonferroni_positive / reps <= allowed


def test_fixed_threshold_and_fixed_grid():
    rng = np.random.default_rng(2)
    s0, s1 = rng.normal(0, 1, 5000), rng.normal(3, 1, 5000)
    fixed = audit_scores(s0, s1, 1e-5, threshold=1.5)
    fp, fn = int(np.sum(s0 > 1.5)), int(np.sum(s1 <= 1.5))
    assert (fixed.false_positives, fixed.false_negatives) == (fp, fn)
    assert fixed.epsilon_lb == pytest.approx(epsilon_lower_bound(fp, fn, 5000, 1e-5))
    grid = audit_scores(s0, s1, 1e-5, threshold="bonferroni", thresholds=[0.5, 1.5, 2.5])
    assert grid.num_thresholds == 3 and grid.epsilon_lb > 0


def test_distinguishing_game_runner_is_deterministic_and_sound():
    mu = 1.5
    exact = gdp_epsilon(mu, 1e-4)

    def mechanism(dataset, rng):
        return dataset + rng.normal()

    def statistic(output):
        return output

    first = run_distinguishing_game(mechanism, 0.0, mu, statistic, trials=4000, delta=1e-4, seed=7)
    second = run_distinguishing_game(mechanism, 0.0, mu, statistic, trials=4000, delta=1e-4, seed=7)
    assert first == second
    assert first.trials == 4000 and first.evaluation_trials == 2000 and first.calibration_trials == 2000
    assert 0 < first.epsilon_lb <= exact
    assert first.to_dict()["strategy"] == "split"
    other = run_distinguishing_game(mechanism, 0.0, mu, statistic, trials=4000, delta=1e-4, seed=8)
    assert other != first
