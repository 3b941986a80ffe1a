"""The audit's method-independent analyses (PrivacyFace Thm. 1 / Fig. 3, ε vs rounds, Fig. 4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from privaudit.analyses_stage import audit_analyses, cos_p_phat, epsilon_vs_rounds, occupancy_curves


def _clustered_centers(n_near: int = 8, n_far: int = 4, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(d, generator=g), dim=0)
    near = F.normalize(a + 0.1 * torch.randn(n_near, d, generator=g), dim=1)
    far = F.normalize(torch.randn(n_far, d, generator=g), dim=1)
    return torch.cat([near, far])


def test_occupancy_curves_follow_theorem_1():
    occ = occupancy_curves([2, 3, 64, 64])
    assert sorted(occ) == ["2", "3", "64"]
    rho = np.array(occ["2"]["rho"])
    np.testing.assert_allclose(occ["2"]["ratio"], rho / math.pi, atol=1e-12)
    np.testing.assert_allclose(occ["3"]["ratio"], (1 - np.cos(rho)) / 2, atol=1e-12)
    r64 = np.array(occ["64"]["ratio"])
    assert np.all(np.diff(r64) >= 0) and r64[-1] == pytest.approx(1.0)
    small = rho < math.pi / 2 - 1e-9  # below the equator, caps shrink with d (above it they grow: concentration)
    assert np.all(r64[small] < np.array(occ["3"]["ratio"])[small])
    big = (rho > math.pi / 2 + 1e-9) & (rho < math.pi - 1e-9)
    assert np.all(r64[big] > np.array(occ["3"]["ratio"])[big])


def test_epsilon_vs_rounds_composes_the_calibrated_release():
    from accountants import GaussianEvent, gaussian_sigma
    from accountants.composition import epsilon

    out = epsilon_vs_rounds(1.0, 1e-5, 2, "analytic", ["basic", "rdp"], [1, 10, 100])
    z = gaussian_sigma(1.0, 1.0, 1e-5, method="analytic")
    # one round = two releases; basic composition adds them, each at half the δ
    assert out["basic"]["epsilon"][0] == pytest.approx(2 * epsilon(GaussianEvent(z), 0.5e-5, accountant="basic"), rel=1e-9)
    assert out["basic"]["epsilon"][1] == pytest.approx(20 * epsilon(GaussianEvent(z), 0.5e-6, accountant="basic"), rel=1e-9)
    assert np.all(np.diff(out["rdp"]["epsilon"]) > 0)
    assert out["rdp"]["epsilon"][-1] < out["basic"]["epsilon"][-1]  # RDP beats basic over many rounds


def test_cos_p_phat_grows_with_epsilon_and_reports_unreachable_thresholds():
    w = _clustered_centers()
    records, notes = cos_p_phat(w, [(0.5, 0.6), (8.0, 0.6), (1.0, 0.05)], 1, 4, 1e-3, "analytic", 40, seed=1)
    assert [(r["epsilon"], r["rho"]) for r in records] == [(0.5, 0.6), (8.0, 0.6)]
    low, high = (np.array(r["values"]) for r in records)
    assert low.shape == (40,) and np.all(np.abs(low) <= 1 + 1e-9)
    assert high.mean() > low.mean() + 0.2
    assert records[0]["label"] == "|S|=8"
    assert len(notes) == 1 and "ρ=0.05" in notes[0] and "T=4" in notes[0]
    again, _ = cos_p_phat(w, [(0.5, 0.6)], 1, 4, 1e-3, "analytic", 40, seed=1)
    assert again[0]["values"] == records[0]["values"]  # seeded


def test_audit_analyses_from_a_run_and_its_cache(tmp_path):
    from federated_core.data.faceset import FaceSet
    from federated_core.engine import ClientData, FederatedConfig, run_federated
    from privaudit.cache import StageCache
    from privaudit.scenario import Scenario

    g = torch.Generator().manual_seed(0)
    clients = []
    for k in range(2):
        labels = torch.arange(6).repeat_interleave(2) + 10 * k
        images = torch.randint(0, 256, (12, 3, 16, 16), generator=g, dtype=torch.uint8)
        clients.append(ClientData.from_faces(FaceSet(images, labels)))
    run = tmp_path / "runs" / "privacyface"
    cfg = FederatedConfig(method="privacyface", method_params={"min_cluster_size": 1}, rounds=1, batch_size=4,
                          embedding_dim=16, resolution=16, progress=False, eval_initial=False, eval_every=0, seed=0)
    run_federated(cfg, clients, out_dir=run)
    scenario = Scenario.tiny()
    cache = StageCache(tmp_path)
    a = audit_analyses(scenario, {"privacyface": run}, 16, 1 / 12, tmp_path / "cache", cache)
    assert "16" in a.occupancy and "512" in a.occupancy
    assert set(a.epsilon_vs_rounds) == set(scenario.privacy.accountants)
    assert a.cos_p_phat and all(len(r["values"]) == 50 for r in a.cos_p_phat)
    assert "client:0" in a.extra["cos_p_phat"] and "privacyface" in a.extra["cos_p_phat"]
    assert "(6 classes, T=3)" in a.extra["cos_p_phat"]  # the tiny scenario's threshold fraction 0.5 of 6
    cached = list((tmp_path / "cache").glob("analyses-*.json"))
    assert len(cached) == 1
    b = audit_analyses(scenario, {"privacyface": run}, 16, 1 / 12, tmp_path / "cache", cache)
    assert b.to_dict() == a.to_dict() and cache.events[-1] == ("analyses", "cached")
    none = audit_analyses(scenario, {}, 16, 1 / 12, tmp_path / "cache")
    assert not none.cos_p_phat and "not computed" in none.extra["cos_p_phat"]
