"""The privacy stage on hand-built wire messages: units, scopes, status, ε per person and claim
checks, each expected value derived independently (closed-form Gaussian DP, opacus directly)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from accountants import GaussianEvent, NonPrivateEvent, PoissonSampledGaussianEvent, SelfComposedEvent
from federated_core.engine.messages import Message
from privaudit.privacy_stage import UnitCounts, account_run, mark_refuted

COUNTS = UnitCounts(images=24, identities=6, max_images_per_identity=4)


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε of μ-GDP at δ by bisection on δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2) (Dong, Roth & Su)."""
    lo, hi = 0.0, 200.0
    for _ in range(200):
        mid = (lo + hi) / 2
        d = norm.cdf(-mid / mu + mu / 2) - math.exp(mid) * norm.cdf(-mid / mu - mu / 2)
        lo, hi = (mid, hi) if d > delta else (lo, mid)
    return hi


def msg(kind: str, client: int, rnd: int, event=None, **meta) -> Message:
    return Message(kind=kind, sender=f"client:{client}", receivers=("server",), round=rnd, phase="train",
                   tensors={"x": torch.zeros(2, 3)}, event=event, meta=meta)


def dplc_run(z: float, end_to_end: bool = False) -> list[Message]:
    out = []
    for rnd in (1, 2):
        for client in (0, 1):
            out.append(msg("backbone", client, rnd))
            out.append(msg("noisy_cluster_centers", client, rnd, GaussianEvent(z, unit="class-center"),
                           epsilon=1.0, delta=1e-5, calibration="analytic", end_to_end_private=end_to_end))
    return out


def test_algorithm1_releases_are_claimed_per_class_center_and_unbounded_per_person():
    z = 4.0
    p = account_run(dplc_run(z), 1e-5, ["gdp", "rdp"], rounds=2, counts=COUNTS)
    info, everything = p.scope("class information"), p.scope("all uploads")
    assert (info.unit, info.status) == ("class-center", "claimed")
    # two Gaussian releases of multiplier z per client compose to sqrt(2)/z-GDP
    assert info.epsilon["gdp"] == pytest.approx(gdp_epsilon(math.sqrt(2) / z, 1e-5), rel=1e-4)
    assert info.epsilon_at_reference_delta == info.epsilon  # δ is the reference δ
    assert everything.status == "none" and math.isinf(everything.epsilon["gdp"])
    assert math.isinf(p.per_person["epsilon"]["rdp"]) and p.per_person["status"] == "none"
    reasons = " ".join(p.per_person["unbounded_because"])
    assert "backbone: leaves the client without noise" in reasons
    assert "no proof converts a guarantee per class-center into one per identity" in reasons
    assert p.per_person["backbone"] == "none"
    assert "claimed" in p.guarantee and "per class-center record" in p.guarantee


def test_end_to_end_variant_is_proven_and_an_audit_refutation_marks_claims_only():
    proven = account_run(dplc_run(4.0, end_to_end=True), 1e-5, ["gdp"], rounds=2, counts=COUNTS)
    assert proven.scope("class information").status == "proven"
    claimed = account_run(dplc_run(4.0), 1e-5, ["gdp"], rounds=2, counts=COUNTS)
    mark_refuted(claimed, ["Algorithm 1 end to end: ε ≥ 7 against 1"])
    assert claimed.scope("class information").status == "refuted"
    assert "refuted claim" in claimed.guarantee
    mark_refuted(proven, ["an audit"])
    assert proven.scope("class information").status == "proven"
    assert any("beats a proven guarantee" in f for f in proven.flags)


def test_dp_sgd_backbone_alone_is_proven_per_image_and_per_person_with_one_image_each():
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    sigma, q, steps = 1.2, 0.25, 8
    step = SelfComposedEvent(PoissonSampledGaussianEvent(sigma, q, unit="image"), steps)
    uploads = [msg("backbone", c, r, step) for r in (1, 2, 3) for c in (0, 1)]
    one_each = UnitCounts(images=12, identities=12, max_images_per_identity=1)
    p = account_run(uploads, 1e-5, ["rdp"], rounds=3, counts=one_each)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 128, 256]
    expected, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=q, noise_multiplier=sigma,
                                                                    steps=3 * steps, orders=orders), delta=1e-5)
    everything = p.scope("all uploads")
    assert p.scope("class information") is None
    assert (everything.unit, everything.status) == ("image", "proven")
    assert everything.epsilon["rdp"] == pytest.approx(expected, rel=0.05)
    # one image per person: the per-person guarantee is the per-image one
    assert p.per_person["epsilon"]["rdp"] == pytest.approx(everything.epsilon["rdp"], rel=1e-9)
    assert p.per_person["status"] == "proven" and p.per_person["backbone"] == "dp"


def test_dp_sgd_with_four_images_per_person_needs_group_privacy():
    step = SelfComposedEvent(PoissonSampledGaussianEvent(3.0, 0.1, unit="image"), 4)
    p = account_run([msg("backbone", 0, 1, step)], 1e-5, ["rdp"], rounds=1, counts=COUNTS)
    per_image = p.scope("all uploads").epsilon["rdp"]
    per_person = p.per_person["epsilon"]["rdp"]
    assert p.per_person["group_size"] == 4
    assert per_person > 4 * per_image * 0.999  # group privacy costs at least k·ε' with ε'(δ') ≥ ε(δ)


def test_mixed_units_have_no_common_scope_and_fall_back_to_per_person():
    step = SelfComposedEvent(PoissonSampledGaussianEvent(3.0, 0.1, unit="image"), 4)
    uploads = [msg("backbone", 0, 1, step),
               msg("noisy_cluster_centers", 0, 1, GaussianEvent(4.0, unit="class-center"), epsilon=1.0, delta=1e-5)]
    p = account_run(uploads, 1e-5, ["rdp"], rounds=1, counts=COUNTS)
    everything = p.scope("all uploads")
    assert everything.unit == "identity" and math.isinf(everything.epsilon["rdp"])


def test_claim_checks_reach_the_flags():
    # classic calibration at ε = 1 is outside its theorem; a claim of ε = 0.5 at z = 2 is not backed
    uploads = [msg("noisy_cluster_centers", 0, 1, GaussianEvent(2.0, unit="class-center"), epsilon=1.0, delta=1e-5,
                   calibration="classic"),
               msg("noisy_class_centers", 1, 1, GaussianEvent(2.0, unit="class-center"), epsilon=0.5, delta=1e-5,
                   calibration="analytic")]
    p = account_run(uploads, 1e-5, ["gdp"], rounds=1, counts=COUNTS)
    assert any("classic Gaussian calibration was used at epsilon=1" in f for f in p.flags)
    backed = gdp_epsilon(1 / 2.0, 1e-5)
    assert backed > 0.5
    assert any("client:1" in f and "claimed (epsilon=0.5" in f for f in p.flags)


def test_a_large_delta_is_flagged_on_the_guarantee():
    uploads = [msg("noisy_class_centers", 0, 1, GaussianEvent(2.0, unit="class-center"))]
    p = account_run(uploads, 0.2, ["gdp"], rounds=1, counts=COUNTS)  # 0.2 >= 1/6 class centers
    assert any("1/n = 1/6" in f for f in p.scope("class information").flags)
    assert p.scope("class information").epsilon_at_reference_delta["gdp"] == pytest.approx(gdp_epsilon(0.5, 1e-5),
                                                                                             rel=1e-4)


def test_raw_centers_are_none():
    p = account_run([msg("class_centers", 0, 1, NonPrivateEvent()), msg("backbone", 0, 1)], 1e-5, ["rdp"],
                    rounds=1, counts=COUNTS)
    assert p.scope("class information").status == "none"
    assert p.scope("class information").unit == "class-center"  # what the absent guarantee would be about
    assert p.scope("all uploads").unit == "identity"
    assert "no guarantee for class information" in p.guarantee
