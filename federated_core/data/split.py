"""Identity-disjoint splits and client partitions.

Every federated face-recognition protocol here is open-set: the identities used to pre-train
phi0 ("public"), the identities held by clients and the test identities are disjoint, and the
clients' identities are disjoint from each other (each person lives on one device). The
functions below work on identity ids (not images), return sorted ``LongTensor`` s of ids, and take
a ``seed`` (an int, or a ``numpy.random.Generator`` that is advanced) for every random choice.

Partitions used by the papers:

- balanced: every client holds the same number of identities (+-1) -- FedGC, FedFR (40 clients x
  100 ids), FedFS;
- log-normal: client sizes proportional to ``X`` with ``ln X ~ N(0, sigma^2)`` -- FedGC's
  unbalanced partition ("ln X ~ N(0, 1)", section "Balanced v.s. Unbalanced Partition");
- one identity per client -- a phone holding its owner's face (FedFace, PrivacyFace's
  1-class-per-client analysis);
- one population group per client -- PrivacyFace's four BUPT-Balancedface clients;
- per-identity image split -- FedFR's 60 training / 40 personalised-evaluation images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from federated_core.data.faceset import FaceSet

__all__ = [
    "split_identities",
    "partition_balanced",
    "partition_lognormal",
    "lognormal_client_sizes",
    "partition_one_identity",
    "partition_by_group",
    "split_images_per_identity",
]

IdentityLike = torch.Tensor | np.ndarray | Sequence[int]
SeedLike = int | np.random.Generator


def _rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or a numpy.random.Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _as_ids(identities: IdentityLike, name: str = "identities") -> np.ndarray:
    """1-d int64 numpy array of unique identity ids (order kept)."""
    if isinstance(identities, torch.Tensor):
        arr = identities.detach().cpu().numpy()
    else:
        arr = np.asarray(identities)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d sequence of identity ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer identity ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise ValueError(
            f"{name} must not repeat an id (each identity goes to exactly one part); repeated: "
            f"{dup[:10].tolist()}{' ...' if dup.size > 10 else ''}"
        )
    return arr


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _to_tensor(ids: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.sort(ids).astype(np.int64))


def split_identities(identities: IdentityLike, sizes: Mapping[str, int], seed: SeedLike) -> dict[str, torch.Tensor]:
    """Split a pool of identities into named disjoint parts of the given sizes, at random.

    Example: ``split_identities(range(1000), {"public": 300, "clients": 400, "test": 200}, seed=0)``;
    identities not requested (here 100) are left out. Each part is a sorted LongTensor of ids.

    Raises:
        ValueError: negative sizes (all named), sizes summing to more than the pool, repeated ids.
    """
    ids = _as_ids(identities)
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError(f"sizes must be a non-empty dict part name -> number of identities, got {sizes!r}")
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer))}
    if bad:
        raise ValueError(f"sizes must be ints; non-int entries: {bad}")
    negative = {k: int(v) for k, v in sizes.items() if v < 0}
    if negative:
        raise ValueError(f"sizes must be >= 0; negative entries: {negative}")
    total = int(sum(int(v) for v in sizes.values()))
    if total > ids.size:
        raise ValueError(
            f"sizes {dict(sizes)} sum to {total} identities but the pool has only {ids.size}; "
            f"allowed: a total <= {ids.size}"
        )
    order = _rng(seed).permutation(ids.size)
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name, size in sizes.items():
        out[name] = _to_tensor(ids[order[start : start + int(size)]])
        start += int(size)
    return out


def _cut(ids: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> list[torch.Tensor]:
    shuffled = ids[rng.permutation(ids.size)]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [_to_tensor(shuffled[bounds[k] : bounds[k + 1]]) for k in range(sizes.size)]


def partition_balanced(identities: IdentityLike, num_clients: int, seed: SeedLike) -> list[torch.Tensor]:
    """Random partition into ``num_clients`` parts whose sizes differ by at most one.

    Raises:
        ValueError: ``num_clients`` < 1 or more clients than identities (a client would be empty).
    """
    ids = _as_ids(identities)
    k = _check_count(num_clients, "num_clients", 1)
    if k > ids.size:
        raise ValueError(f"num_clients={k} exceeds the {ids.size} identities; allowed: 1 <= num_clients <= {ids.size}")
    sizes = np.full(k, ids.size // k, dtype=np.int64)
    sizes[: ids.size % k] += 1
    return _cut(ids, sizes, _rng(seed))


def lognormal_client_sizes(num_identities: int, num_clients: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Client sizes for :func:`partition_lognormal`: one identity each, the other
    ``num_identities - num_clients`` apportioned proportionally to ``X_k = exp(sigma * Z_k)``,
    ``Z_k ~ N(0, 1)`` (FedGC's ``ln X ~ N(0, 1)`` for sigma = 1) by the largest-remainder rule.
    The sizes sum to ``num_identities`` exactly."""
    weights = np.exp(sigma * rng.standard_normal(num_clients))
    spare = num_identities - num_clients
    quota = spare * weights / weights.sum()
    extra = np.floor(quota).astype(np.int64)
    left = spare - int(extra.sum())
    if left > 0:  # hand the remaining identities to the largest fractional parts
        extra[np.argsort(-(quota - extra), kind="stable")[:left]] += 1
    return 1 + extra


def partition_lognormal(
    identities: IdentityLike, num_clients: int, seed: SeedLike, sigma: float = 1.0
) -> list[torch.Tensor]:
    """Unbalanced random partition: client ``k`` holds about ``n * X_k / sum(X)`` identities with
    ``ln X_k ~ N(0, sigma^2)`` (FedGC, unbalanced partition), and at least one identity.

    ``sigma = 0`` gives a balanced partition. See :func:`lognormal_client_sizes` for the rounding.

    Raises:
        ValueError: ``num_clients`` < 1 or > the number of identities; ``sigma`` negative or not
            finite.
    """
    ids = _as_ids(identities)
    k = _check_count(num_clients, "num_clients", 1)
    if k > ids.size:
        raise ValueError(
            f"num_clients={k} exceeds the {ids.size} identities (every client needs >= 1); "
            f"allowed: 1 <= num_clients <= {ids.size}"
        )
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, (int, float, np.floating, np.integer))
        or not (np.isfinite(sigma) and sigma >= 0)
    ):
        raise ValueError(f"sigma must be a finite float >= 0 (std of ln X), got {sigma!r}")
    rng = _rng(seed)
    sizes = lognormal_client_sizes(ids.size, k, rng, float(sigma))
    return _cut(ids, sizes, rng)


def partition_one_identity(identities: IdentityLike) -> list[torch.Tensor]:
    """One client per identity, in the given order (no randomness); each part is a 1-element
    LongTensor (views of one storage, so 100k clients cost one array)."""
    ids = torch.from_numpy(_as_ids(identities).copy())
    return list(ids.view(-1, 1).unbind(0))


def partition_by_group(identities: IdentityLike, groups: IdentityLike) -> list[torch.Tensor]:
    """One client per population group (PrivacyFace: four BUPT-Balancedface groups, four
    clients). ``groups[i]`` is the group of ``identities[i]``; clients are in increasing group id.

    Raises:
        ValueError: ``groups`` is not one id per identity.
    """
    ids = _as_ids(identities)
    grp = groups.detach().cpu().numpy() if isinstance(groups, torch.Tensor) else np.asarray(groups)
    if grp.shape != ids.shape:
        raise ValueError(f"groups must give one group id per identity (shape {ids.shape}), got shape {grp.shape}")
    if grp.size and not np.issubdtype(grp.dtype, np.integer):
        raise ValueError(f"groups must hold integer group ids, got dtype {grp.dtype}")
    return [_to_tensor(ids[grp == g]) for g in np.unique(grp)]


def split_images_per_identity(
    faceset: FaceSet,
    train_fraction: float | None = None,
    train_count: int | None = None,
    seed: SeedLike = 0,
) -> tuple[FaceSet, FaceSet]:
    """Split every identity's images at random into a train and a test part (FedFR: 60 of 100
    images for local training, 40 for personalised evaluation).

    Give exactly one of ``train_fraction`` (``0 < f < 1``; ``round(f * n)`` train images of an
    identity with ``n``, halves rounded up) or ``train_count`` (``>= 1``). Every identity must keep
    at least one image on each side. Image order within each part follows ``faceset``.

    Raises:
        ValueError: both or neither of the two given, values out of range, or identities that
            would end up with no train or no test image (named with their image counts).
    """
    if (train_fraction is None) == (train_count is None):
        raise ValueError(
            f"give exactly one of train_fraction or train_count, got train_fraction={train_fraction!r}, "
            f"train_count={train_count!r}"
        )
    if len(faceset) == 0:
        raise ValueError("faceset is empty; split_images_per_identity needs at least one identity")
    labels = faceset.labels.cpu().numpy()
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if train_fraction is not None:
        if (
            isinstance(train_fraction, bool)
            or not isinstance(train_fraction, (int, float, np.floating))
            or not (0.0 < float(train_fraction) < 1.0)
        ):
            raise ValueError(f"train_fraction must be a float in (0, 1), got {train_fraction!r}")
        n_train = np.floor(float(train_fraction) * counts + 0.5).astype(np.int64)
        rule = f"train_fraction={train_fraction}"
    else:
        n_train = np.full(uniq.size, _check_count(train_count, "train_count", 1), dtype=np.int64)
        rule = f"train_count={train_count}"
    bad = (n_train < 1) | (n_train > counts - 1)
    if bad.any():
        listed = ", ".join(
            f"{faceset.names.get(int(i), int(i))} ({int(c)} images -> {int(t)} train)"
            for i, c, t in zip(uniq[bad][:20], counts[bad][:20], n_train[bad][:20])
        )
        raise ValueError(
            f"{int(bad.sum())} identities cannot keep >= 1 train and >= 1 test image with {rule}: {listed}"
            f"{' ...' if bad.sum() > 20 else ''}"
        )
    rng = _rng(seed)
    # Random order inside every identity: shuffle all rows, then stable-sort by identity.
    perm = rng.permutation(labels.size)
    order = perm[np.argsort(inverse[perm], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(labels.size, dtype=np.int64)
    rank[order] = np.arange(labels.size) - np.repeat(starts, counts)
    is_train = rank < n_train[inverse]
    train_rows = torch.from_numpy(np.flatnonzero(is_train))
    test_rows = torch.from_numpy(np.flatnonzero(~is_train))
    return faceset.subset(train_rows), faceset.subset(test_rows)
