"""Gaussian mechanism calibration: classic and analytic, checked against diffprivlib, scipy and mpmath."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from accountants import ClassicGaussianRangeWarning, gaussian_delta, gaussian_epsilon, gaussian_sigma, gdp_epsilon, gdp_mu


def _delta_by_integration(sigma: float, sensitivity: float, epsilon: float) -> float:
    """Hockey-stick divergence sup_A P(A) - e^eps Q(A) between N(Delta, sigma^2) and N(0, sigma^2), by quadrature."""
    p = stats.norm(loc=sensitivity, scale=sigma)
    q = stats.norm(loc=0.0, scale=sigma)
    # P - e^eps Q > 0 exactly to the right of the point where the densities' ratio is e^eps
    crossing = sensitivity / 2.0 + epsilon * sigma * sigma / sensitivity
    value, _ = integrate.quad(lambda x: p.pdf(x) - math.exp(epsilon) * q.pdf(x), crossing, np.inf, epsabs=1e-14)
    return value


@pytest.mark.parametrize("epsilon,delta,sensitivity", [
    (0.1, 1e-5, 1.0), (0.5, 1e-6, 0.3), (1.0, 5e-5, 2.0), (3.0, 1e-5, 1.0), (8.0, 1e-3, 0.01), (0.05, 0.1, 5.0),
])
def test_analytic_sigma_matches_diffprivlib(epsilon, delta, sensitivity):
    from diffprivlib.mechanisms import GaussianAnalytic

    reference = GaussianAnalytic(epsilon=epsilon, delta=delta, sensitivity=sensitivity)._scale
    assert gaussian_sigma(sensitivity, epsilon, delta, method="analytic") == pytest.approx(reference, rel=1e-7)


def test_analytic_sigma_is_exact_where_diffprivlib_loses_precision():
    mpmath = pytest.importorskip("mpmath")
    from diffprivlib.mechanisms import GaussianAnalytic

    mpmath.mp.dps = 60
    epsilon, delta = 20.0, 1e-10
    ours = gaussian_sigma(1.0, epsilon, delta)
    mu = 1 / mpmath.mpf(ours)
    exact_delta = mpmath.ncdf(-epsilon / mu + mu / 2) - mpmath.e ** epsilon * mpmath.ncdf(-epsilon / mu - mu / 2)
    assert float(exact_delta) == pytest.approx(delta, rel=1e-6)
    # diffprivlib's cancellation makes it over-noise here: valid, but not the calibrated sigma
    assert GaussianAnalytic(epsilon=epsilon, delta=delta, sensitivity=1.0)._scale >= ours


@pytest.mark.parametrize("sigma,sensitivity,epsilon", [(1.0, 1.0, 0.5), (0.7, 1.0, 2.0), (3.0, 2.0, 0.1), (0.4, 0.5, 4.0)])
def test_privacy_profile_matches_quadrature(sigma, sensitivity, epsilon):
    assert gaussian_delta(sigma, sensitivity, epsilon) == pytest.approx(_delta_by_integration(sigma, sensitivity, epsilon),
                                                                        rel=1e-6, abs=1e-13)


@pytest.mark.parametrize("epsilon,delta", [(0.01, 1e-8), (0.3, 1e-5), (1.0, 1e-5), (5.0, 1e-9), (40.0, 1e-6)])
def test_analytic_calibration_never_under_delivers_and_inverts(epsilon, delta):
    sigma = gaussian_sigma(1.5, epsilon, delta, method="analytic")
    assert gaussian_delta(sigma, 1.5, epsilon) <= delta * (1 + 1e-9)
    assert gaussian_delta(sigma * (1 - 1e-6), 1.5, epsilon) > delta  # and it is the smallest such sigma
    assert gaussian_epsilon(sigma, 1.5, delta) == pytest.approx(epsilon, rel=1e-9)


def test_classic_calibration_formula_and_dominates_analytic_below_one():
    for epsilon in (0.05, 0.3, 0.9):
        for delta in (1e-8, 1e-5, 1e-2):
            expected = 0.7 * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no warning inside the theorem's range
                classic = gaussian_sigma(0.7, epsilon, delta, method="classic")
            assert classic == pytest.approx(expected, rel=1e-12)
            assert classic >= gaussian_sigma(0.7, epsilon, delta, method="analytic")
            assert gaussian_epsilon(classic, 0.7, delta, method="classic") == pytest.approx(epsilon, rel=1e-12)


def test_classic_calibration_warns_or_refuses_outside_its_range():
    with pytest.warns(ClassicGaussianRangeWarning, match="epsilon in \\(0, 1\\)"):
        gaussian_sigma(1.0, 1.0, 1e-5, method="classic")
    with pytest.raises(ValueError, match="epsilon in \\(0, 1\\)"):
        gaussian_sigma(1.0, 2.0, 1e-5, method="classic", strict=True)
    with pytest.warns(ClassicGaussianRangeWarning):
        gaussian_epsilon(0.1, 1.0, 1e-5, method="classic")


def test_classic_calibration_fails_at_large_epsilon():
    """Why the range matters: at epsilon = 10 the classic sigma does not give (10, delta)-DP."""
    with pytest.warns(ClassicGaussianRangeWarning):
        sigma = gaussian_sigma(1.0, 10.0, 1e-3, method="classic")
    assert gaussian_delta(sigma, 1.0, 10.0) > 1e-3
    assert gaussian_epsilon(sigma, 1.0, 1e-3) > 10.0


def test_gdp_epsilon_edge_cases():
    assert gdp_epsilon(0.0, 1e-5) == 0.0
    assert gdp_epsilon(math.inf, 1e-5) == math.inf
    # delta(0) = 2 Phi(mu/2) - 1: below it epsilon is 0, above it positive
    mu = 0.1
    delta0 = 2 * stats.norm.cdf(mu / 2) - 1
    assert gdp_epsilon(mu, delta0 * 1.01) == 0.0
    assert gdp_epsilon(mu, delta0 * 0.99) > 0.0
    assert gdp_mu(gdp_epsilon(0.8, 1e-5), 1e-5) == pytest.approx(0.8, rel=1e-9)


@pytest.mark.parametrize("call,name", [
    (lambda: gaussian_sigma(0.0, 1.0, 1e-5), "sensitivity"),
    (lambda: gaussian_sigma(1.0, -1.0, 1e-5), "epsilon"),
    (lambda: gaussian_sigma(1.0, 1.0, 1.0), "delta"),
    (lambda: gaussian_sigma(1.0, 1.0, 0.0), "delta"),
    (lambda: gaussian_sigma(1.0, math.nan, 1e-5), "epsilon"),
    (lambda: gaussian_sigma(1.0, math.inf, 1e-5), "epsilon"),
    (lambda: gaussian_sigma(1.0, 1.0, 1e-5, method="laplace"), "method"),
    (lambda: gaussian_epsilon(-2.0, 1.0, 1e-5), "sigma"),
    (lambda: gaussian_delta(1.0, 1.0, -0.5), "epsilon"),
    (lambda: gdp_epsilon(-1.0, 1e-5), "mu"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
