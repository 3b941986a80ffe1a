"""The membership game on releases (offline LiRA with simulated shadow releases): known answers on a
fixed linear recogniser of toy faces — raw class centers are the ceiling (normalised success 1),
a release independent of the data gives TPR ≈ FPR, DPLC with tiny ε sits near the floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.membership_attack import MembershipConfig, membership_attack, release_simulator
from federated_core.data.faceset import FaceSet
from federated_core.models import embed

RES = 8
CLIENTS = {f"client:{k}": list(range(10 * k, 10 * k + 10)) for k in range(4)}
PUBLIC = list(range(50_000, 50_060))


def render(ids: torch.Tensor, per_identity: int, start_index: int) -> FaceSet:
    """Identity i: a fixed random pattern; image j: that pattern plus small noise seeded by (i, start + j)."""
    images, labels = [], []
    for i in ids.tolist():
        base = torch.rand(3, RES, RES, generator=torch.Generator().manual_seed(i))
        for j in range(per_identity):
            g = torch.Generator().manual_seed(i * 100_003 + start_index + j)
            images.append((base + 0.05 * torch.randn(base.shape, generator=g)).clamp(0, 1))
            labels.append(i)
    x = (torch.stack(images) * 255).round().to(torch.uint8)
    return FaceSet(x, torch.tensor(labels))


@pytest.fixture(scope="module")
def model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * RES * RES, 24)).eval()


def centers(model, ids, start=0):
    emb = embed(model, render(torch.tensor(ids), 4, start))
    return F.normalize(emb.view(len(ids), 4, -1).mean(1), dim=1)


def run(model, kind, releases, metas=None, nonmembers=1000, shadows=32):
    config = MembershipConfig(nonmembers=nonmembers, shadows=shadows, n_bootstrap=100, fprs=(1e-3, 1e-2))
    true = {p: centers(model, ids) for p, ids in CLIENTS.items()}
    return membership_attack(
        kind, "server", model, render, releases, metas or {}, CLIENTS, centers(model, PUBLIC, start=500), true, config
    )


def test_raw_class_centers_are_the_ceiling(model):
    releases = {p: centers(model, ids) for p, ids in CLIENTS.items()}
    r = run(model, "class_centers", releases)
    at = r.lira["at_fpr"]["0.01"]
    assert at["supported"] and not r.lira["at_fpr"]["0.001"]["supported"]  # 1000 non-members: 1e-3 unsupported
    assert at["tpr"] > 0.9  # the member's own center sits at cosine ~1 to its query images
    # the released rows are the true centers, so raw and oracle are the same attack: normalised exactly 1
    assert r.oracle["at_fpr"]["0.01"]["tpr"] == at["tpr"]
    assert r.normalised["0.01"]["normalised"] == pytest.approx(1.0)
    assert r.members == 40 and r.nonmembers == 1000 and r.clients == 4
    low, high = r.null["at_fpr"]["0.01"]["tpr_ci"]
    assert low <= 0.01 <= high  # shuffled labels: the floor


def test_a_release_independent_of_the_data_gives_tpr_near_fpr(model):
    g = torch.Generator().manual_seed(3)
    releases = {p: F.normalize(torch.randn(10, 24, generator=g), dim=1) for p in CLIENTS}
    r = run(model, "class_centers", releases)
    at = r.lira["at_fpr"]["0.01"]
    low, high = at["tpr_ci"]
    assert low <= 0.01 <= high and at["tpr"] <= 0.1
    assert r.normalised["0.01"]["normalised"] < 0.15


def test_dplc_with_tiny_epsilon_is_near_the_floor_and_without_noise_leaks(model):
    meta = {"rho": 1.5, "min_cluster_size": 2, "max_queries": 1, "epsilon": 0.01, "delta": 1e-5}
    noisy = {
        p: release_simulator("noisy_cluster_centers", meta)(centers(model, ids), torch.Generator().manual_seed(k))
        for k, (p, ids) in enumerate(CLIENTS.items())
    }
    r = run(model, "noisy_cluster_centers", noisy, {p: meta for p in CLIENTS})
    assert r.lira["at_fpr"]["0.01"]["tpr"] <= 0.1
    clean = {
        p: release_simulator("cluster_centers", meta)(centers(model, ids), torch.Generator())
        for p, ids in CLIENTS.items()
    }
    r_clean = run(model, "cluster_centers", clean, {p: meta for p in CLIENTS})
    # a noise-free cluster mean still carries its members' directions: more than the noisy release
    assert r_clean.lira["at_fpr"]["0.01"]["tpr"] > r.lira["at_fpr"]["0.01"]["tpr"]


def test_same_seed_same_numbers_and_bad_inputs(model):
    releases = {p: centers(model, ids) for p, ids in CLIENTS.items()}
    a = run(model, "class_centers", releases, nonmembers=200, shadows=8).to_dict()
    b = run(model, "class_centers", releases, nonmembers=200, shadows=8).to_dict()
    assert a == b
    assert a["lira"]["at_fpr"]["0.01"]["unsupported_reason"]  # 200 non-members cannot support 1e-2
    with pytest.raises(ValueError, match="shadows"):
        MembershipConfig(shadows=1)
    with pytest.raises(ValueError, match="fprs"):
        MembershipConfig(fprs=(0.0,))
    with pytest.raises(ValueError, match="min_cluster_size"):
        release_simulator("noisy_cluster_centers", {"rho": 1.0})
    with pytest.raises(ValueError, match="no release simulator"):
        release_simulator("backbone", {})
    assert np.isfinite(a["lira"]["auroc"])
