"""Reference DPLC (Algorithm 1 of PrivacyFace) in pure numpy, and an end-to-end private variant.

`dplc_algorithm1` is Algorithm 1 as published, the reference for the federated core's PrivacyFace
method (which may reuse it or be checked against it) and the target of the audits. Its
events are the paper's *claim*: one Gaussian mechanism per released query, noise multiplier
sigma / Delta_Thm2. That claim covers Theorem 2's setting (a fixed S); the algorithm chooses S from
the data (densest neighbourhood), releases only if |S| >= T and scales the noise by the
data-dependent |S|, none of which is privatised, so the end-to-end claim does not hold: see
`accountants.dplc_audit` for distinguishing games that show it.

`private_dplc` is a variant whose selection and threshold are themselves differentially private,
so its events do cover the whole release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accountants._validation import (
    as_generator,
    check_choice,
    check_delta,
    check_epsilon,
    check_in_range,
    check_int,
    check_open_unit,
    check_unit_rows,
)
from accountants.composition import ACCOUNTANTS, calibrate_noise_multiplier
from accountants.dplc import BOUNDS, dplc_sensitivity, dplc_sigma
from accountants.events import ComposedEvent, DpEvent, GaussianEvent, SelfComposedEvent
from accountants.mechanisms import METHODS, gdp_mu

NEIGHBOURING = ("replace", "add_remove")


@dataclass(frozen=True)
class DplcRelease:
    """What one DPLC call produces.

    Only `centers` (and, for the private variant, `noisy_counts` and `candidate_indices`, which
    the accounting covers) may be published. `clean_centers` and `cluster_sizes` are the
    un-noised internals, kept for diagnostics and tests; they are not private.
    """

    centers: np.ndarray
    """[q, d] released unit vectors p_hat (q <= max_queries)."""
    clean_centers: np.ndarray
    """[q, d] the un-noised p (diagnostics only: NOT private)."""
    cluster_sizes: tuple[int, ...]
    """|S| of each released query (diagnostics only: NOT private)."""
    sigmas: tuple[float, ...]
    """noise standard deviation used for each released query."""
    events: tuple[DpEvent, ...]
    """DP events the method claims for this call (what the ledger should record)."""
    stopped_early: bool
    """whether the loop ended before max_queries because the (noisy) threshold was not met."""
    end_to_end_private: bool
    """whether `events` cover the whole release (False for the paper's Algorithm 1)."""
    noisy_counts: tuple[float, ...] = field(default_factory=tuple)
    candidate_indices: tuple[int, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)
    public_records: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    member_indices: tuple[tuple[int, ...], ...] = field(default_factory=tuple)
    """rows of `class_centers` averaged into each released query's S (ground truth for scoring
    attacks: NOT private, never publish)."""

    @property
    def records(self) -> list[dict[str, Any]]:
        """One plain dict per release: noise scale, noise multiplier, budget, and for the private
        variant the released noisy count. For Algorithm 1 it also holds |S|, which its noise scale
        sigma ~ 1/|S| reveals anyway (one of the leaks the audit shows); the un-noised centers are
        never included."""
        return [dict(record) for record in self.public_records]

    @property
    def num_released(self) -> int:
        return int(self.centers.shape[0])

    @property
    def event(self) -> DpEvent:
        """All claimed events of the call as one event (the single event itself when there is one;
        the empty composition when nothing was released by Algorithm 1)."""
        return self.events[0] if len(self.events) == 1 else ComposedEvent(self.events)


def _normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:  # probability zero for continuous noise; keep a defined direction
        out = np.zeros_like(vector)
        out[0] = 1.0
        return out
    return vector / norm


@dataclass
class _QueryLog:
    """Per-query outputs of a DPLC loop, in release order."""

    released: list[np.ndarray] = field(default_factory=list)
    clean: list[np.ndarray] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    member_rows: list[tuple[int, ...]] = field(default_factory=list)
    stopped: bool = False

    def add(self, p_hat: np.ndarray, clean_center: np.ndarray, size: int, members: np.ndarray) -> None:
        """Record one released query (``members`` is the boolean mask of its S)."""
        self.released.append(p_hat)
        self.clean.append(clean_center)
        self.sizes.append(size)
        self.member_rows.append(tuple(int(i) for i in np.flatnonzero(members)))

    def stacked(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The released and clean centers as ``[q, dim]`` float64 arrays."""
        centers = np.asarray(self.released, dtype=np.float64).reshape(len(self.released), dim)
        clean = np.asarray(self.clean, dtype=np.float64).reshape(len(self.clean), dim)
        return centers, clean


@dataclass
class _Algorithm1Log(_QueryLog):
    """`_QueryLog` plus the noise scale and claimed event of each release of Algorithm 1."""

    sigmas: list[float] = field(default_factory=list)
    events: list[GaussianEvent] = field(default_factory=list)


@dataclass(frozen=True)
class _Algorithm1Claim:
    """The validated parameters of one `dplc_algorithm1` call that set its noise and its claim."""

    rho: float
    epsilon: float
    delta: float
    bound: str
    method: str
    strict: bool


def dplc_algorithm1(
    class_centers: Any,
    *,
    rho: float,
    min_cluster_size: int,
    max_queries: int,
    epsilon: float,
    delta: float,
    rng: np.random.Generator | int,
    bound: str = "tight",
    method: str = "classic",
    strict: bool = False,
) -> DplcRelease:
    """Algorithm 1 of PrivacyFace (Differentially Private Local Clustering), as published.

    For q = 1..Q: for every remaining class center w_i find its neighbours S_i = {j in I :
    angle(w_i, w_j) <= rho}; take the largest S (ties: lowest index); p = mean of S; if |S| >= T
    release p_hat = (p + v)/||p + v|| with v ~ N(0, sigma^2 I), sigma from Theorem 2 (line 7; the
    classic calibration by default, as in the paper), and remove from I every center within rho of
    p_hat (line 8); else stop.

    Args:
        class_centers: [n, d] class centers (rows are normalised: the paper assumes unit vectors).
        rho: margin in (0, pi]. min_cluster_size: T >= 1. max_queries: Q >= 1.
        epsilon, delta: per-query budget the paper claims (Property 2: (Q eps, Q delta) in total).
        rng: Generator or seed for the noise.
        bound: sensitivity bound for sigma ("tight" = Thm 2, "weak" = Thm 3).
        method: "classic" (paper) or "analytic" Gaussian calibration.

    Returns:
        A `DplcRelease` whose events are the paper's claim, GaussianEvent(sigma / Delta_Thm2) per
        released query, with ``end_to_end_private=False``.
    """
    centers = check_unit_rows("class_centers", class_centers)
    rho = check_in_range("rho", rho, 0.0, math.pi, low_open=True)
    min_cluster_size = check_int("min_cluster_size", min_cluster_size, 1)
    max_queries = check_int("max_queries", max_queries, 1)
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    check_choice("bound", bound, BOUNDS)
    check_choice("method", method, METHODS)
    generator = as_generator(rng)
    claim = _Algorithm1Claim(rho, epsilon, delta, bound, method, strict)
    log = _algorithm1_queries(centers, claim, min_cluster_size, max_queries, generator)
    return _algorithm1_release(log, claim, centers.shape[1])


def _algorithm1_queries(
    centers: np.ndarray,
    claim: _Algorithm1Claim,
    min_cluster_size: int,
    max_queries: int,
    generator: np.random.Generator,
) -> _Algorithm1Log:
    """Lines 2-9 of Algorithm 1: up to Q greedy densest-cap queries, each released with noise."""
    dim = centers.shape[1]
    cos_rho = math.cos(claim.rho)
    neighbours = (centers @ centers.T) >= cos_rho
    active = np.ones(centers.shape[0], dtype=bool)
    log = _Algorithm1Log()
    for _ in range(max_queries):
        if not active.any():
            log.stopped = True
            break
        counts = (neighbours & active[None, :]).sum(axis=1)
        counts[~active] = -1
        best = int(np.argmax(counts))
        members = neighbours[best] & active
        size = int(members.sum())
        p = centers[members].mean(axis=0)
        if size < min_cluster_size:
            log.stopped = True
            break
        sigma = dplc_sigma(
            claim.rho, size, claim.epsilon, claim.delta, bound=claim.bound, method=claim.method, strict=claim.strict
        )
        p_hat = _normalise(p + generator.normal(0.0, sigma, size=dim))
        active &= ~((centers @ p_hat) >= cos_rho)
        log.add(p_hat, p, size, members)
        log.sigmas.append(sigma)
        log.events.append(GaussianEvent(sigma / dplc_sensitivity(claim.rho, size, "tight"), unit="class-center"))
    return log


def _algorithm1_release(log: _Algorithm1Log, claim: _Algorithm1Claim, dim: int) -> DplcRelease:
    """Bundle Algorithm 1's releases with the paper's per-query claim and the public records."""
    released, clean = log.stacked(dim)
    return DplcRelease(
        centers=released,
        clean_centers=clean,
        cluster_sizes=tuple(log.sizes),
        sigmas=tuple(log.sigmas),
        events=tuple(log.events),
        stopped_early=log.stopped,
        end_to_end_private=False,
        member_indices=tuple(log.member_rows),
        public_records=tuple(
            {
                "sigma": sigma,
                "cluster_size": size,
                "noise_multiplier": event.noise_multiplier,
                "sensitivity": dplc_sensitivity(claim.rho, size, "tight"),
                "epsilon": claim.epsilon,
                "delta": claim.delta,
                "method": claim.method,
                "bound": claim.bound,
            }
            for sigma, size, event in zip(log.sigmas, log.sizes, log.events)
        ),
        notes=(
            "events are the paper's per-query claim (Theorem 2, fixed S); the data-dependent choice of S, the "
            "threshold |S| >= T and the 1/|S| noise scale are not privatised, so they do not cover the release",
        ),
    )


# --------------------------------------------------------------------------------------------
# the end-to-end private variant
# --------------------------------------------------------------------------------------------


def candidate_multiplicity(candidates: np.ndarray, rho: float) -> int:
    """m = max_j #{k : angle(u_j, u_k) <= 2 rho}: no point of the sphere lies in more than m of the
    candidate caps of angle rho (if x is in the caps of u_j and u_k, angle(u_j, u_k) <= 2 rho)."""
    if 2.0 * rho >= math.pi:
        return int(candidates.shape[0])
    close = (candidates @ candidates.T) >= math.cos(2.0 * rho)
    return int(close.sum(axis=1).max())


def cap_sum_sensitivity(rho: float, neighbouring: str = "replace") -> float:
    """l2 sensitivity of sum_{i in I, angle(w_i, u) <= rho} w_i for a fixed cap center u.

    Replace one center: w - w' with both in the cap (<= 2 sin(min(rho, pi/2))) or one unit vector
    entering or leaving (1): max(1, 2 sin(min(rho, pi/2))). Add/remove one center: 1.
    """
    rho = check_in_range("rho", rho, 0.0, math.pi, low_open=True)
    check_choice("neighbouring", neighbouring, NEIGHBOURING)
    if neighbouring == "add_remove":
        return 1.0
    return max(1.0, 2.0 * math.sin(min(rho, math.pi / 2.0)))


def count_vector_sensitivity(candidates: Any, rho: float, neighbouring: str = "replace") -> float:
    """l2 sensitivity of the vector of cap counts over public candidates: sqrt(2m) (replace) or
    sqrt(m) (add/remove), m = `candidate_multiplicity`."""
    units = check_unit_rows("candidates", candidates)
    rho = check_in_range("rho", rho, 0.0, math.pi, low_open=True)
    check_choice("neighbouring", neighbouring, NEIGHBOURING)
    m = candidate_multiplicity(units, rho)
    return math.sqrt(2.0 * m) if neighbouring == "replace" else math.sqrt(float(m))


@dataclass(frozen=True)
class PrivateDplcPlan:
    """Noise multipliers of one `private_dplc` call and the event they compose to.

    ``parts`` maps each Gaussian release of a query to (noise multiplier, releases per query):
    "count" (noisy counts), "sum" (noisy cap sums), and in mean-shift mode "direction" (noisy sum
    of all remaining centers).
    """

    parts: dict[str, tuple[float, int]]
    max_queries: int

    @property
    def event(self) -> DpEvent:
        per_query = ComposedEvent(
            tuple(
                SelfComposedEvent(GaussianEvent(multiplier, unit="class-center"), count)
                for multiplier, count in self.parts.values()
            )
        )
        return SelfComposedEvent(per_query, self.max_queries)

    def multiplier(self, name: str) -> float:
        return self.parts[name][0]


def plan_private_dplc(
    epsilon: float, delta: float, max_queries: int, shares: dict[str, tuple[float, int]], accountant: str = "gdp"
) -> PrivateDplcPlan:
    """Split (epsilon, delta) for `max_queries` queries over the parts of a query.

    `shares` maps a part to (share of the query's GDP budget mu_q^2, releases per query); part i
    gets noise multiplier s_i = sqrt(count_i / share_i) / mu_q, so that sum_i count_i / s_i^2 =
    mu_q^2 and Q queries compose to mu-GDP with mu^2 = Q mu_q^2 (Dong, Roth & Su 2022, Cor. 3.3).
    With ``accountant="gdp"`` this is exact and closed form (mu from `gdp_mu`); with any other
    accountant the common scale 1/mu_q is calibrated numerically, never exceeding the target.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    max_queries = check_int("max_queries", max_queries, 1)
    check_choice("accountant", accountant, ACCOUNTANTS)
    total = sum(share for share, _ in shares.values())
    if not shares or any(share <= 0 for share, _ in shares.values()) or abs(total - 1.0) > 1e-9:
        raise ValueError(f"shares must be positive and sum to 1; got {shares!r}")
    factors = {name: math.sqrt(count / share) for name, (share, count) in shares.items()}

    def plan(scale: float) -> PrivateDplcPlan:
        return PrivateDplcPlan({name: (factors[name] * scale, shares[name][1]) for name in shares}, max_queries)

    if accountant == "gdp":
        mu = gdp_mu(epsilon, delta)
        return plan(math.sqrt(max_queries) / mu)
    scale = calibrate_noise_multiplier(epsilon, delta, accountant=accountant, event_factory=lambda s: plan(s).event)
    return plan(scale)


def private_dplc(
    class_centers: Any,
    candidates: Any = None,
    *,
    rho: float,
    min_cluster_size: int,
    max_queries: int,
    epsilon: float,
    delta: float,
    rng: np.random.Generator | int,
    count_fraction: float = 0.25,
    direction_fraction: float = 0.25,
    refine_steps: int = 2,
    accountant: str = "gdp",
    neighbouring: str = "replace",
) -> DplcRelease:
    """DPLC whose selection, threshold and normalisation are private: (epsilon, delta)-DP end to end.

    Per query q = 1..Q over the remaining class centers I (rows normalised):

    *With public candidates* u_1..u_K (``candidates`` given):
      1. counts c_j = #{i in I : angle(w_i, u_j) <= rho}; c_tilde = c + N(0, sigma_c^2 I_K).
      2. j* = argmax c_tilde; stop if c_tilde[j*] < T (a noisy threshold: post-processing of 1).
      3. s_tilde = sum_{i in I in the cap of u_j*} w_i + N(0, sigma_s^2 I_d); p_hat = s_tilde/||s_tilde||.
    *Without candidates* (mean-shift mode, the default):
      1. u_0 = normalise(sum_{i in I} w_i + N(0, sigma_d^2 I_d)) (a private global direction).
      2. for t = 1..R (`refine_steps`): u_t = normalise(sum_{i in I in the cap of u_{t-1}} w_i
         + N(0, sigma_s^2 I_d)); at t = R first release the noisy count of that cap,
         c + N(0, sigma_c^2), and stop if it is < T.
      3. p_hat = u_R.
    Then, in both modes, I <- I minus the centers within rho of p_hat (line 8 of Algorithm 1).
    The normaliser is data-independent: the scale of a noisy sum is irrelevant after projecting to
    the sphere, so no |S| enters the noise (Algorithm 1 divides by the private |S|).

    Proof sketch. Neighbours replace one class center (Definition 1; ``neighbouring="add_remove"``
    for adding or removing one). Candidates must not depend on the private centers (public
    identities' centers under the broadcast model, earlier public releases, a seeded codebook).
    Given the earlier outputs of the call (public), I_q is a deterministic function of the data,
    and for neighbouring data I_q and I'_q differ in at most one element (replaced, or present in
    one only). Every released quantity is a Gaussian mechanism given the past:
    (i) the count vector changes in at most 2m coordinates by 1 (m for add/remove), since a point
    lies in at most m = `candidate_multiplicity` caps: sensitivity sqrt(2m) (sqrt(m)); a single cap
    count changes by at most 1; (ii) a cap sum for a cap fixed by public values changes by w - w'
    with both in the cap or by one unit vector: sensitivity `cap_sum_sensitivity`; (iii) the sum of
    all of I changes by at most 2 (1 for add/remove). argmax, thresholds, normalisation and the
    removal of covered centers are post-processing. Stopping early is post-processing too, and all
    Q queries are accounted regardless. The call is therefore an adaptive composition of Gaussian
    mechanisms, mu-GDP with mu^2 = Q sum_parts count/s^2 (Dong, Roth & Su 2022, Cor. 3.3), and
    `plan_private_dplc` calibrates the noise multipliers so that this reaches (epsilon, delta)
    under `accountant` ("gdp" is exact for this composition).

    Args:
        class_centers: [n, d] private class centers.
        candidates: [K, d] public cap centers, or None for the mean-shift mode.
        rho: margin in (0, pi]. min_cluster_size: T >= 1. max_queries: Q >= 1.
        epsilon, delta: the end-to-end budget of the whole call.
        rng: Generator or seed.
        count_fraction: share of a query's GDP budget mu_q^2 spent on counts.
        direction_fraction: share spent on the global direction (mean-shift mode only).
        refine_steps: R >= 1 noisy cap sums per query (mean-shift mode only; 1 with candidates).
        accountant: accountant that calibrates the noise ("gdp" exact; others numerical).
        neighbouring: "replace" or "add_remove".

    Returns:
        `DplcRelease` with ``end_to_end_private=True`` and one event covering all Q queries.
    """
    centers = check_unit_rows("class_centers", class_centers)
    rho = check_in_range("rho", rho, 0.0, math.pi, low_open=True)
    min_cluster_size = check_int("min_cluster_size", min_cluster_size, 1)
    max_queries = check_int("max_queries", max_queries, 1)
    count_fraction = check_open_unit("count_fraction", count_fraction)
    check_choice("neighbouring", neighbouring, NEIGHBOURING)
    budget = _PrivateBudget(rho, epsilon, delta, max_queries, count_fraction, accountant, neighbouring)
    if candidates is not None:
        noise = _candidate_mode_noise(centers.shape[1], candidates, budget)
    else:
        noise = _mean_shift_mode_noise(budget, direction_fraction, refine_steps)
    log = _private_queries(centers, noise, budget, min_cluster_size, as_generator(rng))
    return _private_release(log, noise, budget, centers.shape[1])


@dataclass(frozen=True)
class _PrivateBudget:
    """The validated parameters of one `private_dplc` call that set its noise plan."""

    rho: float
    epsilon: float
    delta: float
    max_queries: int
    count_fraction: float
    accountant: str
    neighbouring: str

    def plan(self, shares: dict[str, tuple[float, int]]) -> PrivateDplcPlan:
        """`plan_private_dplc` for this call's budget over the given parts of a query."""
        return plan_private_dplc(self.epsilon, self.delta, self.max_queries, shares, self.accountant)


@dataclass(frozen=True)
class _PrivateNoise:
    """Mode, noise plan and noise scales of one `private_dplc` call."""

    mode: str
    plan: PrivateDplcPlan
    sigma_count: float
    sigma_sum: float
    sigma_direction: float
    refine_steps: int
    candidates: np.ndarray | None = None


@dataclass
class _PrivateLog(_QueryLog):
    """`_QueryLog` plus the released noisy count (and chosen candidate) of each query."""

    noisy_counts: list[float] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)


def _candidate_mode_noise(dim: int, candidates: Any, budget: _PrivateBudget) -> _PrivateNoise:
    """Noise plan with public candidates: a noisy count vector and one noisy cap sum per query."""
    units = check_unit_rows("candidates", candidates)
    if units.shape[1] != dim:
        raise ValueError(f"candidates must have the same dimension as class_centers ({dim}); got {units.shape[1]}")
    count_sensitivity = count_vector_sensitivity(units, budget.rho, budget.neighbouring)
    plan = budget.plan({"count": (budget.count_fraction, 1), "sum": (1.0 - budget.count_fraction, 1)})
    sigma_count = plan.multiplier("count") * count_sensitivity
    sigma_sum = plan.multiplier("sum") * cap_sum_sensitivity(budget.rho, budget.neighbouring)
    return _PrivateNoise("candidates", plan, sigma_count, sigma_sum, 0.0, 1, units)


def _mean_shift_mode_noise(budget: _PrivateBudget, direction_fraction: float, refine_steps: int) -> _PrivateNoise:
    """Noise plan of the mean-shift mode: a noisy global direction, R noisy cap sums, one noisy count."""
    direction_fraction = check_open_unit("direction_fraction", direction_fraction)
    refine_steps = check_int("refine_steps", refine_steps, 1)
    count_fraction = budget.count_fraction
    if count_fraction + direction_fraction >= 1.0:
        raise ValueError(
            f"count_fraction + direction_fraction must be in (0, 1); got {count_fraction!r} + {direction_fraction!r}"
        )
    plan = budget.plan(
        {
            "direction": (direction_fraction, 1),
            "count": (count_fraction, 1),
            "sum": (1.0 - count_fraction - direction_fraction, refine_steps),
        }
    )
    count_sensitivity = 1.0  # a single cap count changes by at most 1
    sigma_count = plan.multiplier("count") * count_sensitivity
    sigma_sum = plan.multiplier("sum") * cap_sum_sensitivity(budget.rho, budget.neighbouring)
    sigma_direction = plan.multiplier("direction") * (2.0 if budget.neighbouring == "replace" else 1.0)
    return _PrivateNoise("mean-shift", plan, sigma_count, sigma_sum, sigma_direction, refine_steps)


@dataclass(frozen=True)
class _PrivateQuery:
    """One query of `private_dplc` that passed its noisy threshold."""

    p_hat: np.ndarray
    members: np.ndarray
    noisy_count: float
    candidate: int | None = None


def _private_queries(
    centers: np.ndarray,
    noise: _PrivateNoise,
    budget: _PrivateBudget,
    min_cluster_size: int,
    generator: np.random.Generator,
) -> _PrivateLog:
    """Up to Q queries of either mode, each removing the centers within rho of its p_hat (line 8)."""
    dim = centers.shape[1]
    cos_rho = math.cos(budget.rho)
    active = np.ones(centers.shape[0], dtype=bool)
    log = _PrivateLog()
    in_cap = (centers @ noise.candidates.T) >= cos_rho if noise.candidates is not None else None
    for _ in range(budget.max_queries):
        if in_cap is not None:
            query = _candidate_query(centers, in_cap, active, noise, min_cluster_size, generator)
        else:
            query = _mean_shift_query(centers, active, noise, cos_rho, min_cluster_size, generator)
        if query is None:
            log.stopped = True
            break
        members = query.members
        if query.candidate is not None:
            log.chosen.append(query.candidate)
        active &= ~((centers @ query.p_hat) >= cos_rho)
        clean_center = centers[members].mean(axis=0) if members.any() else np.zeros(dim)
        log.add(query.p_hat, clean_center, int(members.sum()), members)
        log.noisy_counts.append(query.noisy_count)
    return log


def _candidate_query(
    centers: np.ndarray,
    in_cap: np.ndarray,
    active: np.ndarray,
    noise: _PrivateNoise,
    min_cluster_size: int,
    generator: np.random.Generator,
) -> _PrivateQuery | None:
    """Steps 1-3 with public candidates: noisy counts, noisy argmax and threshold, noisy cap sum."""
    counts = (in_cap & active[:, None]).sum(axis=0).astype(np.float64)
    noisy = counts + generator.normal(0.0, noise.sigma_count, size=counts.shape)
    best = int(np.argmax(noisy))
    if noisy[best] < min_cluster_size:
        return None
    members = in_cap[:, best] & active
    p_hat = _normalise(centers[members].sum(axis=0) + generator.normal(0.0, noise.sigma_sum, size=centers.shape[1]))
    return _PrivateQuery(p_hat, members, float(noisy[best]), best)


def _mean_shift_query(
    centers: np.ndarray,
    active: np.ndarray,
    noise: _PrivateNoise,
    cos_rho: float,
    min_cluster_size: int,
    generator: np.random.Generator,
) -> _PrivateQuery | None:
    """Steps 1-3 of the mean-shift mode: noisy global direction, R noisy cap sums, noisy threshold."""
    dim = centers.shape[1]
    direction = _normalise(centers[active].sum(axis=0) + generator.normal(0.0, noise.sigma_direction, size=dim))
    noisy_count = math.nan
    for step in range(noise.refine_steps):
        members = active & ((centers @ direction) >= cos_rho)
        if step == noise.refine_steps - 1:
            noisy_count = float(members.sum() + generator.normal(0.0, noise.sigma_count))
            if noisy_count < min_cluster_size:
                break
        direction = _normalise(centers[members].sum(axis=0) + generator.normal(0.0, noise.sigma_sum, size=dim))
    if noisy_count < min_cluster_size:
        return None
    return _PrivateQuery(direction, members, noisy_count)


def _private_release(log: _PrivateLog, noise: _PrivateNoise, budget: _PrivateBudget, dim: int) -> DplcRelease:
    """Bundle the private releases with the one event covering all Q queries and the public records."""
    released, clean = log.stacked(dim)
    notes = (
        f"mode={noise.mode}; count noise sigma={noise.sigma_count:.6g}, cap-sum noise sigma={noise.sigma_sum:.6g}"
        + (f", direction noise sigma={noise.sigma_direction:.6g}" if noise.mode == "mean-shift" else "")
        + f"; all {budget.max_queries} queries accounted"
    )
    return DplcRelease(
        centers=released,
        clean_centers=clean,
        cluster_sizes=tuple(log.sizes),
        sigmas=tuple(noise.sigma_sum for _ in log.released),
        events=(noise.plan.event,),
        stopped_early=log.stopped,
        end_to_end_private=True,
        noisy_counts=tuple(log.noisy_counts),
        candidate_indices=tuple(log.chosen),
        member_indices=tuple(log.member_rows),
        notes=(notes,),
        public_records=tuple(
            {
                "mode": noise.mode,
                "noisy_count": count,
                "sigma": noise.sigma_sum,
                "noise_multiplier": noise.plan.multiplier("sum"),
                "sigma_count": noise.sigma_count,
                "epsilon": float(budget.epsilon),
                "delta": float(budget.delta),
            }
            for count in log.noisy_counts
        ),
    )
