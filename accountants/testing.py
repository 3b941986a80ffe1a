"""pytest helpers for checking DP bounds of your own mechanisms (a pytest plugin).

Registered through the ``pytest11`` entry point ``privaudit_accountants``, so it is imported by
every pytest run in an environment where privaudit is installed: importing it is cheap (numpy
only; hypothesis and the rest of `accountants` are imported when a helper is called) and it
defines no fixtures. It registers one marker, ``dp_audit``.

Hypothesis strategies (need ``hypothesis``):

* `unit_vectors(dim)`: points of the unit sphere S^{dim-1}.
* `cap_sets(...)`: a set of class centers inside a spherical cap of angle rho (`CapSet`).
* `neighbouring_cap_sets(...)`: two such sets of the same size that differ in one member, both
  members inside the cap (`NeighbouringCapSets`) - the neighbours of PrivacyFace's Theorem 2.

Hypothesis draws the structure (dimension, rho, size, which row differs, the differing members'
angles including the cap's edge, and whether they mirror each other, the worst case); the
coordinates come from a numpy Generator seeded by a drawn integer, so thousands of examples
stay cheap and every failure is reproducible.

Assertions:

* `assert_sensitivity_bound(f, pairs, bound)`: ||f(a) - f(b)||_2 <= bound on every pair.
* `assert_audit_within(mechanism, epsilon, delta, dataset_0, dataset_1, statistic)`: a
  distinguishing game's epsilon lower bound does not exceed the claimed epsilon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from hypothesis.strategies import SearchStrategy

    from accountants.audit import AuditResult


def pytest_configure(config: Any) -> None:
    """Register the ``dp_audit`` marker (the project runs pytest with --strict-markers)."""
    config.addinivalue_line("markers", "dp_audit: a statistical privacy audit (distinguishing game, seeded)")


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapSet:
    """Unit vectors `members` [n, d] within angle `rho` of the unit vector `center` [d]."""

    center: np.ndarray
    members: np.ndarray
    rho: float


@dataclass(frozen=True)
class NeighbouringCapSets:
    """Two sets of the same size inside the cap (center, rho) that differ in row `index`."""

    center: np.ndarray
    members_0: np.ndarray
    members_1: np.ndarray
    index: int
    rho: float


def _as_strategy(value: Any) -> "SearchStrategy":
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy

    return value if isinstance(value, SearchStrategy) else st.just(value)


def _orthogonal_unit(raw: np.ndarray, center: np.ndarray) -> np.ndarray:
    """A unit vector orthogonal to `center`, from `raw` (a fixed one if raw is parallel to center)."""
    direction = raw - (raw @ center) * center
    norm = float(np.linalg.norm(direction))
    if norm < 1e-6:
        basis = np.eye(center.size)[int(np.argmin(np.abs(center)))]
        direction = basis - (basis @ center) * center
        norm = float(np.linalg.norm(direction))
    return direction / norm


def _point_in_cap(center: np.ndarray, direction: np.ndarray, angle: float) -> np.ndarray:
    return math.cos(angle) * center + math.sin(angle) * direction


def unit_vectors(dim: "int | SearchStrategy[int]" = 3) -> "SearchStrategy[np.ndarray]":
    """Strategy for unit vectors in R^dim (dim >= 2), i.e. points of S^{dim-1}."""
    from hypothesis import strategies as st

    @st.composite
    def draw_vector(draw: Any) -> np.ndarray:
        size = draw(_as_strategy(dim))
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"dim must be an integer >= 2; got {size!r}")
        coords = draw(
            st.lists(st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False), min_size=size, max_size=size).filter(
                lambda xs: math.fsum(x * x for x in xs) > 1e-6
            )
        )
        vector = np.asarray(coords, dtype=np.float64)
        return vector / np.linalg.norm(vector)

    return draw_vector()


def _default_rho() -> "SearchStrategy[float]":
    from hypothesis import strategies as st

    return st.floats(min_value=1e-3, max_value=math.pi, allow_nan=False)


def _random_cap_members(center: np.ndarray, max_angle: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors at angles uniform in [0, max_angle] from `center`, uniform directions."""
    directions = rng.normal(size=(count, center.size))
    directions -= np.outer(directions @ center, center)
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    fallback = _orthogonal_unit(np.ones(center.size), center)
    directions = np.where(norms > 1e-9, directions / np.maximum(norms, 1e-300), fallback)
    angles = rng.uniform(0.0, max_angle, size=count)
    return np.cos(angles)[:, None] * center[None, :] + np.sin(angles)[:, None] * directions


def _random_unit(dim: int, rng: np.random.Generator) -> np.ndarray:
    vector = rng.normal(size=dim)
    while np.linalg.norm(vector) < 1e-9:  # pragma: no cover - probability zero
        vector = rng.normal(size=dim)
    return vector / np.linalg.norm(vector)


def cap_sets(
    dim: "int | SearchStrategy[int] | None" = None,
    rho: "float | SearchStrategy[float] | None" = None,
    min_size: int = 1,
    max_size: int = 32,
) -> "SearchStrategy[CapSet]":
    """Strategy for sets of class centers inside a spherical cap of angle rho.

    Defaults: dim in 2..16, rho in [1e-3, pi], set sizes in [min_size, max_size]. Up to two
    members sit exactly on the cap's edge or at its center (hypothesis picks which).
    """
    from hypothesis import strategies as st

    dims = _as_strategy(dim) if dim is not None else st.integers(2, 16)
    rhos = _as_strategy(rho) if rho is not None else _default_rho()

    @st.composite
    def draw_set(draw: Any) -> CapSet:
        size = draw(dims)
        angle_max = float(draw(rhos))
        count = draw(st.integers(min_size, max_size))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        center = _random_unit(size, rng)
        members = _random_cap_members(center, angle_max, count, rng)
        for position in range(min(count, 2)):
            angle = angle_max * draw(st.sampled_from([0.0, 1.0]))
            members[position] = _point_in_cap(center, _orthogonal_unit(rng.normal(size=size), center), angle)
        return CapSet(center=center, members=members, rho=angle_max)

    return draw_set()


def neighbouring_cap_sets(
    dim: "int | SearchStrategy[int] | None" = None,
    rho: "float | SearchStrategy[float] | None" = None,
    min_size: int = 1,
    max_size: int = 32,
) -> "SearchStrategy[NeighbouringCapSets]":
    """Strategy for neighbouring pairs (same size, one member replaced) inside one cap of angle rho.

    Hypothesis draws the dimension, rho, the size, which row differs, the two differing members'
    angles from the center (edge and center included) and whether the second one is the mirror
    image of the first across the center (the worst case of Theorem 2).
    """
    from hypothesis import strategies as st

    dims = _as_strategy(dim) if dim is not None else st.integers(2, 16)
    rhos = _as_strategy(rho) if rho is not None else _default_rho()
    angle_fraction = st.one_of(st.just(1.0), st.just(0.0), st.floats(0.0, 1.0, allow_nan=False))

    @st.composite
    def draw_pair(draw: Any) -> NeighbouringCapSets:
        size = draw(dims)
        angle_max = float(draw(rhos))
        count = draw(st.integers(max(min_size, 1), max(max_size, 1)))
        index = draw(st.integers(0, count - 1))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        center = _random_unit(size, rng)
        members = _random_cap_members(center, angle_max, count, rng)
        direction_0 = _orthogonal_unit(rng.normal(size=size), center)
        mirror = draw(st.booleans())
        direction_1 = -direction_0 if mirror else _orthogonal_unit(rng.normal(size=size), center)
        first = _point_in_cap(center, direction_0, angle_max * draw(angle_fraction))
        second = _point_in_cap(center, direction_1, angle_max * draw(angle_fraction))
        members_0, members_1 = members.copy(), members.copy()
        members_0[index], members_1[index] = first, second
        return NeighbouringCapSets(center=center, members_0=members_0, members_1=members_1, index=index, rho=angle_max)

    return draw_pair()


# --------------------------------------------------------------------------------------------
# assertions
# --------------------------------------------------------------------------------------------


def assert_sensitivity_bound(
    f: Callable[[Any], Any],
    pairs: Iterable[tuple[Any, Any]],
    bound: "float | Callable[[Any, Any], float]",
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> float:
    """Assert ||f(a) - f(b)||_2 <= bound (times 1 + rtol, plus atol) for every neighbouring pair.

    `bound` is a number or a function of the pair. Returns the largest ratio distance/bound seen
    (so a caller can also check that the bound is attained). Raises AssertionError naming the
    first violating pair.
    """
    worst = 0.0
    checked = 0
    for position, (first, second) in enumerate(pairs):
        limit = float(bound(first, second)) if callable(bound) else float(bound)
        distance = float(
            np.linalg.norm(
                np.asarray(f(first), dtype=np.float64).ravel() - np.asarray(f(second), dtype=np.float64).ravel()
            )
        )
        if distance > limit * (1.0 + rtol) + atol:
            raise AssertionError(
                f"sensitivity bound violated on pair {position}: ||f(a) - f(b)|| = {distance!r} > bound {limit!r}"
            )
        if limit > 0:
            worst = max(worst, distance / limit)
        checked += 1
    if checked == 0:
        raise AssertionError("assert_sensitivity_bound received no pairs")
    return worst


def assert_audit_within(
    mechanism: Callable[[Any, np.random.Generator], Any],
    epsilon: float,
    delta: float,
    dataset_0: Any,
    dataset_1: Any,
    statistic: Callable[[Any], float],
    *,
    trials: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: "str | float" = "split",
) -> "AuditResult":
    """Run a distinguishing game and assert that its epsilon lower bound stays within `epsilon`.

    A violation means, with probability >= `confidence`, that the mechanism is not
    (epsilon, delta)-DP on this pair of neighbours (or that the neighbours are not neighbours).
    Returns the `AuditResult` for further checks.
    """
    from accountants._validation import check_epsilon
    from accountants.audit import run_distinguishing_game

    epsilon = check_epsilon(epsilon)
    result = run_distinguishing_game(
        mechanism, dataset_0, dataset_1, statistic, trials, delta, confidence, threshold=threshold, seed=seed
    )
    if result.epsilon_lb > epsilon:
        raise AssertionError(
            f"audit refutes the claim epsilon={epsilon!r} at delta={delta!r}: the empirical lower "
            f"bound is {result.epsilon_lb:.4f} (confidence {confidence}, {result.evaluation_trials} "
            f"evaluation runs per dataset, FP={result.false_positives}, FN={result.false_negatives})"
        )
    return result
