"""PrivacyFace Theorems 1-3, Properties 3-4 and App. A.2.2, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from accountants import (
    cluster_mean_norm_bounds,
    cosine_lower_bound,
    dplc_cosine_lower_bound,
    dplc_sensitivity,
    dplc_sigma,
    expected_noise_norm,
    gaussian_epsilon,
    naive_center_cost,
    noise_norm_cdf,
    noise_norm_quantile,
    occupancy_ratio,
)


def _cap_fraction_by_quadrature(rho: float, dim: int) -> float:
    """Area of a cap of angle rho on S^{dim-1} over the sphere: int_0^rho sin^{d-2} / int_0^pi sin^{d-2},
    in log space so that d = 512 does not underflow."""
    def integrand(theta: float) -> float:
        return math.exp((dim - 2) * math.log(max(math.sin(theta), 1e-300)) - (dim - 2) * math.log(math.sin(min(rho, math.pi / 2))))

    top, _ = integrate.quad(integrand, 0.0, rho, epsabs=0, epsrel=1e-10, limit=200)
    bottom, _ = integrate.quad(integrand, 0.0, math.pi, epsabs=0, epsrel=1e-10, limit=200, points=[math.pi / 2])
    return top / bottom


def test_occupancy_ratio_closed_forms_in_low_dimension():
    for rho in (0.1, 0.7, math.pi / 2, 2.0, 3.0, math.pi):
        assert occupancy_ratio(rho, 2) == pytest.approx(rho / math.pi, rel=1e-12, abs=1e-15)
        assert occupancy_ratio(rho, 3) == pytest.approx((1 - math.cos(rho)) / 2, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("dim", [4, 16, 128, 512])
@pytest.mark.parametrize("rho", [0.5, 1.3, 1.4, 1.5, 2.2])
def test_occupancy_ratio_matches_quadrature(rho, dim):
    assert occupancy_ratio(rho, dim) == pytest.approx(_cap_fraction_by_quadrature(rho, dim), rel=1e-6, abs=1e-300)


def test_occupancy_ratio_monte_carlo_and_monotone():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(200_000, 5))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    angles = np.arccos(np.clip(points[:, 0], -1, 1))
    for rho in (0.6, 1.2, 2.5):
        fraction = float(np.mean(angles <= rho))
        se = math.sqrt(fraction * (1 - fraction) / points.shape[0])
        assert abs(occupancy_ratio(rho, 5) - fraction) < 5 * se
    grid = np.linspace(0, math.pi, 400)
    for dim in (2, 7, 512):
        values = [occupancy_ratio(float(r), dim) for r in grid]
        assert np.all(np.diff(values) >= -1e-15)
        assert occupancy_ratio(math.pi / 2, dim) == pytest.approx(0.5)
        assert values[0] == 0.0 and values[-1] == pytest.approx(1.0)


def test_theorem2_and_theorem3_formulas():
    for rho in (0.2, 0.9, 1.3, math.pi / 2):
        for size in (1, 7, 512):
            assert dplc_sensitivity(rho, size, "tight") == pytest.approx(math.sqrt(2 - 2 * math.cos(2 * rho)) / size, rel=1e-12)
            assert dplc_sensitivity(rho, size, "weak") == pytest.approx(2 * math.sqrt(2 - 2 * math.cos(rho)) / size, rel=1e-12)
    # the appendix's comparison: tight/weak = sin(rho)/(2 sin(rho/2)) = cos(rho/2)
    assert dplc_sensitivity(1.3, 512) / dplc_sensitivity(1.3, 512, "weak") == pytest.approx(math.cos(0.65), rel=1e-12)


def test_theorem2_beyond_half_pi_uses_the_true_chord():
    """The paper's sqrt(2 - 2 cos 2rho) shrinks again for rho > pi/2, although two points of such a
    cap can be antipodal; the function uses the true maximum distance 2/|S|."""
    for rho in (1.8, 2.5, math.pi):
        assert dplc_sensitivity(rho, 4) == pytest.approx(0.5)
        assert math.sqrt(2 - 2 * math.cos(2 * rho)) / 4 < 0.5
    # attained: e1 +- (rho-edge) points are antipodal when rho >= pi/2
    e = np.eye(3)
    w, w2 = math.cos(math.pi / 2) * e[0] + e[1], math.cos(math.pi / 2) * e[0] - e[1]
    assert np.linalg.norm(w - w2) / 4 == pytest.approx(dplc_sensitivity(2.0, 4))


def test_theorem2_bound_is_attained_by_mirror_members():
    rho, size = 1.1, 9
    rng = np.random.default_rng(0)
    center = np.array([1.0, 0, 0, 0])
    others = np.array([[math.cos(a), math.sin(a), 0, 0] for a in rng.uniform(-rho, rho, size - 1)])
    w = np.array([math.cos(rho), 0, math.sin(rho), 0])
    w2 = np.array([math.cos(rho), 0, -math.sin(rho), 0])
    for member in (w, w2, *others):
        assert math.acos(np.clip(member @ center, -1, 1)) <= rho + 1e-12
    distance = np.linalg.norm(np.vstack([others, w]).mean(0) - np.vstack([others, w2]).mean(0))
    assert distance == pytest.approx(dplc_sensitivity(rho, size), rel=1e-12)


def test_dplc_sigma_is_line_7_of_algorithm_1():
    rho, size, epsilon, delta = 1.3, 512, 0.8, 5e-5
    expected = 2 / (size * epsilon) * math.sqrt((1 - math.cos(2 * rho)) * math.log(1.25 / delta))
    assert dplc_sigma(rho, size, epsilon, delta, method="classic") == pytest.approx(expected, rel=1e-12)
    weak = 4 / (size * epsilon) * math.sqrt((1 - math.cos(rho)) * math.log(1.25 / delta))
    assert dplc_sigma(rho, size, epsilon, delta, bound="weak", method="classic") == pytest.approx(weak, rel=1e-12)
    analytic = dplc_sigma(rho, size, epsilon, delta, method="analytic")
    assert gaussian_epsilon(analytic, dplc_sensitivity(rho, size), delta) == pytest.approx(epsilon, rel=1e-9)


def test_naive_center_cost_follows_the_formulas():
    cost = naive_center_cost(1.4, 512, 7000, 0.9, 5e-5, queries=1, method="classic")
    tight = 2 * math.sin(1.4) / 512
    assert cost.dplc_sensitivity == pytest.approx(tight)
    assert cost.paper_cost_ratio == pytest.approx(tight / (2 * 7000))
    assert cost.parallel_cost_ratio == pytest.approx(tight / 2)
    # the paper's "sensitivity smaller than 0.0024" does not follow from Theorem 2 at |S| = 512, rho = 1.4
    assert cost.dplc_sensitivity > cost.paper_reported_sensitivity
    assert cost.naive_sigma_same_epsilon == pytest.approx(2 * math.sqrt(2 * math.log(1.25 / 5e-5)) / 0.9)
    assert cost.naive_epsilon_same_sigma == pytest.approx(gaussian_epsilon(cost.dplc_sigma, 2.0, 5e-5))
    assert cost.to_dict()["num_classes"] == 7000


def test_property3_norm_bounds_hold_on_random_clusters():
    rng = np.random.default_rng(1)
    for rho in (0.3, 1.0, 1.3):
        for size in (2, 10, 100):
            w0 = np.zeros(8)
            w0[0] = 1
            directions = rng.normal(size=(size - 1, 8))
            directions -= np.outer(directions @ w0, w0)
            directions /= np.linalg.norm(directions, axis=1, keepdims=True)
            angles = rng.uniform(0, rho, size - 1)
            members = np.vstack([w0, np.cos(angles)[:, None] * w0 + np.sin(angles)[:, None] * directions])
            low, high = cluster_mean_norm_bounds(rho, size)
            norm = np.linalg.norm(members.mean(0))
            assert low - 1e-12 <= norm <= high + 1e-12
            assert low > math.cos(rho)  # sharper than the paper's (cos rho, 1]


def test_property3_noise_norm_distribution():
    sigma, dim = 0.03, 512
    chi = stats.chi(df=dim, scale=sigma)
    assert expected_noise_norm(sigma, dim) == pytest.approx(chi.mean(), rel=1e-10)
    for r in (0.6, 0.68, 0.7):
        assert noise_norm_cdf(r, sigma, dim) == pytest.approx(chi.cdf(r), rel=1e-9, abs=1e-15)
    assert noise_norm_quantile(0.95, sigma, dim) == pytest.approx(chi.ppf(0.95), rel=1e-9)
    # the paper's normal approximation (with its d - 1 degrees of freedom) is close but not exact
    approx = noise_norm_cdf(0.68, sigma, dim, method="paper")
    assert abs(approx - chi.cdf(0.68)) < 0.05
    assert approx != pytest.approx(chi.cdf(0.68), rel=1e-6)
    rng = np.random.default_rng(0)
    norms = np.linalg.norm(rng.normal(0, sigma, size=(4000, dim)), axis=1)
    assert norms.mean() == pytest.approx(expected_noise_norm(sigma, dim), rel=2e-3)


def test_property4_cosine_bound_is_the_minimum_over_directions():
    for p_norm, v_norm in ((1.0, 0.3), (0.5, 0.49), (0.8, 0.0)):
        a = v_norm / p_norm
        x = np.linspace(-1, 1, 200_001)
        brute = np.min((1 + a * x) / np.sqrt(1 + a * a + 2 * a * x))
        assert cosine_lower_bound(p_norm, v_norm) == pytest.approx(brute, abs=1e-8)
    assert cosine_lower_bound(0.5, 0.7) == -1.0


def test_properties_3_and_4_combined_bound_holds_by_monte_carlo():
    rho, size, dim = 0.5, 64, 32
    sigma = 0.02
    bound = dplc_cosine_lower_bound(rho, size, sigma, dim, probability=0.95)
    assert bound > 0.9
    rng = np.random.default_rng(5)
    p = np.zeros(dim)
    p[0] = cluster_mean_norm_bounds(rho, size)[0]  # the smallest ||p|| the bound allows
    noisy = p + rng.normal(0, sigma, size=(20_000, dim))
    cosines = noisy @ p / (np.linalg.norm(noisy, axis=1) * np.linalg.norm(p))
    assert np.mean(cosines >= bound) >= 0.95


@pytest.mark.parametrize("call,name", [
    (lambda: occupancy_ratio(-0.1, 5), "rho"),
    (lambda: occupancy_ratio(4.0, 5), "rho"),
    (lambda: occupancy_ratio(1.0, 1), "dim"),
    (lambda: occupancy_ratio(1.0, 3.5), "dim"),
    (lambda: dplc_sensitivity(0.0, 5), "rho"),
    (lambda: dplc_sensitivity(1.0, 0), "cluster_size"),
    (lambda: dplc_sensitivity(1.0, True), "cluster_size"),
    (lambda: dplc_sensitivity(1.0, 5, bound="loose"), "bound"),
    (lambda: dplc_sigma(1.0, 5, 0.0, 1e-5), "epsilon"),
    (lambda: dplc_sigma(1.0, 5, 1.0, 2.0), "delta"),
    (lambda: naive_center_cost(1.0, 5, 0, 1.0, 1e-5), "num_classes"),
    (lambda: noise_norm_cdf(-1.0, 1.0, 5), "radius"),
    (lambda: cosine_lower_bound(0.0, 0.1), "p_norm"),
    (lambda: noise_norm_quantile(1.0, 1.0, 5), "probability"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
