"""Distinguishing games for DPLC: the Theorem 2 mechanism, Algorithm 1 end to end, the private variant.

Scenarios (neighbouring sets of class centers that differ in one row, Definition 1):

* `theorem2_pair`: a fixed cluster S in the cap of angle rho around e1; the differing members sit
  on opposite edges of the cap (angle ~2 rho apart), the worst case of Theorem 2.
* `densest_flip_pair`: two clusters A (around e1) and B (around -e1); moving one member from A
  to B changes which neighbourhood is densest, so Algorithm 1 averages a different S.
* `threshold_pair`: a cluster with exactly T members; moving one member away pushes |S| below
  the threshold T, so Algorithm 1 releases nothing.

`audit_theorem2`, `audit_algorithm1` and `audit_private` run `accountants.audit.run_distinguishing_game`
on these and return the claimed epsilon next to the empirical lower bound.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from accountants._validation import check_choice, check_delta, check_epsilon, check_in_range, check_int
from accountants.audit import AuditResult, run_distinguishing_game
from accountants.composition import compute_epsilon
from accountants.dplc import dplc_sensitivity, dplc_sigma
from accountants.dplc_reference import DplcRelease, dplc_algorithm1, private_dplc
from accountants.mechanisms import ClassicGaussianRangeWarning, gaussian_epsilon


@dataclass(frozen=True)
class NeighbouringCenters:
    """Two neighbouring sets of class centers and the directions their releases lean towards."""

    name: str
    dataset_0: np.ndarray
    dataset_1: np.ndarray
    reference_0: np.ndarray
    reference_1: np.ndarray
    candidates: np.ndarray
    """public cap centers for `private_dplc` (independent of the private rows)."""
    description: str


def _basis(dim: int) -> tuple[np.ndarray, np.ndarray]:
    e1 = np.zeros(dim)
    e1[0] = 1.0
    e2 = np.zeros(dim)
    e2[1] = 1.0
    return e1, e2


def _cap_points(center: np.ndarray, max_angle: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors at angle uniform in [0, max_angle] from `center`, random directions."""
    dim = center.size
    directions = rng.normal(size=(count, dim))
    directions -= (directions @ center)[:, None] * center[None, :]
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    angles = rng.uniform(0.0, max_angle, size=count)
    return np.cos(angles)[:, None] * center[None, :] + np.sin(angles)[:, None] * directions


def _check_geometry(dim: int, rho: float) -> tuple[int, float]:
    dim = check_int("dim", dim, 3)
    rho = check_in_range("rho", rho, 0.0, math.pi / 2.0, low_open=True)
    return dim, rho


def theorem2_pair(dim: int = 16, rho: float = 1.3, cluster_size: int = 32, seed: int = 0) -> NeighbouringCenters:
    """A fixed S (|S| = cluster_size) inside the cap of angle rho around e1; the neighbours swap a
    member at angle rho on the +e2 side (dataset_1) for its mirror image on the -e2 side (dataset_0),
    so ||f(S) - f(S')|| = 2 sin(rho)/|S|, Theorem 2's bound (up to a 1e-9 margin kept inside the cap)."""
    dim, rho = _check_geometry(dim, rho)
    cluster_size = check_int("cluster_size", cluster_size, 2)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    e1, e2 = _basis(dim)
    edge = rho * (1.0 - 1e-9)
    others = _cap_points(e1, rho * 0.9, cluster_size - 1, rng)
    plus = math.cos(edge) * e1 + math.sin(edge) * e2
    minus = math.cos(edge) * e1 - math.sin(edge) * e2
    return NeighbouringCenters(
        name="theorem2-edge-swap",
        dataset_0=np.vstack([others, minus]),
        dataset_1=np.vstack([others, plus]),
        reference_0=-e2,
        reference_1=e2,
        candidates=np.vstack([e1, -e1]),
        description=f"|S|={cluster_size} in a cap of angle {rho}; one member swapped across the cap (angle 2 rho)",
    )


def densest_flip_pair(dim: int = 16, rho: float = 1.3, cluster_size: int = 32, seed: int = 0) -> NeighbouringCenters:
    """Cluster A around e1 and B around -e1 (members within rho/2 of their center, so every member
    of a cluster neighbours all the others, and the clusters are > rho apart). dataset_0 has
    |A| = cluster_size, |B| = cluster_size - 1; dataset_1 moves one member from A into B, so the
    densest neighbourhood flips from A to B."""
    dim, rho = _check_geometry(dim, rho)
    cluster_size = check_int("cluster_size", cluster_size, 3)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    e1, _ = _basis(dim)
    spread = 0.45 * rho
    a_members = _cap_points(e1, spread, cluster_size, rng)
    b_members = _cap_points(-e1, spread, cluster_size - 1, rng)
    moved = _cap_points(-e1, spread, 1, rng)
    base = np.vstack([a_members[:-1], b_members])
    return NeighbouringCenters(
        name="densest-flip",
        dataset_0=np.vstack([base, a_members[-1:]]),
        dataset_1=np.vstack([base, moved]),
        reference_0=e1,
        reference_1=-e1,
        candidates=np.vstack([e1, -e1]),
        description=f"clusters of {cluster_size} and {cluster_size - 1}; one member moves from A to B",
    )


def threshold_pair(dim: int = 16, rho: float = 1.3, min_cluster_size: int = 32, seed: int = 0) -> NeighbouringCenters:
    """dataset_1: a cluster of exactly T = min_cluster_size members around e1 plus one point near -e1;
    dataset_0 moves one cluster member next to that point, leaving |S| = T - 1 < T (no release).
    T >= 3, so that the two points near -e1 stay below T too."""
    dim, rho = _check_geometry(dim, rho)
    min_cluster_size = check_int("min_cluster_size", min_cluster_size, 3)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    e1, _ = _basis(dim)
    spread = 0.45 * rho
    cluster = _cap_points(e1, spread, min_cluster_size, rng)
    far = _cap_points(-e1, spread, 2, rng)
    base = np.vstack([cluster[:-1], far[:1]])
    return NeighbouringCenters(
        name="threshold-crossing",
        dataset_0=np.vstack([base, far[1:]]),
        dataset_1=np.vstack([base, cluster[-1:]]),
        reference_0=-e1,
        reference_1=e1,
        candidates=np.vstack([e1, -e1]),
        description=f"|S| = T = {min_cluster_size} against T - 1: the threshold decides whether anything is released",
    )


def release_score(release: DplcRelease, reference_0: np.ndarray, reference_1: np.ndarray) -> float:
    """cos(p_hat_1, reference_1) - cos(p_hat_1, reference_0) of the first release; -inf if none."""
    if release.num_released == 0:
        return -math.inf
    first = release.centers[0]
    return float(first @ reference_1 - first @ reference_0)


@dataclass(frozen=True)
class DplcAudit:
    """Claimed epsilon against the empirical lower bound for one target and scenario."""

    target: str
    scenario: str
    claimed_epsilon: float
    formal_epsilon: float | None
    """epsilon an accountant proves for the audited mechanism: exact for the Theorem 2 mechanism, the
    (exact GDP) accounting of its events for the private variant, None for Algorithm 1 (no valid proof)."""
    delta: float
    audit: AuditResult
    description: str

    @property
    def within_claim(self) -> bool:
        return self.audit.epsilon_lb <= self.claimed_epsilon

    def to_row(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "scenario": self.scenario,
            "claimed_epsilon": self.claimed_epsilon,
            "formal_epsilon": self.formal_epsilon,
            "delta": self.delta,
            "epsilon_lb": self.audit.epsilon_lb,
            "epsilon_gdp": self.audit.epsilon_gdp,
            "trials": self.audit.trials,
            "evaluation_trials": self.audit.evaluation_trials,
            "confidence": self.audit.confidence,
            "false_positives": self.audit.false_positives,
            "false_negatives": self.audit.false_negatives,
            "within_claim": self.within_claim,
        }


def audit_theorem2(
    *,
    dim: int = 16,
    rho: float = 1.3,
    cluster_size: int = 32,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    method: str = "analytic",
    trials: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> DplcAudit:
    """(a) The mechanism of Theorem 2 alone: M(S) = f(S) + N(0, sigma^2 I) for a fixed S, neighbours
    swapping a member across the cap; the statistic is the projection on the swap direction."""
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    scenario = theorem2_pair(dim, rho, cluster_size, seed)
    with warnings.catch_warnings():
        # the classic calibration at epsilon >= 1 warns; the audit reports the claim it tests
        warnings.simplefilter("ignore", ClassicGaussianRangeWarning)
        sigma = dplc_sigma(rho, cluster_size, epsilon, delta, method=method)
    exact = gaussian_epsilon(sigma, dplc_sensitivity(rho, cluster_size), delta, method="analytic")

    def mechanism(centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return centers.mean(axis=0) + rng.normal(0.0, sigma, size=centers.shape[1])

    result = run_distinguishing_game(
        mechanism,
        scenario.dataset_0,
        scenario.dataset_1,
        lambda out: float(out @ scenario.reference_1),
        trials,
        delta,
        confidence,
        seed=seed,
        progress=progress,
    )
    return DplcAudit("theorem2-mechanism", scenario.name, epsilon, exact, delta, result, scenario.description)


def audit_algorithm1(
    scenario: NeighbouringCenters,
    *,
    rho: float = 1.3,
    min_cluster_size: int = 16,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    method: str = "analytic",
    max_queries: int = 1,
    trials: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> DplcAudit:
    """(b) Algorithm 1 end to end on adversarial neighbours; the claim is Property 2's (Q eps, Q delta)."""
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    max_queries = check_int("max_queries", max_queries, 1)

    def mechanism(centers: np.ndarray, rng: np.random.Generator) -> DplcRelease:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClassicGaussianRangeWarning)
            return dplc_algorithm1(
                centers,
                rho=rho,
                min_cluster_size=min_cluster_size,
                max_queries=max_queries,
                epsilon=epsilon,
                delta=delta,
                rng=rng,
                method=method,
            )

    result = run_distinguishing_game(
        mechanism,
        scenario.dataset_0,
        scenario.dataset_1,
        lambda rel: release_score(rel, scenario.reference_0, scenario.reference_1),
        trials,
        min(max_queries * delta, 0.5),
        confidence,
        seed=seed,
        progress=progress,
    )
    return DplcAudit(
        "algorithm1",
        scenario.name,
        max_queries * epsilon,
        None,
        min(max_queries * delta, 0.5),
        result,
        scenario.description,
    )


def audit_private(
    scenario: NeighbouringCenters,
    *,
    mode: str = "candidates",
    rho: float = 1.3,
    min_cluster_size: int = 16,
    epsilon: float = 1.0,
    delta: float = 1e-5,
    max_queries: int = 1,
    trials: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> DplcAudit:
    """(c) The private variant on the same neighbours; its claim is its end-to-end (epsilon, delta).

    ``mode="candidates"`` uses the scenario's public candidates; ``"mean-shift"`` none.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    check_choice("mode", mode, ("candidates", "mean-shift"))
    candidates = scenario.candidates if mode == "candidates" else None

    def mechanism(centers: np.ndarray, rng: np.random.Generator) -> DplcRelease:
        return private_dplc(
            centers,
            candidates,
            rho=rho,
            min_cluster_size=min_cluster_size,
            max_queries=max_queries,
            epsilon=epsilon,
            delta=delta,
            rng=rng,
        )

    accounted = compute_epsilon(mechanism(scenario.dataset_0, np.random.default_rng(0)).event, delta, "gdp").epsilon

    result = run_distinguishing_game(
        mechanism,
        scenario.dataset_0,
        scenario.dataset_1,
        lambda rel: release_score(rel, scenario.reference_0, scenario.reference_1),
        trials,
        delta,
        confidence,
        seed=seed,
        progress=progress,
    )
    return DplcAudit(f"private-dplc ({mode})", scenario.name, epsilon, accounted, delta, result, scenario.description)
