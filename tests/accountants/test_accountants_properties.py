"""Property tests with the `accountants.testing` strategies and assertions (the pytest plugin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from accountants import dplc_sensitivity
from accountants.dplc_reference import cap_sum_sensitivity
from accountants.testing import (
    CapSet,
    NeighbouringCapSets,
    assert_audit_within,
    assert_sensitivity_bound,
    cap_sets,
    neighbouring_cap_sets,
    unit_vectors,
)

_FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.acos(float(np.clip(a @ b, -1.0, 1.0)))


@settings(max_examples=200, **_FAST)
@given(unit_vectors(st.integers(2, 12)))
def test_unit_vectors_are_unit(vector):
    assert vector.ndim == 1 and 2 <= vector.size <= 12
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=200, **_FAST)
@given(cap_sets())
def test_cap_sets_lie_in_their_cap(cap: CapSet):
    assert cap.members.shape[1] == cap.center.size
    np.testing.assert_allclose(np.linalg.norm(cap.members, axis=1), 1.0, atol=1e-12)
    for member in cap.members:
        assert _angle(member, cap.center) <= cap.rho + 1e-7


@settings(max_examples=2000, **_FAST)
@given(neighbouring_cap_sets())
def test_theorem2_bound_holds_on_every_neighbouring_pair(pair: NeighbouringCapSets):
    """Theorem 2: ||f(S) - f(S')|| <= (1/|S|) sqrt(2 - 2 cos 2 rho) (true chord beyond pi/2)."""
    assert pair.members_0.shape == pair.members_1.shape
    assert np.count_nonzero(np.any(pair.members_0 != pair.members_1, axis=1)) <= 1
    for member in (pair.members_0[pair.index], pair.members_1[pair.index]):
        assert _angle(member, pair.center) <= pair.rho + 1e-7
    size = pair.members_0.shape[0]
    assert_sensitivity_bound(lambda s: s.mean(axis=0), [(pair.members_0, pair.members_1)],
                             dplc_sensitivity(pair.rho, size, "tight"), rtol=1e-7, atol=1e-12)


@settings(max_examples=300, **_FAST)
@given(neighbouring_cap_sets(rho=st.floats(0.05, math.pi / 2)))
def test_private_cap_sum_sensitivity_holds(pair: NeighbouringCapSets):
    assert_sensitivity_bound(lambda s: s.sum(axis=0), [(pair.members_0, pair.members_1)], cap_sum_sensitivity(pair.rho),
                             rtol=1e-7, atol=1e-12)


@settings(max_examples=1000, deadline=None)
@given(rho=st.floats(1e-6, math.pi), size=st.integers(1, 10_000))
def test_theorem3_is_never_tighter_than_theorem2(rho, size):
    assert dplc_sensitivity(rho, size, "weak") >= dplc_sensitivity(rho, size, "tight") * (1 - 1e-12)


def test_the_tight_bound_is_attained_by_mirror_members():
    center = np.array([1.0, 0.0, 0.0])
    base = np.array([center] * 4)
    rho = 1.2
    plus = math.cos(rho) * center + math.sin(rho) * np.array([0, 1.0, 0])
    minus = math.cos(rho) * center - math.sin(rho) * np.array([0, 1.0, 0])
    first, second = base.copy(), base.copy()
    first[0], second[0] = plus, minus
    worst = assert_sensitivity_bound(lambda s: s.mean(axis=0), [(first, second)], dplc_sensitivity(rho, 4))
    assert worst == pytest.approx(1.0, rel=1e-12)


def test_assert_sensitivity_bound_fails_on_a_violation():
    pairs = [(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [-1.0, 0.0]]))]
    with pytest.raises(AssertionError, match="violated"):
        # the sum has twice the sensitivity of the mean of two points
        assert_sensitivity_bound(lambda s: s.sum(axis=0), pairs, dplc_sensitivity(math.pi / 2, 2))
    with pytest.raises(AssertionError, match="no pairs"):
        assert_sensitivity_bound(lambda s: s, [], 1.0)


def test_assert_audit_within_refutes_a_non_private_release():
    def raw_release(value, rng):
        return value  # no noise at all: perfectly distinguishable

    with pytest.raises(AssertionError, match="refutes"):
        assert_audit_within(raw_release, 1.0, 1e-5, 0.0, 1.0, lambda out: out, trials=400)
    result = assert_audit_within(lambda value, rng: value + rng.normal(0, 5.0), 1.0, 1e-5, 0.0, 1.0, lambda out: out,
                                 trials=400)
    assert result.epsilon_lb <= 1.0


def test_plugin_is_registered(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("privaudit_accountants")
    assert any(line.startswith("dp_audit") for line in pytestconfig.getini("markers"))
