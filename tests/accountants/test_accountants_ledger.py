"""PrivacyLedger: per-party and per-round epsilon, table, persistence, flags."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from accountants import (
    ComposedEvent,
    GaussianEvent,
    NonPrivateEvent,
    PoissonSampledGaussianEvent,
    PrivacyLedger,
    SelfComposedEvent,
    compute_epsilon,
    gaussian_sigma,
    gdp_epsilon,
)


def _ledger() -> PrivacyLedger:
    ledger = PrivacyLedger()
    ledger.record("client:0", 1, GaussianEvent(2.0), note="dplc query 1")
    ledger.record("client:0", 2, GaussianEvent(2.0))
    ledger.record("client:1", 1, GaussianEvent(1.0))
    ledger.record("client:0", 3, SelfComposedEvent(GaussianEvent(4.0), 2))
    return ledger


def test_epsilon_per_party_and_worst_party():
    ledger = _ledger()
    mu0 = math.sqrt(2 / 4 + 2 / 16)
    assert ledger.epsilon(1e-5, party="client:0", accountant="gdp") == pytest.approx(gdp_epsilon(mu0, 1e-5), rel=1e-9)
    assert ledger.epsilon(1e-5, party="client:1", accountant="gdp") == pytest.approx(gdp_epsilon(1.0, 1e-5), rel=1e-9)
    assert ledger.epsilon(1e-5, accountant="gdp") == pytest.approx(max(gdp_epsilon(mu0, 1e-5), gdp_epsilon(1.0, 1e-5)))
    expected_rdp = compute_epsilon(ComposedEvent((GaussianEvent(2.0), GaussianEvent(2.0), SelfComposedEvent(GaussianEvent(4.0), 2))),
                                   1e-5, "rdp").epsilon
    assert ledger.epsilon(1e-5, party="client:0") == pytest.approx(expected_rdp)
    assert PrivacyLedger().epsilon(1e-5) == 0.0
    with pytest.raises(ValueError, match="party"):
        ledger.epsilon(1e-5, party="client:9")


def test_table_is_cumulative_over_party_by_round():
    rows = _ledger().table(1e-5, accountant="gdp")
    assert [(r["party"], r["round"]) for r in rows] == [("client:0", 1), ("client:0", 2), ("client:0", 3),
                                                        ("client:1", 1), ("client:1", 2), ("client:1", 3)]
    client0 = [r["epsilon"] for r in rows if r["party"] == "client:0"]
    assert client0[0] == pytest.approx(gdp_epsilon(0.5, 1e-5))
    assert client0[1] == pytest.approx(gdp_epsilon(math.sqrt(0.5), 1e-5))
    assert client0[0] < client0[1] < client0[2]
    client1 = [r["epsilon"] for r in rows if r["party"] == "client:1"]
    assert client1[0] == client1[1] == client1[2]  # no release after round 1
    assert [r["releases"] for r in rows if r["party"] == "client:1"] == [1, 1, 1]


def test_round_trip_and_json():
    ledger = _ledger()
    ledger.flag("a note for the report")
    data = json.loads(json.dumps(ledger.to_dict()))
    restored = PrivacyLedger.from_dict(data)
    assert restored.entries == ledger.entries
    assert restored.flags == ledger.flags
    assert restored.epsilon(1e-5, accountant="gdp") == ledger.epsilon(1e-5, accountant="gdp")
    with pytest.raises(ValueError, match="version"):
        PrivacyLedger.from_dict({"version": 99, "entries": []})


def test_non_private_release_is_infinite_for_that_party_only():
    ledger = _ledger()
    ledger.record("server-view:client:2", 1, NonPrivateEvent(), note="raw class centers")
    assert ledger.epsilon(1e-5, accountant="rdp") == math.inf
    assert ledger.epsilon(1e-5, party="client:1", accountant="rdp") < math.inf


def test_claims_are_checked_against_the_event():
    ledger = PrivacyLedger()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classic = gaussian_sigma(1.0, 1.0, 1e-5, method="classic")
    ledger.record("client:0", 1, GaussianEvent(classic), claimed_epsilon=1.0, claimed_delta=1e-5)
    assert ledger.flags == []  # the classic sigma at epsilon = 1 happens to deliver (exact epsilon < 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        at_ten = gaussian_sigma(1.0, 10.0, 1e-3, method="classic")
    ledger.record("client:0", 2, GaussianEvent(at_ten), claimed_epsilon=10.0, claimed_delta=1e-3, note="classic")
    assert len(ledger.flags) == 1 and "not backed" in ledger.flags[0] and "classic" in ledger.flags[0]
    with pytest.raises(ValueError, match="claimed"):
        ledger.record("client:0", 3, GaussianEvent(1.0), claimed_epsilon=1.0)
    # the classic calibration at epsilon >= 1 is flagged as outside its theorem even when backed
    ledger.record("client:1", 1, GaussianEvent(classic), claimed_epsilon=1.0, claimed_delta=1e-5, calibration="classic")
    assert any("client:1" in flag and "classic Gaussian calibration" in flag for flag in ledger.flags)
    assert PrivacyLedger.from_dict(ledger.to_dict()).entries[-1].calibration == "classic"
    with pytest.raises(ValueError, match="calibration"):
        ledger.record("client:1", 2, GaussianEvent(1.0), calibration="laplace")


def test_accountant_fallbacks_become_flags():
    ledger = PrivacyLedger()
    ledger.record("client:0", 1, SelfComposedEvent(GaussianEvent(0.5), 1000))
    ledger.epsilon(1e-5, accountant="prv")
    assert any("fell back to rdp" in flag for flag in ledger.flags)
    count = len(ledger.flags)
    ledger.epsilon(1e-5, accountant="prv")
    assert len(ledger.flags) == count  # deduplicated


def test_dp_sgd_events_per_party():
    ledger = PrivacyLedger()
    step = PoissonSampledGaussianEvent(1.0, 0.05)
    for round in range(1, 4):
        ledger.record("client:7", round, SelfComposedEvent(step, 20))
    direct = compute_epsilon(SelfComposedEvent(step, 60), 1e-5, "rdp").epsilon
    assert ledger.epsilon(1e-5, party="client:7") == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("call,name", [
    (lambda l: l.record("", 1, GaussianEvent(1.0)), "party"),
    (lambda l: l.record("client:0", -1, GaussianEvent(1.0)), "round"),
    (lambda l: l.record("client:0", 1, {"type": "gaussian"}), "event"),
    (lambda l: l.epsilon(1.5), "delta"),
    (lambda l: l.table(1e-5, accountant="zcdp"), "accountant"),
])
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call(PrivacyLedger())
