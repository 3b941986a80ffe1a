"""`verification_report`: the 1:1 verification numbers of a set of embeddings in one dict."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from federated_core.evaluation._inputs import scores_and_labels, to_numpy
from federated_core.evaluation.pairs import make_verification_pairs
from federated_core.evaluation.verification import (
    auroc,
    supported_fars,
    tar_at_far,
    verification_accuracy,
)

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def far_key(far: float) -> str:
    """The key of a FAR target in ``report["tar_at_far"]`` (``"0.001"``, ``"0.0001"``, ...)."""
    return repr(float(far))


def pair_scores(embeddings: Any, i: Any, j: Any) -> np.ndarray:
    """Cosine similarity of the rows ``i`` and ``j`` of ``embeddings`` (normalised inside)."""
    x = to_numpy(embeddings)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"embeddings must be a 2-d float array [N, d], got dtype {x.dtype} shape {x.shape}")
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("embeddings must be finite with no all-zero rows")
    x = x / norms
    i, j = to_numpy(i).astype(np.int64), to_numpy(j).astype(np.int64)
    if i.shape != j.shape or i.ndim != 1:
        raise ValueError(f"pair indices i and j must be 1-d of equal length, got shapes {i.shape} and {j.shape}")
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= x.shape[0]):
        raise ValueError(f"pair indices must be in [0, {x.shape[0] - 1}]")
    return np.einsum("nd,nd->n", x[i], x[j])


def verification_report(
    embeddings: Any,
    labels: Any,
    pairs: tuple[Any, Any, Any] | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
    seed: int = 0,
    num_genuine: int = 3000,
    num_impostor: int = 3000,
    folds: int = 10,
) -> dict[str, Any]:
    """1:1 verification of ``embeddings`` (cosine similarity) on genuine / impostor pairs.

    Args:
        embeddings: ``[N, d]`` (normalised inside).
        labels: ``[N]`` identity ids (used to draw pairs when ``pairs`` is None).
        pairs: optional ``(i, j, is_same)``; otherwise `make_verification_pairs(labels,
            num_genuine, num_impostor, seed)`.
        fars: FAR targets; those the impostor count cannot support (`supported_fars`) are
            listed under ``"unsupported_fars"`` instead of reported.
        folds: folds of the LFW accuracy protocol (`verification_accuracy`).

    Returns:
        A JSON-ready dict: ``accuracy`` and ``accuracy_std`` (10-fold LFW protocol), ``auroc``,
        ``tar_at_far`` (``{far_key(far): tar}`` for the supported targets, keys like ``"0.001"``
        so that the dict is the same before and after a JSON round trip), ``unsupported_fars``,
        ``num_genuine``, ``num_impostor``.
    """
    if pairs is None:
        i, j, is_same = make_verification_pairs(labels, num_genuine, num_impostor, seed)
    else:
        if len(pairs) != 3:
            raise ValueError(f"pairs must be a tuple (i, j, is_same), got {len(pairs)} items")
        i, j, is_same = (to_numpy(p) for p in pairs)
    scores, is_same = scores_and_labels(pair_scores(embeddings, i, j), is_same)
    accuracy, accuracy_std = verification_accuracy(scores, is_same, folds=folds, return_std=True)
    num_impostor_pairs = int((~is_same).sum())
    fars = [float(f) for f in fars]
    supported = supported_fars(num_impostor_pairs, fars)
    return {
        "accuracy": accuracy,
        "accuracy_std": accuracy_std,
        "auroc": auroc(scores, is_same),
        "tar_at_far": {far_key(far): tar_at_far(scores, is_same, far) for far in supported},
        "unsupported_fars": [far for far in fars if far not in supported],
        "num_genuine": int(is_same.sum()),
        "num_impostor": num_impostor_pairs,
    }
