"""Sampling of 1:1 verification pairs from labelled images.

Genuine pairs are unordered pairs of two distinct images of the same identity, impostor pairs
two images of different identities. Each kind is drawn uniformly *without replacement* from all
such pairs (so identities with more images contribute more genuine pairs, as in any
pair-uniform protocol), by indexing the pairs directly: no rejection loop, no enumeration of all
pairs, exact for any set size.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from federated_core.evaluation._inputs import check_count, to_numpy


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _sample_pairs(
    counts: np.ndarray, partner_start: np.ndarray, num: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(a, b)`` with ``a = partner_start[b] + r``, ``0 <= r < counts[b]``, uniformly
    without replacement (positions in label-sorted order)."""
    cum_end = np.cumsum(counts)
    total = int(cum_end[-1]) if cum_end.size else 0
    chosen = np.sort(rng.choice(total, size=num, replace=False)) if num else np.zeros(0, dtype=np.int64)
    b = np.searchsorted(cum_end, chosen, side="right")
    a = partner_start[b] + (chosen - (cum_end[b] - counts[b]))
    return a, b


def make_verification_pairs(
    labels: Any, num_genuine: int, num_impostor: int, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``num_genuine`` genuine and ``num_impostor`` impostor index pairs.

    Args:
        labels: ``[N]`` integer identity label per image (numpy or torch).
        num_genuine, num_impostor: how many pairs of each kind (>= 0, not both 0).
        seed: integer seed or ``numpy.random.Generator``; the same seed gives the same pairs.

    Returns:
        ``(i, j, is_same)``: int64 index arrays into ``labels`` (``i != j``) and a bool array,
        in random order (so the contiguous folds of `verification_accuracy` mix both kinds).

    Raises:
        ValueError: more pairs requested than exist (e.g. no identity with two images, or a
            single identity and impostor pairs requested), or bad arguments.
    """
    y = to_numpy(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got dtype {y.dtype} shape {y.shape}")
    num_genuine = check_count("num_genuine", num_genuine, 0)
    num_impostor = check_count("num_impostor", num_impostor, 0)
    if num_genuine + num_impostor == 0:
        raise ValueError("num_genuine and num_impostor must not both be 0")
    rng = _rng(seed)
    order = np.argsort(y, kind="stable")
    y_sorted = y[order]
    n = y_sorted.shape[0]
    # start of each position's identity block in sorted order
    is_block_start = np.r_[True, y_sorted[1:] != y_sorted[:-1]] if n else np.zeros(0, dtype=bool)
    block_start = np.maximum.accumulate(np.where(is_block_start, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    position = np.arange(n)
    genuine_counts = position - block_start  # earlier images of the same identity
    impostor_counts = block_start  # images of all earlier identities
    total_genuine, total_impostor = int(genuine_counts.sum()), int(impostor_counts.sum())
    if num_genuine > total_genuine:
        raise ValueError(
            f"num_genuine={num_genuine} exceeds the {total_genuine} genuine pairs that exist in labels "
            f"({n} images of {int(is_block_start.sum())} identities; an identity needs >= 2 images)"
        )
    if num_impostor > total_impostor:
        raise ValueError(
            f"num_impostor={num_impostor} exceeds the {total_impostor} impostor pairs that exist in labels "
            f"({n} images of {int(is_block_start.sum())} identities)"
        )
    ga, gb = _sample_pairs(genuine_counts, block_start, num_genuine, rng) if num_genuine else (np.zeros(0, int),) * 2
    ia, ib = (
        _sample_pairs(impostor_counts, np.zeros(n, dtype=np.int64), num_impostor, rng)
        if num_impostor
        else (np.zeros(0, int),) * 2
    )
    i = order[np.r_[ga, ia].astype(np.int64)]
    j = order[np.r_[gb, ib].astype(np.int64)]
    is_same = np.r_[np.ones(num_genuine, dtype=bool), np.zeros(num_impostor, dtype=bool)]
    shuffle = rng.permutation(i.shape[0])
    return i[shuffle].astype(np.int64), j[shuffle].astype(np.int64), is_same[shuffle]
