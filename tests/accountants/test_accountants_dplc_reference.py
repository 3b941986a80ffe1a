"""Algorithm 1 (reference), the private variant, and the DPLC audits (a), (b), (c) at small scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from accountants import (
    GaussianEvent,
    compute_epsilon,
    dplc_algorithm1,
    dplc_sensitivity,
    dplc_sigma,
    private_dplc,
)
from accountants.dplc_audit import (
    audit_algorithm1,
    audit_private,
    audit_theorem2,
    densest_flip_pair,
    release_score,
    theorem2_pair,
    threshold_pair,
)
from accountants.dplc_reference import (
    candidate_multiplicity,
    cap_sum_sensitivity,
    count_vector_sensitivity,
    plan_private_dplc,
)
from accountants.testing import assert_audit_within, assert_sensitivity_bound


def _cluster(center: np.ndarray, count: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    directions = rng.normal(size=(count, center.size))
    directions -= np.outer(directions @ center, center)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    angles = rng.uniform(0, spread, count)
    return np.cos(angles)[:, None] * center + np.sin(angles)[:, None] * directions


def _two_clusters(seed: int = 0, dim: int = 12, big: int = 40, small: int = 25):
    rng = np.random.default_rng(seed)
    e = np.eye(dim)
    first, second = _cluster(e[0], big, 0.3, rng), _cluster(e[1], small, 0.3, rng)
    scattered = rng.normal(size=(10, dim))
    scattered[:, :2] = -np.abs(scattered[:, :2]) * 3  # away from both clusters
    return np.vstack([scattered, second, first]), e[0], e[1], first, second


def test_algorithm1_finds_densest_clusters_in_order_and_stops_at_threshold():
    centers, e0, e1, first, second = _two_clusters()
    rho = 0.6
    release = dplc_algorithm1(centers, rho=rho, min_cluster_size=20, max_queries=5, epsilon=50.0, delta=1e-5, rng=0,
                              method="analytic")
    assert release.num_released == 2 and release.stopped_early
    assert release.cluster_sizes == (40, 25)
    assert release.centers[0] @ e0 > 0.95 and release.centers[1] @ e1 > 0.95
    np.testing.assert_allclose(np.linalg.norm(release.centers, axis=1), 1.0)
    np.testing.assert_allclose(release.clean_centers[0], first.mean(0), atol=1e-12)
    # sigma and the claimed events follow Theorem 2
    assert release.sigmas[0] == pytest.approx(dplc_sigma(rho, 40, 50.0, 1e-5, method="analytic"))
    assert release.events[0] == GaussianEvent(release.sigmas[0] / dplc_sensitivity(rho, 40), unit="class-center")
    assert not release.end_to_end_private
    assert release.records[0]["cluster_size"] == 40 and release.records[0]["noise_multiplier"] > 0


def test_algorithm1_is_deterministic_given_the_seed_and_respects_max_queries():
    centers, *_ = _two_clusters(seed=3)
    kwargs = dict(rho=0.6, min_cluster_size=5, max_queries=1, epsilon=0.5, delta=1e-5)
    first = dplc_algorithm1(centers, rng=np.random.default_rng(4), **kwargs)
    second = dplc_algorithm1(centers, rng=np.random.default_rng(4), **kwargs)
    np.testing.assert_array_equal(first.centers, second.centers)
    assert first.num_released == 1 and not first.stopped_early
    third = dplc_algorithm1(centers, rng=5, **kwargs)
    assert not np.array_equal(first.centers, third.centers)
    # the paper's classic calibration at epsilon >= 1 warns, as in gaussian_sigma
    with pytest.warns(Warning, match="epsilon in"):
        dplc_algorithm1(centers, rng=1, **{**kwargs, "epsilon": 1.0})


@pytest.mark.parametrize("bad,name", [
    (dict(class_centers=np.zeros((3, 4))), "class_centers"),
    (dict(class_centers=np.ones(4)), "class_centers"),
    (dict(class_centers=np.ones((3, 1))), "class_centers"),
    (dict(rho=0.0), "rho"),
    (dict(min_cluster_size=0), "min_cluster_size"),
    (dict(max_queries=0), "max_queries"),
    (dict(epsilon=-1.0), "epsilon"),
    (dict(delta=1.0), "delta"),
    (dict(rng="seed"), "rng"),
])
def test_algorithm1_bad_input(bad, name):
    kwargs = dict(class_centers=np.eye(4), rho=1.0, min_cluster_size=1, max_queries=1, epsilon=0.5, delta=1e-5, rng=0)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=name):
        dplc_algorithm1(kwargs.pop("class_centers"), **kwargs)


def test_private_variant_with_candidates_recovers_clusters_and_accounts_everything():
    centers, e0, e1, *_ = _two_clusters(big=400, small=250)
    candidates = np.vstack([np.eye(12)[:2], -np.eye(12)[:2]])
    release = private_dplc(centers, candidates, rho=0.6, min_cluster_size=100, max_queries=3, epsilon=4.0, delta=1e-5, rng=0)
    assert release.end_to_end_private
    assert release.candidate_indices[:2] == (0, 1)
    assert release.centers[0] @ e0 > 0.9 and release.centers[1] @ e1 > 0.9
    assert release.num_released == 2 and release.stopped_early
    assert compute_epsilon(release.event, 1e-5, "gdp").epsilon == pytest.approx(4.0, rel=1e-6)
    assert [r["mode"] for r in release.records] == ["candidates", "candidates"]
    # all three queries are accounted although only two were released
    per_query = release.events[0]
    assert per_query.count == 3


def test_private_variant_mean_shift_mode_finds_the_dense_cluster():
    centers, e0, *_ = _two_clusters(big=600, small=100)
    release = private_dplc(centers, rho=0.8, min_cluster_size=200, max_queries=1, epsilon=4.0, delta=1e-5, rng=1)
    assert release.num_released == 1
    assert release.centers[0] @ e0 > 0.9
    assert compute_epsilon(release.event, 1e-5, "gdp").epsilon <= 4.0 + 1e-9


def test_private_variant_calibration_under_other_accountants_never_overshoots():
    shares = {"count": (0.25, 1), "sum": (0.75, 1)}
    for accountant in ("rdp", "basic"):
        plan = plan_private_dplc(2.0, 1e-5, 3, shares, accountant)
        assert compute_epsilon(plan.event, 1e-5, accountant).epsilon <= 2.0
    exact = plan_private_dplc(2.0, 1e-5, 3, shares, "gdp")
    assert compute_epsilon(exact.event, 1e-5, "gdp").epsilon == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="shares"):
        plan_private_dplc(2.0, 1e-5, 3, {"count": (0.5, 1)}, "gdp")


def test_private_variant_sensitivities_hold_on_random_neighbours():
    rng = np.random.default_rng(0)
    dim, rho = 6, 0.9
    candidates = rng.normal(size=(8, dim))
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    m = candidate_multiplicity(candidates, rho)
    # m by its definition, from angles; and the property it stands for: no point of the sphere
    # lies in more than m candidate caps (checked on many random points)
    angles = np.arccos(np.clip(candidates @ candidates.T, -1.0, 1.0))
    assert m == max(int((row <= 2 * rho + 1e-12).sum()) for row in angles)
    points = np.random.default_rng(1).normal(size=(20_000, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert int(((points @ candidates.T) >= math.cos(rho)).sum(axis=1).max()) <= m

    def counts(points):
        return ((points @ candidates.T) >= math.cos(rho)).sum(axis=0)

    def neighbours(count):
        for _ in range(count):
            base = rng.normal(size=(30, dim))
            base /= np.linalg.norm(base, axis=1, keepdims=True)
            other = base.copy()
            other[rng.integers(30)] = candidates[rng.integers(8)] + 0.3 * rng.normal(size=dim)
            other /= np.linalg.norm(other, axis=1, keepdims=True)
            yield base, other

    worst = assert_sensitivity_bound(counts, neighbours(3000), count_vector_sensitivity(candidates, rho))
    assert worst > 0.3
    # a point exactly on a candidate lies in that candidate's cap only if the others are > rho away
    assert candidate_multiplicity(np.vstack([np.eye(3)[0], -np.eye(3)[0]]), 1.3) == 1
    assert cap_sum_sensitivity(1.3) == pytest.approx(2 * math.sin(1.3))
    assert cap_sum_sensitivity(0.3) == 1.0
    assert cap_sum_sensitivity(1.3, "add_remove") == 1.0


def test_private_variant_bad_input():
    with pytest.raises(ValueError, match="candidates"):
        private_dplc(np.eye(4), np.eye(3), rho=1.0, min_cluster_size=1, max_queries=1, epsilon=1.0, delta=1e-5, rng=0)
    with pytest.raises(ValueError, match="direction_fraction"):
        private_dplc(np.eye(4), rho=1.0, min_cluster_size=1, max_queries=1, epsilon=1.0, delta=1e-5, rng=0,
                     count_fraction=0.6, direction_fraction=0.5)
    with pytest.raises(ValueError, match="neighbouring"):
        private_dplc(np.eye(4), rho=1.0, min_cluster_size=1, max_queries=1, epsilon=1.0, delta=1e-5, rng=0,
                     neighbouring="swap")


def test_scenarios_are_neighbours_with_the_intended_structure():
    for pair in (theorem2_pair(), densest_flip_pair(), threshold_pair(min_cluster_size=16)):
        assert pair.dataset_0.shape == pair.dataset_1.shape
        assert int(np.sum(np.any(pair.dataset_0 != pair.dataset_1, axis=1))) == 1  # one row differs
        np.testing.assert_allclose(np.linalg.norm(pair.dataset_0, axis=1), 1.0)
    flip = densest_flip_pair(cluster_size=32)
    kw = dict(rho=1.3, min_cluster_size=16, max_queries=1, epsilon=1e3, delta=1e-5, rng=0, method="analytic")
    sizes = dplc_algorithm1(flip.dataset_0, **kw), dplc_algorithm1(flip.dataset_1, **kw)
    assert release_score(sizes[0], flip.reference_0, flip.reference_1) < 0 < release_score(sizes[1], flip.reference_0,
                                                                                          flip.reference_1)
    thr = threshold_pair(min_cluster_size=16)
    assert dplc_algorithm1(thr.dataset_0, **kw).num_released == 0
    assert dplc_algorithm1(thr.dataset_1, **kw).num_released == 1


@pytest.mark.dp_audit
def test_audit_a_theorem2_mechanism_stays_within_its_claim():
    result = audit_theorem2(cluster_size=32, epsilon=2.0, delta=1e-5, trials=3000, seed=0)
    assert result.formal_epsilon == pytest.approx(2.0)
    assert result.within_claim and result.audit.epsilon_lb <= 2.0
    assert result.audit.epsilon_gdp > 0.5  # the Gaussian shape is visible


@pytest.mark.dp_audit
@pytest.mark.parametrize("scenario", [densest_flip_pair(cluster_size=64), threshold_pair(min_cluster_size=16)],
                         ids=["densest-flip", "threshold"])
def test_audit_b_algorithm1_refutes_the_end_to_end_claim(scenario):
    result = audit_algorithm1(scenario, min_cluster_size=16, epsilon=1.0, delta=1e-5, trials=1000, seed=0)
    assert result.audit.epsilon_lb > 3.0 > result.claimed_epsilon
    assert not result.within_claim


@pytest.mark.dp_audit
@pytest.mark.parametrize("scenario", [densest_flip_pair(cluster_size=64), threshold_pair(min_cluster_size=16),
                                      theorem2_pair(cluster_size=32)], ids=["densest-flip", "threshold", "edge-swap"])
def test_audit_c_private_variant_stays_within_its_claim(scenario):
    result = audit_private(scenario, min_cluster_size=16, epsilon=1.0, delta=1e-5, trials=1000, seed=0)
    assert result.within_claim
    # the same game through the pytest helper
    assert_audit_within(
        lambda centers, rng: private_dplc(centers, scenario.candidates, rho=1.3, min_cluster_size=16, max_queries=1,
                                          epsilon=1.0, delta=1e-5, rng=rng),
        1.0, 1e-5, scenario.dataset_0, scenario.dataset_1,
        lambda rel: release_score(rel, scenario.reference_0, scenario.reference_1), trials=500, seed=1)
