"""Identity-disjoint splits and client partitions: coverage, disjointness, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federated_core.data.faceset import FaceSet
from federated_core.data.split import (
    partition_balanced,
    partition_by_group,
    partition_lognormal,
    partition_one_identity,
    split_identities,
    split_images_per_identity,
)

POOL = torch.arange(1000, 1900)  # non-zero-based ids: nothing may assume ids are 0..n-1


def _assert_partition(parts: list[torch.Tensor], pool: torch.Tensor) -> None:
    """Every identity of the pool in exactly one part."""
    allids = torch.cat(parts)
    assert allids.dtype == torch.int64
    assert allids.numel() == pool.numel()
    assert torch.equal(torch.sort(allids).values, torch.sort(pool).values)


def test_split_identities_sizes_disjoint_deterministic() -> None:
    sizes = {"public": 300, "clients": 400, "test": 200}
    parts = split_identities(POOL, sizes, seed=3)
    assert list(parts) == ["public", "clients", "test"]
    assert {k: v.numel() for k, v in parts.items()} == sizes
    _assert_partition(list(parts.values()), POOL)  # 900 of 900 used
    again = split_identities(POOL.tolist(), sizes, seed=3)  # list input, same seed -> same split
    assert all(torch.equal(parts[k], again[k]) for k in sizes)
    other = split_identities(POOL, sizes, seed=4)
    assert not torch.equal(parts["test"], other["test"])
    # A smaller request leaves identities unused but keeps parts disjoint.
    small = split_identities(POOL, {"a": 10, "b": 0, "c": 5}, seed=0)
    assert small["b"].numel() == 0
    assert not set(small["a"].tolist()) & set(small["c"].tolist())
    # A numpy Generator is accepted and advanced (two calls differ).
    rng = np.random.default_rng(0)
    first, second = split_identities(POOL, {"x": 50}, rng), split_identities(POOL, {"x": 50}, rng)
    assert not torch.equal(first["x"], second["x"])


def test_split_identities_errors() -> None:
    with pytest.raises(ValueError, match=r"sum to 901 identities but the pool has only 900"):
        split_identities(POOL, {"public": 301, "clients": 400, "test": 200}, seed=0)
    with pytest.raises(ValueError, match=r"negative entries: \{'clients': -1, 'test': -5\}"):
        split_identities(POOL, {"public": 3, "clients": -1, "test": -5}, seed=0)
    with pytest.raises(ValueError, match=r"repeated: \[7\]"):
        split_identities([1, 7, 7], {"a": 1}, seed=0)
    with pytest.raises(ValueError, match="seed"):
        split_identities(POOL, {"a": 1}, seed=-1)
    with pytest.raises(ValueError, match="non-int"):
        split_identities(POOL, {"a": 1.5}, seed=0)  # type: ignore[dict-item]


@pytest.mark.parametrize("num_clients", [1, 7, 40, 900])
def test_partition_balanced(num_clients: int) -> None:
    parts = partition_balanced(POOL, num_clients, seed=1)
    assert len(parts) == num_clients
    _assert_partition(parts, POOL)
    sizes = [p.numel() for p in parts]
    assert max(sizes) - min(sizes) <= 1
    again = partition_balanced(POOL, num_clients, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))


def test_partition_balanced_errors() -> None:
    with pytest.raises(ValueError, match=r"num_clients=901 exceeds the 900 identities"):
        partition_balanced(POOL, 901, seed=0)
    with pytest.raises(ValueError, match="num_clients must be an int >= 1, got 0"):
        partition_balanced(POOL, 0, seed=0)


def test_partition_lognormal_unbalanced_and_exact() -> None:
    k = 30
    balanced = [p.numel() for p in partition_balanced(POOL, k, seed=0)]
    for seed in range(5):
        parts = partition_lognormal(POOL, k, seed=seed, sigma=1.0)
        assert len(parts) == k
        _assert_partition(parts, POOL)
        sizes = np.array([p.numel() for p in parts])
        assert sizes.min() >= 1 and sizes.sum() == POOL.numel()
        assert sizes.max() / sizes.min() > 2 * max(balanced) / min(balanced)
    again = partition_lognormal(POOL, k, seed=4, sigma=1.0)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    # sigma = 0: all weights equal -> balanced sizes.
    flat = [p.numel() for p in partition_lognormal(POOL, k, seed=0, sigma=0.0)]
    assert max(flat) - min(flat) <= 1


def test_partition_lognormal_sizes_follow_the_lognormal_law() -> None:
    """With many identities per client, ln(size) - mean is ~N(0, sigma^2) (FedGC's ln X ~ N(0,1))."""
    k, n, sigma = 400, 400_000, 0.8
    parts = partition_lognormal(np.arange(n), k, seed=11, sigma=sigma)
    log_sizes = np.log([p.numel() for p in parts])
    # Standard error of a sample std is sigma / sqrt(2(k-1)) ~ 0.028; allow 4 of them.
    assert abs(log_sizes.std(ddof=1) - sigma) < 4 * sigma / np.sqrt(2 * (k - 1))
    # Same draw as the library (one standard normal per client from the seeded generator):
    z = np.random.default_rng(11).standard_normal(k)
    weights = np.exp(sigma * z)
    expected = 1 + (n - k) * weights / weights.sum()
    sizes = np.array([p.numel() for p in parts])
    assert np.abs(sizes - expected).max() < 1.0  # largest-remainder rounding moves < 1 identity


def test_partition_lognormal_errors() -> None:
    with pytest.raises(ValueError, match=r"num_clients=5 exceeds the 4 identities"):
        partition_lognormal([1, 2, 3, 4], 5, seed=0)
    with pytest.raises(ValueError, match="sigma must be a finite float >= 0"):
        partition_lognormal(POOL, 3, seed=0, sigma=-0.5)
    with pytest.raises(ValueError, match="sigma"):
        partition_lognormal(POOL, 3, seed=0, sigma=float("nan"))
    # Exactly as many clients as identities: one each.
    assert [p.numel() for p in partition_lognormal([5, 6, 7], 3, seed=0)] == [1, 1, 1]


def test_partition_one_identity_scales() -> None:
    ids = torch.arange(5000, 6500)
    parts = partition_one_identity(ids)
    assert len(parts) == 1500
    assert all(p.shape == (1,) for p in parts[:5])
    assert [int(p) for p in parts[:3]] == [5000, 5001, 5002]
    _assert_partition(parts, ids)
    with pytest.raises(ValueError, match="repeated"):
        partition_one_identity([3, 3])


def test_partition_by_group() -> None:
    ids = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    groups = torch.tensor([2, 0, 2, 1, 0, 3, 1])
    parts = partition_by_group(ids, groups)
    assert [p.tolist() for p in parts] == [[11, 14], [13, 16], [10, 12], [15]]
    with pytest.raises(ValueError, match="one group id per identity"):
        partition_by_group(ids, groups[:3])


def _faceset(counts: dict[int, int]) -> FaceSet:
    labels = torch.tensor([i for i, c in counts.items() for _ in range(c)], dtype=torch.int64)
    # Each image's pixels encode its row so rows can be traced through the split.
    images = torch.arange(labels.numel(), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone()
    return FaceSet(images=images, labels=labels, groups=labels % 2, names={i: f"id{i}" for i in counts})


def test_split_images_per_identity_fraction_and_count() -> None:
    fs = _faceset({3: 10, 8: 5, 9: 2})
    train, test = split_images_per_identity(fs, train_fraction=0.6, seed=0)
    # round(0.6 n), halves up: 10 -> 6, 5 -> 3, 2 -> 1.
    assert [(train.labels == i).sum().item() for i in (3, 8, 9)] == [6, 3, 1]
    assert [(test.labels == i).sum().item() for i in (3, 8, 9)] == [4, 2, 1]
    rows = torch.cat([train.images[:, 0, 0, 0], test.images[:, 0, 0, 0]]).sort().values
    assert torch.equal(rows, torch.arange(len(fs), dtype=torch.uint8))  # every image exactly once
    assert torch.equal(train.groups, train.labels % 2) and train.names == fs.names
    again, _ = split_images_per_identity(fs, train_fraction=0.6, seed=0)
    assert torch.equal(again.images, train.images)
    other, _ = split_images_per_identity(fs, train_fraction=0.6, seed=1)
    assert not torch.equal(other.images, train.images)

    train_c, test_c = split_images_per_identity(fs, train_count=1, seed=0)
    assert [(train_c.labels == i).sum().item() for i in (3, 8, 9)] == [1, 1, 1]
    assert len(test_c) == len(fs) - 3


def test_split_images_per_identity_is_uniform_within_identity() -> None:
    """Each image of an identity lands in train with probability 60/100 (FedFR's split)."""
    fs = _faceset({0: 100})
    hits = np.zeros(100)
    trials = 300
    rng = np.random.default_rng(0)
    for _ in range(trials):
        train, _ = split_images_per_identity(fs, train_count=60, seed=rng)
        hits[train.images[:, 0, 0, 0].numpy()] += 1
    freq = hits / trials
    # Binomial(300, 0.6): std of a frequency ~ 0.028; the mean over 100 images is exactly 0.6.
    assert abs(freq.mean() - 0.6) < 1e-12
    assert np.abs(freq - 0.6).max() < 5 * np.sqrt(0.6 * 0.4 / trials)


def test_split_images_per_identity_errors() -> None:
    fs = _faceset({1: 4, 2: 1, 5: 3})
    with pytest.raises(ValueError, match=r"1 identities cannot keep .* id2 \(1 images -> 1 train\)"):
        split_images_per_identity(fs, train_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=r"id2 \(1 images -> 3 train\), id5 \(3 images -> 3 train\)"):
        split_images_per_identity(fs, train_count=3, seed=0)
    with pytest.raises(ValueError, match="exactly one of train_fraction or train_count"):
        split_images_per_identity(fs, seed=0)
    with pytest.raises(ValueError, match="exactly one"):
        split_images_per_identity(fs, train_fraction=0.5, train_count=2, seed=0)
    with pytest.raises(ValueError, match=r"train_fraction must be a float in \(0, 1\), got 1.0"):
        split_images_per_identity(fs, train_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="train_count must be an int >= 1, got 0"):
        split_images_per_identity(fs, train_count=0, seed=0)
