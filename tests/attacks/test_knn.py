"""k-NN identity attack and blocked search, checked against scikit-learn / dense numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from attacks.knn import (
    Gallery,
    KnnAttackConfig,
    KnnTruth,
    covered_identities,
    dp_kmeans_centers,
    knn_identity_attack,
)
from attacks.search import identity_scores_blocks, topk_cosine


def _world(seed=0, d=32, n_ids=60, per_id=3, n_groups=3, noise=0.35):
    """Identity centers clustered by group; gallery images = center + noise."""
    g = torch.Generator().manual_seed(seed)
    group_dirs = F.normalize(torch.randn(n_groups, d, generator=g), dim=1)
    groups = torch.arange(n_ids) % n_groups
    centers = F.normalize(group_dirs[groups] + 0.8 * torch.randn(n_ids, d, generator=g) / d**0.5 * 3, dim=1)
    ids = torch.arange(100, 100 + n_ids)
    gal = centers.repeat_interleave(per_id, 0) + noise * torch.randn(n_ids * per_id, d, generator=g) / d**0.5
    gallery = Gallery(gal, ids.repeat_interleave(per_id), groups.repeat_interleave(per_id))
    return centers, ids, groups, gallery, g


def test_topk_cosine_blocked_equals_dense():
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(13, 8, generator=g), torch.randn(41, 8, generator=g)
    s, i = topk_cosine(q, gal, k=4, query_block=3, gallery_block=5)
    dense = F.normalize(q, dim=1) @ F.normalize(gal, dim=1).T
    ds, di = torch.topk(dense, 4, dim=1)
    torch.testing.assert_close(s, ds)
    assert torch.equal(i, di)
    nn = NearestNeighbors(n_neighbors=4, algorithm="brute", metric="cosine").fit(gal.numpy())
    _, ski = nn.kneighbors(q.numpy())
    assert np.array_equal(i.numpy(), ski)


def test_identity_scores_blocks_max_and_mean():
    g = torch.Generator().manual_seed(1)
    q, gal = torch.randn(7, 6, generator=g), torch.randn(20, 6, generator=g)
    gid = torch.tensor([5, 2, 9, 2] * 5)
    qn, gn = F.normalize(q, dim=1).numpy(), F.normalize(gal, dim=1).numpy()
    uniq = [2, 5, 9]
    full_max = np.stack([(qn @ gn[gid.numpy() == u].T).max(1) for u in uniq], 1)
    templates = np.stack([gn[gid.numpy() == u].mean(0) for u in uniq])
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    for reduce, ref in (("max", full_max), ("mean", qn @ templates.T)):
        parts = list(identity_scores_blocks(q, gal, gid, reduce=reduce, query_block=2, gallery_block=3))
        got = torch.cat([p for _, p in parts]).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_knn_attack_on_class_centers_matches_independent_reference():
    centers, ids, groups, gallery, g = _world()
    members = ids[:20]
    observed = centers[:20] + 0.05 * torch.randn(20, centers.shape[1], generator=g)
    truth = KnnTruth.from_row_ids(members, members)
    res = knn_identity_attack(observed, gallery, truth, KnnAttackConfig(k=3, query_block=7, gallery_block=50,
                                                                         n_bootstrap=50))
    # Top-1 identity under reduce="max" = identity of the nearest gallery image (sklearn brute).
    nn = NearestNeighbors(n_neighbors=1, algorithm="brute", metric="cosine").fit(gallery.embeddings.numpy())
    _, idx = nn.kneighbors(observed.numpy())
    ref_top1 = np.mean(gallery.identity_ids.numpy()[idx[:, 0]] == members.numpy())
    assert res.top1_rate == pytest.approx(ref_top1)
    assert res.top1_rate > 0.9  # clean centers are identified (the attack works)
    assert res.topk_rate >= res.top1_rate
    # chance: one own identity among the gallery's identities
    assert res.top1_chance == pytest.approx(1 / len(np.unique(gallery.identity_ids.numpy())))
    assert res.summary()["top1_chance"] == res.top1_chance
    # Membership scores and AUC from a dense computation.
    sims = F.normalize(observed, dim=1).numpy() @ F.normalize(gallery.embeddings, dim=1).numpy().T
    uid = np.unique(gallery.identity_ids.numpy())
    best = np.array([sims[:, gallery.identity_ids.numpy() == u].max() for u in uid])
    np.testing.assert_allclose(res.membership_scores, best, rtol=1e-5)
    labels = np.isin(uid, members.numpy())
    assert res.membership_auc == pytest.approx(roc_auc_score(labels, best))
    assert [t.target_fpr for t in res.tpr_at_fpr] == [1e-3, 1e-2]
    assert not res.tpr_at_fpr[0].supported  # 40 non-members cannot support FPR = 1e-3
    assert any("not supported" in n for n in res.notes)
    for t in res.tpr_at_fpr:
        assert t.ci_low <= t.tpr <= t.ci_high


def test_noise_degrades_identification():
    centers, ids, groups, gallery, g = _world(seed=3)
    members = ids[:20]
    truth = KnnTruth.from_row_ids(members, members)
    cfg = KnnAttackConfig(k=1, n_bootstrap=20)
    clean = knn_identity_attack(centers[:20], gallery, truth, cfg)
    noisy = knn_identity_attack(centers[:20] + 3.0 * torch.randn(20, 32, generator=g), gallery, truth, cfg)
    assert noisy.top1_rate < clean.top1_rate
    assert noisy.membership_auc < clean.membership_auc


def test_cluster_centers_reveal_group():
    centers, ids, groups, gallery, g = _world(seed=4, n_ids=90)
    members = ids[:45]
    # One cluster per (group, chunk of 5 member identities of that group).
    obs, covered = [], []
    for grp in range(3):
        mem = members[groups[:45] == grp]
        for chunk in mem.split(5):
            rows = chunk - 100
            obs.append(F.normalize(centers[rows].mean(0), dim=0))
            covered.append(frozenset(chunk.tolist()))
    truth = KnnTruth(covered, members, {int(i): int(gr) for i, gr in zip(ids, groups)})
    res = knn_identity_attack(torch.stack(obs), gallery, truth, KnnAttackConfig(k=5, n_bootstrap=20), kind="cluster_centers")
    assert res.group_num_observations == len(obs)
    assert res.group_accuracy == 1.0
    assert res.group_chance == pytest.approx(1 / 3)


def test_knn_attack_bad_input_names_observer_and_kind():
    centers, ids, groups, gallery, _ = _world()
    truth = KnnTruth.from_row_ids(ids[:3], ids[:3])
    with pytest.raises(ValueError, match="observer 'client:2', kind 'noisy_cluster_centers'.*d=16"):
        knn_identity_attack(torch.zeros(3, 16), gallery, truth, observer="client:2", kind="noisy_cluster_centers")
    with pytest.raises(ValueError, match="non-empty"):
        knn_identity_attack(torch.zeros(0, 32), gallery, truth)
    with pytest.raises(ValueError, match="both member and non-member"):
        knn_identity_attack(centers[:3], gallery, KnnTruth.from_row_ids(ids[:3], ids))
    with pytest.raises(ValueError, match="k must be"):
        KnnAttackConfig(k=0)


def test_dp_kmeans_centers_and_coverage():
    centers, ids, *_ = _world(seed=5, n_ids=40)
    a = dp_kmeans_centers(centers, ids, n_clusters=4, epsilon=1.0, seed=3)
    b = dp_kmeans_centers(centers, ids, n_clusters=4, epsilon=1.0, seed=3)
    assert a.centers.shape == (4, 32)
    torch.testing.assert_close(a.centers, b.centers)
    covered = [i for s in a.covered for i in s]
    assert sorted(covered) == ids.tolist()  # nearest-center assignment partitions the identities
    with pytest.raises(ValueError, match="epsilon"):
        dp_kmeans_centers(centers, ids, 4, epsilon=0.0)
    with pytest.raises(ValueError, match="outside bounds"):
        dp_kmeans_centers(centers * 3, ids, 4, epsilon=1.0)


def test_covered_identities_with_margin():
    c = torch.tensor([[1.0, 0], [0.0, 1], [0.8, 0.6]])
    v = torch.tensor([[1.0, 0]])
    assert covered_identities(v, c, torch.tensor([1, 2, 3]), margin=0.7) == [frozenset({1, 3})]
