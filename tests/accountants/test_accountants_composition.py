"""Events and accountants: basic, advanced, RDP and PRV (opacus), exact GDP; calibration."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from accountants import (
    AccountingFallbackWarning,
    ComposedEvent,
    GaussianEvent,
    NonPrivateEvent,
    PoissonSampledGaussianEvent,
    SelfComposedEvent,
    calibrate_noise_multiplier,
    calibrate_sigma,
    compute_epsilon,
    epsilon,
    event_from_dict,
    gdp_epsilon,
    gdp_mu,
)
from accountants.composition import RDP_ORDERS
from scipy.stats import norm


def _gdp_eps_reference(mu: float, delta: float) -> float:
    """epsilon of mu-GDP by a plain root search on the closed-form profile (scipy only)."""
    from scipy.optimize import brentq

    def profile(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(profile, 0.0, 200.0, xtol=1e-12) if profile(0.0) > 0 else 0.0


def test_events_round_trip_through_dicts_and_json():
    event = ComposedEvent([
        SelfComposedEvent(GaussianEvent(1.5), 3),
        PoissonSampledGaussianEvent(0.9, 0.01),
        ComposedEvent((NonPrivateEvent(), GaussianEvent(4.0))),
        SelfComposedEvent(ComposedEvent(()), 0),
    ])
    data = json.loads(json.dumps(event.to_dict()))
    assert event_from_dict(data) == event
    assert hash(event_from_dict(data)) == hash(event)
    assert isinstance(event.events, tuple)
    with pytest.raises(AttributeError):
        event.events = ()  # frozen


@pytest.mark.parametrize("make,name", [
    (lambda: GaussianEvent(0.0), "noise_multiplier"),
    (lambda: GaussianEvent(math.inf), "noise_multiplier"),
    (lambda: PoissonSampledGaussianEvent(1.0, 0.0), "sampling_probability"),
    (lambda: PoissonSampledGaussianEvent(1.0, 1.5), "sampling_probability"),
    (lambda: SelfComposedEvent(GaussianEvent(1.0), -1), "count"),
    (lambda: SelfComposedEvent("gaussian", 2), "event"),
    (lambda: ComposedEvent([GaussianEvent(1.0), 3]), "events"),
    (lambda: event_from_dict({"type": "laplace"}), "type"),
    (lambda: compute_epsilon(GaussianEvent(1.0), 0.0), "delta"),
    (lambda: compute_epsilon(GaussianEvent(1.0), 1e-5, "moments"), "accountant"),
])
def test_bad_events_and_inputs(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("accountant", ["basic", "advanced", "rdp", "prv", "gdp"])
def test_non_private_event_makes_any_composition_infinite(accountant):
    event = ComposedEvent((SelfComposedEvent(GaussianEvent(5.0), 3), NonPrivateEvent()))
    assert compute_epsilon(event, 1e-5, accountant).epsilon == math.inf
    assert compute_epsilon(SelfComposedEvent(NonPrivateEvent(), 0), 1e-5, accountant).epsilon == 0.0
    assert compute_epsilon(ComposedEvent(()), 1e-5, accountant).epsilon == 0.0


def test_gdp_accountant_is_exact_for_gaussian_compositions():
    event = ComposedEvent((SelfComposedEvent(GaussianEvent(2.0), 5), GaussianEvent(0.7), GaussianEvent(3.0)))
    mu = math.sqrt(5 / 4 + 1 / 0.49 + 1 / 9)
    assert compute_epsilon(event, 1e-5, "gdp").epsilon == pytest.approx(_gdp_eps_reference(mu, 1e-5), rel=1e-8)
    with pytest.raises(ValueError, match="gdp"):
        compute_epsilon(PoissonSampledGaussianEvent(1.0, 0.1), 1e-5, "gdp")


def test_single_gaussian_basic_equals_exact():
    assert compute_epsilon(GaussianEvent(1.3), 1e-6, "basic").epsilon == pytest.approx(_gdp_eps_reference(1 / 1.3, 1e-6), rel=1e-8)


def test_rdp_matches_opacus_and_the_closed_form():
    from opacus.accountants import RDPAccountant

    event = ComposedEvent((SelfComposedEvent(PoissonSampledGaussianEvent(1.1, 0.02), 300), SelfComposedEvent(GaussianEvent(8.0), 4)))
    reference = RDPAccountant()
    reference.history = [(1.1, 0.02, 300), (8.0, 1.0, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference.get_epsilon(1e-5, alphas=list(RDP_ORDERS))
    assert compute_epsilon(event, 1e-5, "rdp").epsilon == pytest.approx(expected, rel=1e-12)
    # Gaussian: RDP(alpha) = k alpha / (2 s^2); improved conversion minimised over a fine grid of orders
    s, k, delta = 2.0, 20, 1e-5
    alphas = np.linspace(1.001, 300, 300_000)
    fine = np.min(k * alphas / (2 * s * s) + np.log((alphas - 1) / alphas) - (np.log(delta) + np.log(alphas)) / (alphas - 1))
    ours = compute_epsilon(SelfComposedEvent(GaussianEvent(s), k), delta, "rdp").epsilon
    assert fine <= ours <= fine * 1.01
    assert ours >= compute_epsilon(SelfComposedEvent(GaussianEvent(s), k), delta, "gdp").epsilon


def test_prv_matches_opacus_and_brackets_the_exact_value():
    from opacus.accountants import PRVAccountant

    reference = PRVAccountant()
    reference.history = [(0.8, 0.05, 200)]
    ours = compute_epsilon(SelfComposedEvent(PoissonSampledGaussianEvent(0.8, 0.05), 200), 1e-5, "prv")
    assert ours.used == "prv"
    assert ours.epsilon == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    for s, k in ((1.0, 10), (3.0, 50), (0.6, 3)):
        exact = compute_epsilon(SelfComposedEvent(GaussianEvent(s), k), 1e-5, "gdp").epsilon
        prv = compute_epsilon(SelfComposedEvent(GaussianEvent(s), k), 1e-5, "prv").epsilon
        assert exact - 1e-9 <= prv <= exact + 0.03


@pytest.mark.parametrize("s,k", [(1.0, 10), (2.0, 50), (5.0, 200), (10.0, 1000)])
def test_accountants_agree_in_order_for_many_compositions(s, k):
    event = SelfComposedEvent(GaussianEvent(s), k)
    values = {name: compute_epsilon(event, 1e-5, name).epsilon for name in ("basic", "advanced", "rdp", "prv", "gdp")}
    assert values["gdp"] <= values["prv"] + 1e-9
    assert values["prv"] <= values["rdp"] <= values["basic"]
    assert values["advanced"] <= values["basic"]


def test_advanced_composition_beats_basic_for_many_small_steps():
    event = SelfComposedEvent(GaussianEvent(30.0), 2000)
    basic = compute_epsilon(event, 1e-5, "basic").epsilon
    advanced = compute_epsilon(event, 1e-5, "advanced").epsilon
    assert advanced < 0.6 * basic
    # independently: DRV with a grid over the split delta = delta' + k delta_0
    best = math.inf
    for fraction in np.linspace(0.001, 0.999, 999):
        eps0 = _gdp_eps_reference(1 / 30.0, (1 - fraction) * 1e-5 / 2000)
        best = min(best, math.sqrt(2 * 2000 * math.log(1 / (fraction * 1e-5))) * eps0 + 2000 * eps0 * math.expm1(eps0))
    assert advanced <= best * (1 + 1e-6)
    assert advanced >= best * 0.99


def test_basic_composition_of_subsampled_steps_uses_amplification():
    q, s, k, delta = 0.1, 1.5, 4, 1e-4
    per_delta = delta / k
    base = _gdp_eps_reference(1 / s, per_delta / q)
    expected = k * math.log(1 + q * (math.exp(base) - 1))
    got = compute_epsilon(SelfComposedEvent(PoissonSampledGaussianEvent(s, q), k), delta, "basic").epsilon
    assert got == pytest.approx(expected, rel=1e-8)


def test_opacus_failures_fall_back_and_are_recorded():
    # tiny delta: opacus' PRV raises ("floating point errors will dominate")
    result = compute_epsilon(SelfComposedEvent(GaussianEvent(1.0), 10), 1e-16, "prv")
    assert result.used == "rdp" and any("fell back to rdp" in w for w in result.warnings)
    assert result.epsilon == pytest.approx(compute_epsilon(SelfComposedEvent(GaussianEvent(1.0), 10), 1e-16, "rdp").epsilon)
    # large epsilon: the PRV grid would not fit in memory; refused before opacus allocates it
    big = compute_epsilon(SelfComposedEvent(GaussianEvent(0.5), 1000), 1e-5, "prv")
    assert big.used == "rdp" and any("grid" in w for w in big.warnings)
    # tiny RDP at large delta: opacus' conversion is negative; clamped at 0 with a note
    clamped = compute_epsilon(GaussianEvent(1e4), 0.5, "rdp")
    assert clamped.epsilon == 0.0 and any("negative" in w for w in clamped.warnings)
    with pytest.warns(AccountingFallbackWarning):
        epsilon(GaussianEvent(1e4), 0.5, "rdp")


def test_calibration_closed_forms():
    # exact GDP: sqrt(k)/s = mu(eps, delta); basic: each release gets (eps/k, delta/k)
    k, eps, delta = 8, 2.0, 1e-5
    assert calibrate_noise_multiplier(eps, delta, k, "gdp", rtol=1e-9) == pytest.approx(math.sqrt(k) / gdp_mu(eps, delta), rel=1e-8)
    assert calibrate_noise_multiplier(eps, delta, k, "basic", rtol=1e-9) == pytest.approx(1 / gdp_mu(eps / k, delta / k), rel=1e-8)
    assert calibrate_sigma(0.25, eps, delta, k, "gdp", rtol=1e-9) == pytest.approx(0.25 * math.sqrt(k) / gdp_mu(eps, delta), rel=1e-8)


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_calibration_matches_opacus_for_dp_sgd():
    from opacus.accountants.utils import get_noise_multiplier

    ours = calibrate_noise_multiplier(3.0, 1e-5, 500, "rdp", sampling_probability=0.01)
    reference = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=0.01, steps=500, accountant="rdp")
    assert ours == pytest.approx(reference, rel=0.02)


@settings(max_examples=25, deadline=None)
@given(target=st.floats(0.2, 20.0), count=st.integers(1, 200), accountant=st.sampled_from(["rdp", "gdp", "basic", "advanced"]))
def test_calibrated_noise_never_overshoots(target, count, accountant):
    s = calibrate_noise_multiplier(target, 1e-5, count, accountant, rtol=1e-3)
    event = SelfComposedEvent(GaussianEvent(s), count)
    assert compute_epsilon(event, 1e-5, accountant).epsilon <= target
    assert compute_epsilon(SelfComposedEvent(GaussianEvent(s * (1 - 2e-3)), count), 1e-5, accountant).epsilon > target * (1 - 1e-9)


def test_prv_calibration_never_overshoots():
    s = calibrate_noise_multiplier(2.0, 1e-5, 20, "prv", rtol=1e-3)
    assert compute_epsilon(SelfComposedEvent(GaussianEvent(s), 20), 1e-5, "prv").epsilon <= 2.0
    assert s == pytest.approx(math.sqrt(20) / gdp_mu(2.0, 1e-5), rel=0.02)
    assert gdp_epsilon(math.sqrt(20) / s, 1e-5) <= 2.0
