"""PrivacyFace / DPLC quantities: Theorems 1-3, Properties 3-4 and the naive alternative (App. A.2.2).

All formulas are those of Meng et al., "Improving Federated Learning Face Recognition via
Privacy-Agnostic Clusters", ICLR 2022 (``shared/papers/privacyface.md``). Where the paper's own
numbers or statements disagree with its formulas (or with the mathematics), the functions follow
the correct formula and the docstring says where the paper differs.

Dimensions: ``dim`` is the number of coordinates of the embedding (d = 512 in the paper); the
sphere is the unit sphere of R^dim.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy.special import betainc, gammainc, gammaincinv, gammaln, ndtr

from accountants._validation import (
    check_choice,
    check_delta,
    check_epsilon,
    check_finite_real,
    check_in_range,
    check_int,
    check_open_unit,
    check_positive,
)
from accountants.mechanisms import METHODS, gaussian_epsilon, gaussian_sigma

BOUNDS = ("tight", "weak")


def _check_rho(rho: float, *, allow_zero: bool) -> float:
    return check_in_range("rho", rho, 0.0, math.pi, low_open=not allow_zero)


def _check_dim(dim: int) -> int:
    return check_int("dim", dim, 2)


def occupancy_ratio(rho: float, dim: int) -> float:
    """Fraction of the unit sphere of R^dim within angle `rho` of a point (Theorem 1).

    Theorem 1 (proof in App. A.1.1, after Li 2011): the cap {f : arccos(f^T p) <= rho} occupies

        1/2 * I_{sin^2 rho}((d - 1)/2, 1/2)            for rho in [0, pi/2],

    of the surface, with I_x(a, b) the regularised incomplete beta function (scipy's `betainc`).
    The formula is valid and increasing on [0, pi/2] only (sin^2 is not monotone beyond); for
    rho in (pi/2, pi] the cap is the complement of the cap of angle pi - rho, so the ratio is
    1 - 1/2 * I_{sin^2 rho}((d-1)/2, 1/2). Checks: d = 2 gives rho/pi, d = 3 gives (1 - cos rho)/2.

    Args:
        rho: cap angle (the cluster margin) in [0, pi].
        dim: embedding dimension d >= 2.
    """
    rho = _check_rho(rho, allow_zero=True)
    dim = _check_dim(dim)
    half = 0.5 * float(betainc((dim - 1) / 2.0, 0.5, math.sin(rho) ** 2))
    return half if rho <= math.pi / 2 else 1.0 - half


def _chord(angle: float) -> float:
    """Largest Euclidean distance between two unit vectors at angle <= `angle` (angle in [0, 2 pi])."""
    return 2.0 * math.sin(min(angle, math.pi) / 2.0)


def dplc_sensitivity(rho: float, cluster_size: int, bound: str = "tight") -> float:
    """l2-sensitivity of f(S) = (1/|S|) sum_{i in S} w_i for a fixed cluster S inside a cap of angle rho.

    Neighbouring clusters have the same size and differ in one member, both members lying in the
    same spherical cap of angle `rho` (the cap centred at w_o in the proofs).

    * ``bound="tight"``: Theorem 2, Delta = (1/|S|) sqrt(2 - 2 cos 2 rho) = 2 sin(rho)/|S|. The proof
      uses the angle bound angle(w, w') <= 2 rho (Lemma 2), which gives the chord sqrt(2 - 2 cos 2rho)
      only while 2 rho <= pi. The paper states rho in [0, pi]; for rho > pi/2 its expression
      decreases again and *under*-states the sensitivity (at rho = pi it gives 0). We use the
      correct chord, which saturates at 2/|S| for rho >= pi/2.
    * ``bound="weak"``: Theorem 3 (App. A.1.2), Delta = (2/|S|) sqrt(2 - 2 cos rho) = 4 sin(rho/2)/|S|,
      from the triangle inequality through the cap centre. Never smaller than the tight bound: the
      ratio tight/weak is sin(rho)/(2 sin(rho/2)) = cos(rho/2), 0.796 at rho = 1.3 (App. A.1.2 says
      the cost "drops from 1 to 0.793"; its own formulas give 0.796).

    Args:
        rho: cluster margin in (0, pi].
        cluster_size: |S| >= 1.
        bound: ``"tight"`` (Theorem 2) or ``"weak"`` (Theorem 3).
    """
    rho = _check_rho(rho, allow_zero=False)
    cluster_size = check_int("cluster_size", cluster_size, 1)
    check_choice("bound", bound, BOUNDS)
    if bound == "tight":
        return _chord(2.0 * rho) / cluster_size
    return 4.0 * math.sin(rho / 2.0) / cluster_size  # = 2 sqrt(2 - 2 cos rho), without cancellation


def dplc_sigma(
    rho: float,
    cluster_size: int,
    epsilon: float,
    delta: float,
    bound: str = "tight",
    method: str = "analytic",
    strict: bool = False,
) -> float:
    """Noise sigma of the DPLC Gaussian mechanism M(S) = f(S) + N(0, sigma^2 I) (Theorems 2 and 3).

    With ``bound="tight", method="classic"`` this is line 7 of Algorithm 1:
    sigma = (2/(|S| eps)) sqrt((1 - cos 2 rho) ln(1.25/delta)). ``method="analytic"`` uses the
    Balle & Wang calibration of the same sensitivity (exact for every epsilon).
    """
    sensitivity = dplc_sensitivity(rho, cluster_size, bound)
    return gaussian_sigma(sensitivity, epsilon, delta, method=method, strict=strict)


# --------------------------------------------------------------------------------------------
# Property 3: magnitudes of p and v
# --------------------------------------------------------------------------------------------


def cluster_mean_norm_bounds(rho: float, cluster_size: int) -> tuple[float, float]:
    """Bounds on ||p||, p = mean of |S| unit vectors within angle rho of a member w_o (Property 3).

    The proof of Property 3 gives ||p|| >= p^T w_o >= (1 + (|S| - 1) cos rho)/|S| and ||p|| <= 1;
    the paper states the weaker (cos rho, 1]. Returns (lower, upper) with the lower bound clamped
    at 0 when cos rho < 0 makes it negative (a norm is never negative).
    """
    rho = _check_rho(rho, allow_zero=True)
    cluster_size = check_int("cluster_size", cluster_size, 1)
    lower = (1.0 + (cluster_size - 1) * math.cos(rho)) / cluster_size
    return max(0.0, lower), 1.0


def expected_noise_norm(sigma: float, dim: int) -> float:
    """E||v|| for v ~ N(0, sigma^2 I_d): sigma sqrt(2) Gamma((d+1)/2) / Gamma(d/2) (chi distribution)."""
    sigma = check_positive("sigma", sigma)
    dim = _check_dim(dim)
    return sigma * math.sqrt(2.0) * math.exp(gammaln((dim + 1) / 2.0) - gammaln(dim / 2.0))


def noise_norm_cdf(radius: float, sigma: float, dim: int, method: str = "exact") -> float:
    """P(||v|| <= radius) for v ~ N(0, sigma^2 I_d) (Property 3).

    ``method="exact"``: ||v||^2 / sigma^2 ~ chi^2 with d degrees of freedom, so the probability is
    the regularised lower gamma function P(d/2, r^2/(2 sigma^2)).
    ``method="paper"``: Property 3's normal approximation Phi((r^2/sigma^2 - (d-1)) / sqrt(2(d-1))).
    The paper writes chi^2 with d - 1 degrees of freedom; a sum of d squared standard normals has
    d, so its approximation is slightly off-centre (it is kept to reproduce the paper).
    """
    radius = check_finite_real("radius", radius)
    if radius < 0:
        raise ValueError(f"radius must be in [0, inf); got {radius!r}")
    sigma = check_positive("sigma", sigma)
    dim = _check_dim(dim)
    check_choice("method", method, ("exact", "paper"))
    z = radius * radius / (sigma * sigma)
    if method == "exact":
        return float(gammainc(dim / 2.0, z / 2.0))
    return float(ndtr((z - (dim - 1)) / math.sqrt(2.0 * (dim - 1))))


def noise_norm_quantile(probability: float, sigma: float, dim: int) -> float:
    """The radius r with P(||v|| <= r) = probability for v ~ N(0, sigma^2 I_d) (exact chi law)."""
    probability = check_open_unit("probability", probability)
    sigma = check_positive("sigma", sigma)
    dim = _check_dim(dim)
    return sigma * math.sqrt(2.0 * float(gammaincinv(dim / 2.0, probability)))


# --------------------------------------------------------------------------------------------
# Property 4: cosine between p and the noisy p_hat
# --------------------------------------------------------------------------------------------


def cosine_lower_bound(p_norm: float, noise_norm: float) -> float:
    """Lower bound on cos(p, p + v) given ||p|| and ||v|| (Property 4).

    With a = ||v||/||p|| < 1, the cosine (1 + a x)/sqrt(1 + a^2 + 2 a x) over the unknown
    x = cos(p, v) in [-1, 1] is smallest at x = -a, where it equals sqrt(1 - a^2). (The paper's
    statement lost its square in extraction; this is the minimum its proof derives.) When
    ||v|| >= ||p|| the noise can point straight against p and the bound is the trivial -1 (for
    ||v|| = ||p|| the infimum 0 is not attained in general; -1 is returned as the safe value).
    """
    p_norm = check_positive("p_norm", p_norm)
    noise_norm = check_finite_real("noise_norm", noise_norm)
    if noise_norm < 0:
        raise ValueError(f"noise_norm must be in [0, inf); got {noise_norm!r}")
    ratio = noise_norm / p_norm
    if ratio >= 1.0:
        return -1.0
    return math.sqrt(1.0 - ratio * ratio)


def dplc_cosine_lower_bound(rho: float, cluster_size: int, sigma: float, dim: int, probability: float = 0.95) -> float:
    """A bound c with P(cos(p, p_hat) >= c) >= probability for the DPLC release (Properties 3 + 4).

    Combines the exact noise-norm quantile r (Property 3, chi law) with the lower bound on ||p||
    from `cluster_mean_norm_bounds` in Property 4: c = sqrt(1 - (r/||p||_min)^2), or -1 if r >= ||p||_min.
    """
    p_min, _ = cluster_mean_norm_bounds(rho, cluster_size)
    radius = noise_norm_quantile(probability, sigma, dim)
    if p_min <= 0:
        return -1.0
    return cosine_lower_bound(p_min, radius)


# --------------------------------------------------------------------------------------------
# App. A.2.2: the naive per-class-center alternative
# --------------------------------------------------------------------------------------------

NAIVE_SENSITIVITY = 2.0
"""l2 distance between two unit vectors at most 2: the sensitivity of releasing one class center."""


@dataclass(frozen=True)
class NaiveCostComparison:
    """DPLC against noising every class center (App. A.2.2), recomputed from first principles."""

    rho: float
    cluster_size: int
    num_classes: int
    queries: int
    epsilon: float
    delta: float
    method: str
    dplc_sensitivity: float
    naive_sensitivity: float
    paper_cost_ratio: float
    """(Delta_DPLC * Q) / (Delta_naive * num_classes): the paper's model (privacy cost proportional to
    sensitivity, and to the number of queries with one query per class center)."""
    paper_reported_sensitivity: float
    paper_reported_ratio: float
    dplc_sigma: float
    naive_sigma_same_epsilon: float
    """sigma each noisy class center needs for (epsilon, delta) per center (sensitivity 2)."""
    naive_epsilon_same_sigma: float
    """epsilon of releasing one class center with DPLC's sigma (exact analytic Gaussian)."""
    parallel_cost_ratio: float
    """Delta_DPLC * Q / Delta_naive: the ratio when the class centers' releases are accounted by
    parallel composition (each touches a different record), which is what Definition 1's
    "differ in one row" gives."""

    def to_dict(self) -> dict:
        return asdict(self)


def naive_center_cost(
    rho: float,
    cluster_size: int,
    num_classes: int,
    epsilon: float,
    delta: float,
    queries: int = 1,
    method: str = "classic",
) -> NaiveCostComparison:
    """Compare DPLC with the naive approach of App. A.2.2 (noise on each of `num_classes` centers).

    The paper argues (i) the naive sensitivity is 2 against DPLC's (1/|S|) sqrt(2 - 2 cos 2 rho), and
    (ii) the naive approach needs one query per identity, so "the privacy cost of DPLC is
    0.0024/(2 * 7000) ~ 1.7e-7 of that of the naive approach" (|S| > 512, rho = 1.4, 7000 classes, Q = 1).

    Where the paper differs from its own formulas:

    * Theorem 2 at |S| = 512, rho = 1.4 gives 2 sin(1.4)/512 = 3.85e-3, not "smaller than 0.0024",
      so the same model gives a ratio of 2.75e-7, not 1.7e-7 (`paper_cost_ratio` follows the formula;
      `paper_reported_*` hold the paper's numbers for comparison).
    * Under Definition 1 (neighbours differ in one row, here one class center) releasing every
      class center with independent noise is a *parallel* composition: a neighbour changes a single
      release, so the naive cost does not grow with the number of classes. The comparison that
      follows from the definitions is `parallel_cost_ratio` = Delta_DPLC * Q / 2 (about 1.9e-3 at
      the paper's settings), four orders of magnitude less favourable to DPLC than 1.7e-7.

    Args:
        rho: cluster margin in (0, pi]. cluster_size: |S| >= 1. num_classes: class centers >= 1.
        epsilon, delta: the per-query budget. queries: DPLC queries Q >= 1.
        method: Gaussian calibration for the sigma fields (``"classic"`` as in the paper, or ``"analytic"``).
    """
    rho = _check_rho(rho, allow_zero=False)
    cluster_size = check_int("cluster_size", cluster_size, 1)
    num_classes = check_int("num_classes", num_classes, 1)
    queries = check_int("queries", queries, 1)
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    check_choice("method", method, METHODS)
    sens = dplc_sensitivity(rho, cluster_size, "tight")
    sigma = gaussian_sigma(sens, epsilon, delta, method=method)
    naive_sigma = gaussian_sigma(NAIVE_SENSITIVITY, epsilon, delta, method=method)
    return NaiveCostComparison(
        rho=rho,
        cluster_size=cluster_size,
        num_classes=num_classes,
        queries=queries,
        epsilon=epsilon,
        delta=delta,
        method=method,
        dplc_sensitivity=sens,
        naive_sensitivity=NAIVE_SENSITIVITY,
        paper_cost_ratio=sens * queries / (NAIVE_SENSITIVITY * num_classes),
        paper_reported_sensitivity=0.0024,
        paper_reported_ratio=1.7e-7,
        dplc_sigma=sigma,
        naive_sigma_same_epsilon=naive_sigma,
        naive_epsilon_same_sigma=gaussian_epsilon(sigma, NAIVE_SENSITIVITY, delta, method="analytic"),
        parallel_cost_ratio=sens * queries / NAIVE_SENSITIVITY,
    )
