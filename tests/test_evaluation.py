"""Evaluation protocols, checked against scikit-learn and hand-worked examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from federated_core.evaluation import (
    auroc,
    best_threshold,
    make_verification_pairs,
    rank1,
    roc,
    supported_fars,
    tar_at_far,
    tpir_at_fpir,
    verification_accuracy,
    verification_report,
)


def _tied_scores(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_same = rng.random(n) < 0.3
    # coarse rounding creates many ties within and across the two classes
    scores = np.round(rng.normal(0.0, 1.0, n) + 1.2 * is_same, 1)
    return scores, is_same


@pytest.mark.parametrize("seed", range(5))
def test_roc_and_auroc_match_sklearn(seed: int) -> None:
    scores, is_same = _tied_scores(seed)
    far, tar, thresholds = roc(scores, is_same)
    fpr_ref, tpr_ref, thr_ref = roc_curve(is_same, scores, drop_intermediate=False)
    np.testing.assert_array_equal(thresholds, thr_ref)
    np.testing.assert_allclose(far, fpr_ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tar, tpr_ref, rtol=0, atol=1e-15)
    assert auroc(scores, is_same) == pytest.approx(roc_auc_score(is_same, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_tar_at_far_matches_the_sklearn_roc(seed: int) -> None:
    scores, is_same = _tied_scores(seed)
    num_impostor = int((~is_same).sum())
    fpr_ref, tpr_ref, _ = roc_curve(is_same, scores, drop_intermediate=False)
    # targets between ROC points, and exactly on k / num_impostor
    targets = [0.5, 0.1, 0.05, 0.0123, 3 / num_impostor, 1 / num_impostor, 0.999]
    for far in targets:
        expected = tpr_ref[fpr_ref <= far].max()
        assert tar_at_far(scores, is_same, far) == expected, far


def test_tar_at_far_ties_and_hand_example() -> None:
    # impostors 0.9, 0.5, 0.5, 0.1; genuine 0.95, 0.6, 0.5, 0.2
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.95, 0.6, 0.5, 0.2])
    is_same = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    assert tar_at_far(scores, is_same, 0.25) == 0.5  # accept > 0.5: 0.95, 0.6 (and impostor 0.9)
    # FAR 0.5 allows two false accepts, but the two tied impostors at 0.5 come together (3/4)
    assert tar_at_far(scores, is_same, 0.5) == 0.5
    # FAR 0.75 allows three: accept > 0.1 (impostors 0.9, 0.5, 0.5), every genuine pair passes
    assert tar_at_far(scores, is_same, 0.75) == 1.0
    # torch inputs are accepted
    assert tar_at_far(torch.tensor(scores), torch.tensor(is_same), 0.25) == 0.5


def test_unsupported_far_and_supported_fars() -> None:
    scores, is_same = _tied_scores(0, n=300)
    num_impostor = int((~is_same).sum())
    with pytest.raises(ValueError, match=r"far=0.001 is not supported by \d+ impostor pairs"):
        tar_at_far(scores, is_same, 1e-3)
    assert supported_fars(1000, [1e-1, 1e-2, 1e-3, 1e-4]) == [1e-1, 1e-2, 1e-3]
    assert supported_fars(num_impostor, [0.5, 1 / num_impostor, 0.5 / num_impostor]) == [0.5, 1 / num_impostor]
    with pytest.raises(ValueError, match="num_impostors"):
        supported_fars(0, [0.1])
    with pytest.raises(ValueError, match="fars"):
        supported_fars(10, [0.1, 1.5])


def test_bad_inputs_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="same length"):
        roc([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="at least one genuine"):
        auroc([0.1, 0.2], [False, False])
    with pytest.raises(ValueError, match="at least one impostor"):
        tar_at_far([0.1, 0.2], [True, True], 0.5)
    for far in (0.0, 1.0, -0.1, 2.0, float("nan")):
        with pytest.raises(ValueError, match=r"far must be a number in the open interval \(0, 1\)"):
            tar_at_far([0.1, 0.2], [True, False], far)
    with pytest.raises(ValueError, match="scores must be finite"):
        auroc([0.1, float("nan")], [True, False])
    with pytest.raises(ValueError, match="is_same must be boolean or 0/1"):
        auroc([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="scores must be a 1-d array"):
        auroc(np.zeros((2, 2)), [True, False])
    with pytest.raises(ValueError, match="folds"):
        verification_accuracy([0.1, 0.2, 0.3], [True, False, True], folds=1)
    with pytest.raises(ValueError, match="folds=10 needs at least 10 pairs"):
        verification_accuracy([0.1, 0.2, 0.3], [True, False, True])


def test_verification_accuracy_hand_worked() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.6, 0.4, 0.1])
    is_same = np.array([1, 1, 0, 0, 1, 0, 1, 0], dtype=bool)
    # fold 0 (first block) uses the threshold of block 1: best 3/4 first reached between 0.7 and
    # 0.6 -> 0.65, which classifies block 0 perfectly. Fold 1 uses block 0's threshold
    # (0.8 + 0.3) / 2 = 0.55: block 1 gets 0.7 (T) and 0.1 (F) right, 0.6 and 0.4 wrong.
    assert best_threshold(scores[4:], is_same[4:]) == pytest.approx(0.65)
    assert best_threshold(scores[:4], is_same[:4]) == pytest.approx(0.55)
    mean, std = verification_accuracy(scores, is_same, folds=2, return_std=True)
    assert mean == pytest.approx(0.75) and std == pytest.approx(0.25)
    # explicit fold ids: the same split given as ids, and the split reversed in order
    assert verification_accuracy(scores, is_same, fold_ids=np.repeat([0, 1], 4)) == pytest.approx(0.75)
    assert verification_accuracy(scores, is_same, fold_ids=np.repeat([5, 2], 4)) == pytest.approx(0.75)


def _reference_accuracy(scores: np.ndarray, is_same: np.ndarray, folds: int) -> float:
    """Brute force LFW protocol: every candidate threshold tried one by one."""
    blocks = np.array_split(np.arange(len(scores)), folds)
    accuracies = []
    for block in blocks:
        train = np.setdiff1d(np.arange(len(scores)), block)
        values = np.unique(scores[train])[::-1]
        candidates = [np.inf] + [(a + b) / 2 for a, b in zip(values[:-1], values[1:])] + [-np.inf]
        best_t, best_acc = None, -1.0
        for t in candidates:
            acc = np.mean((scores[train] >= t) == is_same[train])
            if acc > best_acc:
                best_t, best_acc = t, acc
        accuracies.append(np.mean((scores[block] >= best_t) == is_same[block]))
    return float(np.mean(accuracies))


@pytest.mark.parametrize("seed", range(3))
def test_verification_accuracy_matches_brute_force(seed: int) -> None:
    scores, is_same = _tied_scores(seed, n=250)
    assert verification_accuracy(scores, is_same) == pytest.approx(_reference_accuracy(scores, is_same, 10), abs=1e-12)


def _unit_rows(rows: list[list[float]]) -> np.ndarray:
    x = np.array(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _hand_gallery() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # templates: id 0 -> e1, id 1 -> e2, id 2 -> mean of two rows = e3 (after re-normalising)
    gallery = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0.6, 0.8, 0], [0, -0.6, 0.8, 0]], dtype=np.float64)
    gallery_ids = np.array([0, 1, 2, 2])

    def probe(a, b, c):
        return [a, b, c, math.sqrt(max(0.0, 1 - a * a - b * b - c * c))]

    probes = np.array([
        probe(0.9, 0.3, 0.0),   # id 0: mate 0.9, rank 1
        probe(0.5, 0.8, 0.0),   # id 1: mate 0.8, rank 1
        probe(0.8, 0.0, 0.6),   # id 2: mate 0.6, rank 2 (e1 scores 0.8)
        probe(0.45, 0.0, 0.85),  # id 0: mate 0.45, rank 2 (e3 scores 0.85)
        probe(0.95, 0.1, 0.0),  # non-mated, top 0.95
        probe(0.75, 0.0, 0.5),  # non-mated, top 0.75
        probe(0.65, 0.5, 0.2),  # non-mated, top 0.65
        probe(0.5, 0.3, 0.2),   # non-mated, top 0.5
    ])
    probe_ids = np.array([0, 1, 2, 0, 9, 9, 8, 7])
    return gallery, gallery_ids, probes, probe_ids


def test_tpir_at_fpir_hand_made_gallery() -> None:
    gallery, gallery_ids, probes, probe_ids = _hand_gallery()
    # FPIR 0.25: one non-mated search may pass -> threshold just above 0.75 -> mates 0.9, 0.8 pass
    assert tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.25) == 0.5
    assert tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.25, rank=2) == 0.5
    # FPIR 0.75: threshold just above 0.5 -> rank 2 adds the id-2 probe (0.6) but not 0.45
    assert tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.75, rank=1) == 0.5
    assert tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.75, rank=2) == 0.75
    assert rank1(gallery, gallery_ids, probes, probe_ids) == 0.5
    # torch inputs, and a scaled gallery/probe set (cosine similarity is scale-free)
    assert tpir_at_fpir(torch.tensor(gallery * 3), torch.tensor(gallery_ids), torch.tensor(probes * 0.5),
                        torch.tensor(probe_ids), 0.75, rank=2) == 0.75
    with pytest.raises(ValueError, match=r"fpir=0.1 is not supported by 4 non-mated probes"):
        tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.1)


def test_tpir_ties_at_the_threshold_are_rejected() -> None:
    gallery, gallery_ids = np.array([[1.0, 0.0]]), np.array([0])
    tied = [0.8, 0.6]
    probes = np.array([[1.0, 0.0], tied, [0.9, math.sqrt(0.19)], tied, [0.2, math.sqrt(0.96)], [0.1, math.sqrt(0.99)]])
    probe_ids = np.array([0, 0, 5, 6, 7, 8])  # mated: 1.0 and 0.8; non-mated tops: 0.9, 0.8, 0.2, 0.1
    # FPIR 0.25 allows one non-mated search: accepting the mate at 0.8 would also accept the
    # non-mated 0.8 (FPIR 0.5), so only the mate at 1.0 counts
    assert tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.25) == 0.5
    assert tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.5) == 1.0


def test_rank1_counts_ties_as_misses() -> None:
    gallery, gallery_ids = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([3, 4])
    probes = np.array([[1.0, 1.0], [1.0, 0.2]])
    assert rank1(gallery, gallery_ids, probes, np.array([3, 3])) == 0.5


def test_identification_bad_inputs() -> None:
    gallery, gallery_ids, probes, probe_ids = _hand_gallery()
    with pytest.raises(ValueError, match="non-mated probes"):
        tpir_at_fpir(gallery, gallery_ids, probes[:4], probe_ids[:4], 0.5)
    with pytest.raises(ValueError, match="must include mated probes"):
        tpir_at_fpir(gallery, gallery_ids, probes[4:], probe_ids[4:], 0.5)
    with pytest.raises(ValueError, match="must include mated probes"):
        rank1(gallery, gallery_ids, probes[4:], probe_ids[4:])
    with pytest.raises(ValueError, match="fpir must be a number"):
        tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.0)
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, 0.5, rank=0)
    with pytest.raises(ValueError, match="gallery_ids must be an integer array"):
        tpir_at_fpir(gallery, gallery_ids[:3], probes, probe_ids, 0.5)
    with pytest.raises(ValueError, match="probes must have d=4 columns"):
        rank1(gallery, gallery_ids, probes[:, :3], probe_ids)


def test_make_verification_pairs() -> None:
    labels = np.repeat(np.arange(6), [1, 2, 3, 4, 2, 5])  # 17 images
    total_genuine = sum(k * (k - 1) // 2 for k in [1, 2, 3, 4, 2, 5])  # 1 + 3 + 6 + 1 + 10 = 21
    i, j, is_same = make_verification_pairs(labels, 15, 40, seed=3)
    assert i.dtype == np.int64 and j.dtype == np.int64 and is_same.dtype == bool
    assert is_same.sum() == 15 and (~is_same).sum() == 40
    assert np.all(i != j)
    assert np.array_equal(labels[i] == labels[j], is_same)
    unordered = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist())}
    assert len(unordered) == 55  # no pair drawn twice
    assert is_same[:20].any() and (~is_same[:20]).any()  # shuffled together
    again = make_verification_pairs(torch.tensor(labels), 15, 40, seed=3)
    for a, b in zip((i, j, is_same), again):
        assert np.array_equal(a, b)
    other = make_verification_pairs(labels, 15, 40, seed=4)
    assert not np.array_equal(i, other[0])
    # all genuine pairs can be drawn; one more is impossible
    i, j, _ = make_verification_pairs(labels, total_genuine, 0, seed=0)
    assert len({(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist())}) == total_genuine
    with pytest.raises(ValueError, match=f"num_genuine={total_genuine + 1} exceeds the {total_genuine} genuine pairs"):
        make_verification_pairs(labels, total_genuine + 1, 0, seed=0)
    with pytest.raises(ValueError, match="an identity needs >= 2 images"):
        make_verification_pairs(np.arange(5), 1, 1, seed=0)
    with pytest.raises(ValueError, match="num_impostor=1 exceeds the 0 impostor pairs"):
        make_verification_pairs(np.zeros(4, dtype=np.int64), 1, 1, seed=0)
    with pytest.raises(ValueError, match="num_genuine must be an integer >= 0"):
        make_verification_pairs(labels, -1, 1, seed=0)
    with pytest.raises(ValueError, match="labels must be a 1-d integer array"):
        make_verification_pairs(labels.astype(float), 1, 1, seed=0)


def test_make_verification_pairs_is_uniform_over_genuine_pairs() -> None:
    # identity 0 has 1 genuine pair, identity 1 has 6: drawing 1 pair many times, identity 1
    # must be chosen about 6/7 of the time (pair-uniform protocol)
    labels = np.array([0, 0, 1, 1, 1, 1])
    rng = np.random.default_rng(0)
    hits = sum(labels[make_verification_pairs(labels, 1, 0, seed=rng)[0][0]] == 1 for _ in range(700))
    assert 560 < hits < 640


def test_verification_report() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 5)
    centers = rng.normal(size=(40, 16))
    embeddings = centers[labels] + 0.9 * rng.normal(size=(200, 16))
    report = verification_report(embeddings, labels, num_genuine=300, num_impostor=500, seed=1)
    assert report["num_genuine"] == 300 and report["num_impostor"] == 500
    assert list(report["tar_at_far"]) == ["0.1", "0.01"]
    assert report["unsupported_fars"] == [1e-3, 1e-4]
    # the numbers are those of the individual protocols on the same pairs
    i, j, is_same = make_verification_pairs(labels, 300, 500, seed=1)
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = np.sum(x[i] * x[j], axis=1)
    assert report["accuracy"] == pytest.approx(verification_accuracy(scores, is_same))
    assert report["auroc"] == pytest.approx(roc_auc_score(is_same, scores))
    assert report["tar_at_far"]["0.01"] == tar_at_far(scores, is_same, 0.01)
    assert 0.5 < report["accuracy"] < 1.0
    assert json.loads(json.dumps(report)) == report
    # explicit pairs give the same report
    assert verification_report(torch.tensor(embeddings), labels, pairs=(i, j, is_same)) == report
