"""Intervals for 1:1 verification numbers, over the unit that is independent: the test identity.

Pairs are not independent samples: one identity's images appear in many genuine and impostor
pairs, so resampling pairs gives intervals that are too narrow. The cluster bootstrap here
resamples *identities* with replacement (Field & Welsh 2007, "Bootstrapping clustered data"): an
identity drawn ``m`` times contributes each of its genuine pairs ``m`` times, and an impostor pair
between identities drawn ``m_a`` and ``m_b`` times counts ``m_a · m_b`` times. Each replicate
recomputes the metric on the reweighted pairs; the interval is the percentile interval of the
replicates. A replicate without a genuine pair, or with too few impostor pairs for a FAR target,
is skipped for that metric and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from federated_core.evaluation._inputs import check_count, scores_and_labels, to_numpy
from federated_core.evaluation.verification import auroc, tar_at_far

DEFAULT_REPLICATES = 200


def _metric_names(fars: Sequence[float]) -> list[str]:
    return ["auroc"] + [f"tar@far={float(far):g}" for far in fars]


def _replicate(scores: np.ndarray, is_same: np.ndarray, weights: np.ndarray, fars: Sequence[float]) -> dict[str, float]:
    """The metrics on the pairs repeated ``weights`` times (NaN where a metric is undefined)."""
    keep = weights > 0
    s = np.repeat(scores[keep], weights[keep])
    y = np.repeat(is_same[keep], weights[keep])
    n_genuine, n_impostor = int(y.sum()), int((~y).sum())
    out = {name: float("nan") for name in _metric_names(fars)}
    if n_genuine == 0 or n_impostor == 0:
        return out
    out["auroc"] = auroc(s, y)
    for far in fars:
        if far >= 1.0 / n_impostor:
            out[f"tar@far={float(far):g}"] = tar_at_far(s, y, far)
    return out


def identity_bootstrap(
    scores: Any,
    is_same: Any,
    identity_a: Any,
    identity_b: Any,
    fars: Sequence[float] = (),
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile intervals of AUROC and TAR@FAR (for each of ``fars``) under the identity cluster
    bootstrap (module docstring). ``identity_a[k]`` / ``identity_b[k]``: the identities of pair
    ``k``'s two images.

    Returns:
        ``{"unit": "test identity", "replicates": R, "confidence": c, "identities": I,
        "intervals": {metric: [low, high]}, "skipped": {metric: replicates without a value}}``.
    """
    s, y = scores_and_labels(scores, is_same)
    a, b = to_numpy(identity_a).astype(np.int64), to_numpy(identity_b).astype(np.int64)
    if a.shape != s.shape or b.shape != s.shape:
        raise ValueError(
            f"identity_a and identity_b must have one entry per pair ({s.shape[0]}), got {a.shape}, {b.shape}"
        )
    if np.any((a == b) != y):
        raise ValueError("is_same must be exactly the pairs whose two identities are equal")
    replicates = check_count("replicates", replicates, 1)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    ids, index_a = np.unique(np.r_[a, b], return_inverse=True)
    index_b = index_a[s.shape[0] :]
    index_a = index_a[: s.shape[0]]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in _metric_names(fars)}
    for _ in range(replicates):
        counts = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
        weights = np.where(y, counts[index_a], counts[index_a] * counts[index_b])
        for name, value in _replicate(s, y, weights, fars).items():
            draws[name].append(value)
    tail = (1 - confidence) / 2 * 100
    intervals, skipped = {}, {}
    for name, values in draws.items():
        finite = np.asarray([v for v in values if np.isfinite(v)])
        skipped[name] = replicates - len(finite)
        if len(finite):
            intervals[name] = [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]
    return {
        "unit": "test identity",
        "replicates": replicates,
        "confidence": confidence,
        "identities": int(len(ids)),
        "intervals": intervals,
        "skipped": skipped,
    }
