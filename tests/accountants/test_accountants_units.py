"""Units of privacy: events carry their neighbour relation; mixing is refused; conversions only
where a proof exists (group privacy image -> identity), checked against independent formulas."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from accountants import (
    ComposedEvent,
    GaussianEvent,
    NonPrivateEvent,
    PoissonSampledGaussianEvent,
    PrivacyLedger,
    SelfComposedEvent,
    UnitConversionError,
    UnitMismatchError,
    epsilon_for_unit,
    event_from_dict,
    group_privacy,
)


def gaussian_delta(mu: float, eps: float) -> float:
    """δ(ε) of μ-GDP (Balle & Wang 2018, Thm 8), written here independently of the library."""
    return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


def gaussian_epsilon(mu: float, delta: float) -> float:
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gaussian_delta(mu, mid) > delta else (lo, mid)
    return hi


def test_unit_round_trips_through_dict_and_is_inherited():
    step = PoissonSampledGaussianEvent(1.1, 0.05, unit="image")
    assert event_from_dict(step.to_dict()) == step
    assert SelfComposedEvent(step, 7).unit == "image"
    assert ComposedEvent((step, NonPrivateEvent())).unit == "image"
    assert GaussianEvent(2.0).to_dict() == {"type": "gaussian", "noise_multiplier": 2.0}  # unstated: no key


def test_unknown_unit_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unit must be one of \['image', 'identity', 'class-center', 'client'\]"):
        GaussianEvent(1.0, unit="person")


def test_composing_two_units_is_refused():
    with pytest.raises(UnitMismatchError, match="image.*class-center"):
        ComposedEvent((GaussianEvent(1.0, unit="image"), GaussianEvent(1.0, unit="class-center")))
    with pytest.raises(UnitMismatchError, match="unstated"):
        ComposedEvent((GaussianEvent(1.0, unit="image"), GaussianEvent(1.0)))


def test_ledger_refuses_to_compose_a_party_across_units():
    ledger = PrivacyLedger()
    ledger.record("client:0", 1, GaussianEvent(2.0, unit="image"))
    ledger.record("client:0", 2, GaussianEvent(2.0, unit="class-center"))
    assert ledger.units() == ["image", "class-center"]
    with pytest.raises(UnitMismatchError):
        ledger.epsilon(1e-5)


def test_same_unit_is_the_accountants_answer():
    z = 3.0
    result = epsilon_for_unit(GaussianEvent(z, unit="class-center"), 1e-5, "class-center", accountant="gdp")
    assert result.group_size == 1
    assert result.epsilon == pytest.approx(gaussian_epsilon(1 / z, 1e-5), rel=1e-6)


def test_group_privacy_lemma_by_hand():
    assert group_privacy(0.5, 1e-6, 3) == pytest.approx((1.5, 3 * math.exp(1.0) * 1e-6))
    assert group_privacy(0.5, 1e-6, 1) == (0.5, 1e-6)


def test_image_to_identity_is_feasible_near_optimal_and_never_below_the_exact_group_bound():
    z, k, delta = 4.0, 2, 1e-5
    result = epsilon_for_unit(GaussianEvent(z, unit="image"), delta, "identity", accountant="gdp", group_size=k)
    inner_eps = gaussian_epsilon(1 / z, result.inner_delta)
    # the reported ε is k ε(δ') at a δ' that satisfies the lemma's δ constraint
    assert result.epsilon == pytest.approx(k * inner_eps, rel=1e-4)
    assert k * math.exp((k - 1) * inner_eps) * result.inner_delta <= delta * (1 + 1e-9)
    # a 20% larger δ' would break the constraint (the search did not stop early)
    larger = 1.2 * result.inner_delta
    assert k * math.exp((k - 1) * gaussian_epsilon(1 / z, larger)) * larger > delta
    # two images of one person shift a Gaussian sum by 2: exactly (2/z)-GDP, so the lemma can only be looser
    assert result.epsilon >= gaussian_epsilon(k / z, delta)


def test_conversions_without_a_proof_are_refused():
    with pytest.raises(UnitConversionError, match="class-center into one per identity"):
        epsilon_for_unit(GaussianEvent(1.0, unit="class-center"), 1e-5, "identity")
    with pytest.raises(UnitConversionError, match="states no unit"):
        epsilon_for_unit(GaussianEvent(1.0), 1e-5, "identity")
    with pytest.raises(ValueError, match="group_size"):
        epsilon_for_unit(GaussianEvent(1.0, unit="image"), 1e-5, "identity")


def test_non_private_is_infinite_in_every_unit():
    assert math.isinf(epsilon_for_unit(NonPrivateEvent(), 1e-5, "identity").epsilon)


def test_ledger_gives_epsilon_per_identity_by_group_privacy():
    ledger = PrivacyLedger()
    ledger.record("client:0", 1, GaussianEvent(4.0, unit="image"))
    direct = epsilon_for_unit(GaussianEvent(4.0, unit="image"), 1e-5, "identity", accountant="gdp", group_size=2)
    assert ledger.epsilon(1e-5, accountant="gdp", unit="identity", group_size=2) == pytest.approx(direct.epsilon)
