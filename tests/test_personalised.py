"""Personalised protocols of FedFR and FedFS, checked against scikit-learn and brute force on the
same scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from federated_core.data.faceset import FaceSet
from federated_core.evaluation import tpir_at_fpir
from federated_core.personalised import (
    average_over_clients,
    evaluate_personalised,
    fedfr_client_metrics,
    fedfr_verification_pairs,
    fedfs_client_metrics,
    own_identity_scores,
    split_clients,
    tpir_at_fpir_fedfr_pairs,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(seed: int, ids: list[int], per: int, d: int = 8, noise: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = {i: rng.normal(size=d) for i in ids}
    labels = np.repeat(np.asarray(ids), per)
    x = np.stack([centers[i] for i in labels]) + noise * rng.normal(size=(len(labels), d))
    return x, labels


def _sklearn_tar(scores: np.ndarray, is_same: np.ndarray, far: float) -> float:
    fpr, tpr, _ = roc_curve(is_same, scores, drop_intermediate=False)
    return float(tpr[fpr <= far].max())


# ------------------------------------------------------------------------------------ 1:1 (FedFR)


def test_fedfr_pairs_are_local_genuine_and_local_vs_others():
    labels = np.array([1, 1, 1, 2, 2, 7, 7, 8, 9])
    i, j, same = fedfr_verification_pairs(labels, [1, 2], seed=0)
    pairs = {(min(a, b), max(a, b), s) for a, b, s in zip(i, j, same)}
    genuine = {(a, b) for a in range(9) for b in range(a + 1, 9) if labels[a] == labels[b] and labels[a] in (1, 2)}
    impostor = {(min(a, b), max(a, b)) for a in range(5) for b in range(5, 9)}
    assert {(a, b) for a, b, s in pairs if s} == genuine and len(genuine) == 3 + 1
    assert {(a, b) for a, b, s in pairs if not s} == impostor and same.size == 4 + 20
    i2, j2, same2 = fedfr_verification_pairs(labels, [1, 2], max_genuine=2, max_impostor=5, seed=3)
    assert same2.sum() == 2 and (~same2).sum() == 5
    assert all(labels[a] in (1, 2) and labels[b] not in (1, 2) for a, b, s in zip(i2, j2, same2) if not s)


def test_fedfr_client_metrics_match_sklearn_on_the_same_scores():
    x, labels = _clustered(0, list(range(12)), 6)
    enrol, enrol_ids = _clustered(0, [0, 1, 2], 4)  # same centers (same seed): the local identities
    metrics = fedfr_client_metrics(x, labels, enrol, enrol_ids, fars=(0.1, 0.01, 1e-6), fpirs=(0.1, 0.02), seed=0)
    i, j, same = fedfr_verification_pairs(labels, [0, 1, 2], seed=0)
    xn = _unit(x)
    scores = (xn[i] * xn[j]).sum(1)
    ver = metrics["verification"]
    assert ver["num_genuine"] == 3 * 15 and ver["num_impostor"] == 18 * 54
    assert ver["auroc"] == pytest.approx(roc_auc_score(same, scores), abs=1e-12)
    for far in (0.1, 0.01):
        assert ver["tar_at_far"][repr(far)] == pytest.approx(_sklearn_tar(scores, same, far), abs=1e-12)
    assert ver["unsupported_fars"] == [1e-6]
    ident = metrics["identification"]
    assert ident["mated_probes"] == 18 and ident["non_mated_probes"] == 54
    assert ident["tpir_at_fpir"]["0.1"] == tpir_at_fpir(enrol, enrol_ids, x, labels, 0.1)
    assert metrics["local_identities"] == 3


# ------------------------------------------------------------------------------------ 1:N rules


def _brute_force_fedfr_pairs(gallery, gallery_ids, probes, probe_ids, fpir):
    ids = sorted(set(gallery_ids.tolist()))
    templates = np.stack([_unit(_unit(gallery)[gallery_ids == g].sum(0, keepdims=True))[0] for g in ids])
    p = _unit(probes)
    non_mated, mates = [], []
    for a in range(len(p)):
        for b, g in enumerate(ids):
            s = float(p[a] @ templates[b])
            (mates if probe_ids[a] == g else non_mated).append(s)
    non_mated.sort(reverse=True)
    tau = non_mated[math.ceil(len(p) * fpir) - 1]
    return sum(s > tau for s in mates) / len(mates)


@pytest.mark.parametrize("seed", range(3))
def test_fedfr_pair_threshold_matches_brute_force(seed):
    probes, probe_ids = _clustered(seed, list(range(10)), 5, noise=1.2)
    gallery, gallery_ids = _clustered(seed, [0, 1, 2, 3], 3, noise=1.2)
    for fpir in (0.3, 0.1, 0.05, 0.02):
        got = tpir_at_fpir_fedfr_pairs(gallery, gallery_ids, probes, probe_ids, fpir)
        assert got == pytest.approx(_brute_force_fedfr_pairs(gallery, gallery_ids, probes, probe_ids, fpir), abs=1e-12)


def test_fedfr_pair_rule_differs_from_nist_on_a_hand_made_gallery():
    gallery = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # templates e1 (id 1), e2 (id 2)
    gallery_ids = np.array([1, 2])
    probes = np.array([[0.8, 0.9, 0.0], [0.0, 0.7, 0.3], [0.6, 0.0, 0.5], [0.5, 0.1, 0.7]])
    probe_ids = np.array([1, 2, 5, 6])  # probe 0's mate (id 1) ranks second: e2 scores higher
    p = _unit(probes)
    # cosines: probe 0 -> (0.664, 0.747), probe 1 -> (0, 0.919), probe 2 -> (0.768, 0), probe 3 -> (0.577, 0.115)
    assert p[0, 0] < p[0, 1] and p[3, 0] < p[0, 0] < p[0, 1] < p[2, 0]
    # NIST, FPIR 0.5: one of the two non-mated searches may pass: tau = 2nd top score 0.577; probe 0's
    # mate clears it but ranks second (a miss), probe 1 is a hit
    assert tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.5) == 0.5
    # FedFR pairs, FPIR 0.75: k = ceil(4 * 0.75) = 3: tau = 3rd largest non-mated PAIR score
    # (0.768, 0.747, 0.577, ...) = 0.577; no rank condition: probe 0 counts as identified
    assert sorted([p[0, 1], p[1, 0], p[2, 0], p[2, 1], p[3, 0], p[3, 1]], reverse=True)[2] == p[3, 0]
    assert tpir_at_fpir_fedfr_pairs(gallery, gallery_ids, probes, probe_ids, 0.75) == 1.0
    # FPIR 0.5: k = 2: tau = 0.747 (probe 0 against the wrong template): probe 0 misses
    assert tpir_at_fpir_fedfr_pairs(gallery, gallery_ids, probes, probe_ids, 0.5) == 0.5
    with pytest.raises(ValueError, match="fpir"):
        tpir_at_fpir_fedfr_pairs(gallery, gallery_ids, probes, probe_ids, 0.0)
    with pytest.raises(ValueError, match="non-mated pair"):  # one probe, one template: no non-mated pair
        tpir_at_fpir_fedfr_pairs(gallery[:1], gallery_ids[:1], probes[:1], probe_ids[:1], 0.5)


# ------------------------------------------------------------------------------------ FedFS


def test_fedfs_client_metrics_match_sklearn():
    probes, probe_ids = _clustered(4, list(range(30)), 4, noise=1.0)
    enrol, enrol_ids = _clustered(4, [7], 3, noise=1.0)
    metrics = fedfs_client_metrics(probes, probe_ids, enrol, enrol_ids, fpirs=(1e-3, 0.05))
    template = _unit(_unit(enrol).sum(0, keepdims=True))[0]
    scores = _unit(probes) @ template
    assert metrics["auroc"] == pytest.approx(roc_auc_score(probe_ids == 7, scores), abs=1e-12)
    assert metrics["num_genuine"] == 4 and metrics["num_impostor"] == 116
    ident = metrics["identification"]
    assert ident["unsupported_fpirs"] == [1e-3]  # 116 non-mated probes cannot support 1e-3
    assert ident["tpir_at_fpir"]["0.05"] == tpir_at_fpir(enrol, enrol_ids, probes, probe_ids, 0.05)
    s, same = own_identity_scores(probes, probe_ids, enrol, enrol_ids)
    assert np.allclose(s, scores) and same.sum() == 4


# ------------------------------------------------------------------------------------ driver


class _Projection(nn.Module):
    """A fixed 'backbone': flatten and project (deterministic, no training)."""

    def __init__(self, seed: int, resolution: int = 8, d: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3 * resolution * resolution, d, generator=gen))

    def forward(self, x):
        return x.flatten(1) @ self.weight


def _faces(ids: list[int], per: int, seed: int) -> FaceSet:
    gen = torch.Generator().manual_seed(seed)
    base = {i: torch.randint(0, 256, (3, 8, 8), generator=gen) for i in ids}
    images = torch.stack([(base[i] + torch.randint(-40, 40, (3, 8, 8), generator=gen)).clamp(0, 255)
                          for i in ids for _ in range(per)]).to(torch.uint8)
    return FaceSet(images, torch.tensor(ids).repeat_interleave(per))


def test_split_clients_and_evaluate_personalised():
    raw = [_faces([10 * c, 10 * c + 1], 6, seed=c) for c in range(4)]
    split = split_clients(raw, train_count=4, seed=1)
    again = split_clients(raw, train_count=4, seed=1)
    assert all(torch.equal(a.faces.images, b.faces.images) for a, b in zip(split.clients, again.clients))
    for c, (train, test) in enumerate(zip(split.clients, split.test)):
        assert train.identities == [10 * c, 10 * c + 1]
        assert np.bincount(train.faces.labels.numpy() - 10 * c).tolist() == [4, 4]
        assert np.bincount(test.labels.numpy() - 10 * c).tolist() == [2, 2]
    models = [_Projection(seed=c) for c in range(4)]
    report = evaluate_personalised(lambda c: models[c], split, "fedfr", fars=(0.1,), fpirs=(0.2,))
    test = FaceSet.concat(split.test)
    from federated_core.models import embed

    for c in range(4):
        probes = embed(models[c], test).numpy()
        enrol = embed(models[c], split.clients[c].faces).numpy()
        direct = fedfr_client_metrics(probes, test.labels.numpy(), enrol, split.clients[c].faces.labels.numpy(),
                                      fars=(0.1,), fpirs=(0.2,), seed=c)
        assert report.per_client[c]["verification"] == direct["verification"]
        assert report.per_client[c]["identification"] == direct["identification"]
    tpirs = [r["identification"]["tpir_at_fpir"]["0.2"] for r in report.per_client]
    assert report.mean["identification.tpir_at_fpir.0.2"]["mean"] == pytest.approx(np.mean(tpirs))
    assert report.mean["identification.tpir_at_fpir.0.2"]["clients"] == 4
    shared = evaluate_personalised(lambda c: models[0], split, "fedfs", fpirs=(0.2,))
    assert [r["client"] for r in shared.per_client] == [0, 1, 2, 3] and "auroc" in shared.mean
    with pytest.raises(ValueError, match="protocol"):
        evaluate_personalised(lambda c: models[0], split, "lfw")
    with pytest.raises(ValueError, match="fpir_rule"):
        evaluate_personalised(lambda c: models[0], split, "fedfr", fpir_rule="top1")
    with pytest.raises(ValueError, match="held by clients"):
        split_clients([raw[0], raw[0]], train_count=4)


def test_average_over_clients_skips_missing_values():
    per = [{"client": 0, "auroc": 0.5, "x": {"a": 1.0}}, {"client": 1, "auroc": None, "x": {"a": 3.0, "b": 2.0}}]
    mean = average_over_clients(per)
    assert mean["x.a"] == {"mean": 2.0, "std": 1.0, "clients": 2}
    assert mean["auroc"]["clients"] == 1 and mean["x.b"]["clients"] == 1 and "client" not in mean
