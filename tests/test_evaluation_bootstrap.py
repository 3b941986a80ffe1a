"""Intervals over test identities (identity cluster bootstrap): a replicate equals the metric on
the pairs an explicit resampling of identities would give (scikit-learn on the duplicated pairs),
the interval is seeded and covers the full-data value, bad inputs are named."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from federated_core.evaluation import auroc, tar_at_far
from federated_core.evaluation.bootstrap import _replicate, identity_bootstrap


def _pairs(seed: int = 0, identities: int = 12, per: int = 4, genuine: float = 0.6, spread: float = 0.15):
    """Every pair of ``identities`` × ``per`` images with an identity effect in the scores."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(identities), per)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    quality = rng.normal(0, spread, identities)  # some identities are easy, some hard
    scores = np.where(same, genuine + quality[labels[i]], 0.1) + rng.normal(0, 0.1, len(i))
    return scores, same, labels[i], labels[j]


def test_a_replicate_is_the_metric_on_explicitly_resampled_identities():
    scores, same, a, b = _pairs()
    counts = np.array([2, 0, 1, 3, 0, 1, 1, 0, 2, 1, 0, 1])  # identity k drawn counts[k] times
    weights = np.where(same, counts[a], counts[a] * counts[b])
    rows_s, rows_y = [], []
    for k in range(len(scores)):  # by hand: one copy of the pair per pair of drawn copies
        copies = counts[a[k]] if same[k] else counts[a[k]] * counts[b[k]]
        rows_s += [scores[k]] * int(copies)
        rows_y += [bool(same[k])] * int(copies)
    got = _replicate(scores, same, weights, fars=(0.01,))
    assert got["auroc"] == pytest.approx(roc_auc_score(rows_y, rows_s), abs=1e-12)
    assert got["tar@far=0.01"] == tar_at_far(np.array(rows_s), np.array(rows_y), 0.01)
    ones = _replicate(scores, same, np.ones(len(scores), dtype=np.int64), fars=(0.01,))
    assert ones["auroc"] == auroc(scores, same)


def test_interval_is_seeded_and_covers_the_full_data_value():
    scores, same, a, b = _pairs()
    first = identity_bootstrap(scores, same, a, b, fars=(0.01,), replicates=300, seed=3)
    assert first == identity_bootstrap(scores, same, a, b, fars=(0.01,), replicates=300, seed=3)
    assert first["unit"] == "test identity" and first["identities"] == 12 and first["replicates"] == 300
    low, high = first["intervals"]["auroc"]
    assert low < auroc(scores, same) < high
    low, high = first["intervals"]["tar@far=0.01"]
    assert low <= tar_at_far(scores, same, 0.01) <= high and high - low > 0


def test_resampling_identities_is_wider_than_resampling_pairs():
    """Pairs of one identity share its difficulty: treating them as independent understates the
    spread. The identity bootstrap's AUROC interval is wider than a naive pair bootstrap's."""
    scores, same, a, b = _pairs(seed=1, identities=30, genuine=0.25, spread=0.2)
    cluster = identity_bootstrap(scores, same, a, b, replicates=300, seed=0)["intervals"]["auroc"]
    rng = np.random.default_rng(0)
    naive = []
    for _ in range(300):
        pick = rng.integers(0, len(scores), len(scores))
        naive.append(auroc(scores[pick], same[pick]))
    naive_width = np.percentile(naive, 97.5) - np.percentile(naive, 2.5)
    assert cluster[1] - cluster[0] > 1.5 * naive_width


def test_bad_inputs_are_named():
    scores, same, a, b = _pairs()
    with pytest.raises(ValueError, match="is_same must be exactly the pairs whose two identities are equal"):
        identity_bootstrap(scores, ~same, a, b)
    with pytest.raises(ValueError, match="one entry per pair"):
        identity_bootstrap(scores, same, a[:-1], b)
    with pytest.raises(ValueError, match="confidence must be in"):
        identity_bootstrap(scores, same, a, b, confidence=1.5)
