"""1:N identification metrics: open-set TPIR@FPIR (NIST FRVT 1:N, Grother, Ngan & Hanaoka, NISTIR
8238/8271) and closed-set rank-1.

Protocol:
- Gallery: one template per enrolled identity. Gallery rows are L2-normalised; when several rows
  share an identity id they are averaged and the mean is re-normalised into one template.
- Probes (L2-normalised) are searched against all templates with cosine similarity. A probe whose
  identity is enrolled is *mated*; any other probe is *non-mated*.
- The mate's rank is 1 + the number of other templates scoring at least as high as the mate
  (ties are counted against the probe: the pessimistic convention).
- FPIR(t) = fraction of non-mated searches whose top score is ``>= t``.
- TPIR(t, R) = fraction of mated searches whose mate is within rank ``R`` and scores ``>= t``.
- TPIR@FPIR uses the smallest threshold with FPIR ``<= target`` (no interpolation): with ``k``
  the largest number of non-mated searches allowed above threshold and ``τ`` the ``(k+1)``-th
  largest non-mated top score, searches with a score ``> τ`` are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from federated_core.evaluation._inputs import check_count, check_rate, to_numpy
from federated_core.evaluation.verification import max_false_accepts

_CHUNK = 4096


def _embeddings(name: str, value: Any) -> np.ndarray:
    x = to_numpy(value)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-d array [N, d], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} has {int(np.sum(norms == 0))} all-zero row(s), which have no direction")
    return x / norms


def _ids(name: str, value: Any, n: int, rows_name: str) -> np.ndarray:
    ids = to_numpy(value)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{name} must be an integer array with one id per row of {rows_name} ({n}), "
            f"got dtype {ids.dtype} shape {ids.shape}"
        )
    return ids.astype(np.int64)


def gallery_templates(gallery: Any, gallery_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """One unit-norm template per identity: the re-normalised mean of its normalised rows.

    Returns:
        ``(templates [G, d], template_ids [G])`` with ids sorted.
    """
    g = _embeddings("gallery", gallery)
    ids = _ids("gallery_ids", gallery_ids, g.shape[0], "gallery")
    unique, inverse = np.unique(ids, return_inverse=True)
    sums = np.zeros((unique.shape[0], g.shape[1]))
    np.add.at(sums, inverse, g)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = unique[norms[:, 0] == 0].tolist()
        raise ValueError(f"gallery rows of identities {bad[:5]} cancel out (their mean is zero)")
    return sums / norms, unique


@dataclass
class SearchResult:
    """Per-probe outcome of searching the gallery."""

    top_score: np.ndarray  # [P] best score over all templates
    mated: np.ndarray  # [P] bool: probe identity enrolled
    mate_score: np.ndarray  # [P] score of the mate template (nan for non-mated probes)
    mate_rank: np.ndarray  # [P] rank of the mate (0 for non-mated probes)


def search(gallery: Any, gallery_ids: Any, probes: Any, probe_ids: Any) -> SearchResult:
    """Search every probe against the gallery templates (cosine similarity)."""
    templates, template_ids = gallery_templates(gallery, gallery_ids)
    p = _embeddings("probes", probes)
    if p.shape[1] != templates.shape[1]:
        raise ValueError(f"probes must have d={templates.shape[1]} columns like gallery, got {p.shape[1]}")
    pids = _ids("probe_ids", probe_ids, p.shape[0], "probes")
    position = np.searchsorted(template_ids, pids)
    position = np.minimum(position, template_ids.shape[0] - 1)
    mated = template_ids[position] == pids
    top = np.empty(p.shape[0])
    mate_score = np.full(p.shape[0], np.nan)
    mate_rank = np.zeros(p.shape[0], dtype=np.int64)
    for start in range(0, p.shape[0], _CHUNK):
        rows = slice(start, start + _CHUNK)
        scores = p[rows] @ templates.T
        top[rows] = scores.max(axis=1)
        m = mated[rows]
        if np.any(m):
            index = np.arange(start, start + scores.shape[0])[m]
            mate = scores[m, position[index]]
            mate_score[index] = mate
            mate_rank[index] = (scores[m] >= mate[:, None]).sum(axis=1)  # counts the mate itself
    return SearchResult(top, mated, mate_score, mate_rank)


def tpir_at_fpir(gallery: Any, gallery_ids: Any, probes: Any, probe_ids: Any, fpir: float, rank: int = 1) -> float:
    """Open-set TPIR at a target FPIR (NIST FRVT 1:N; see the module docstring for the protocol).

    Args:
        gallery: ``[G, d]`` embeddings (several rows per identity are merged into one template).
        gallery_ids: ``[G]`` identity ids.
        probes: ``[P, d]`` embeddings; ``probe_ids``: ``[P]`` ids (not enrolled -> non-mated).
        fpir: target false-positive identification rate in ``(0, 1)``.
        rank: the mate must be within this rank (``R`` of TPIR(R, t)).

    Raises:
        ValueError: no mated or no non-mated probes; ``fpir`` outside ``(0, 1)`` or below
            ``1 / num_non_mated`` (not supported by the probe count); bad shapes.
    """
    fpir = check_rate("fpir", fpir)
    rank = check_count("rank", rank, 1)
    result = search(gallery, gallery_ids, probes, probe_ids)
    num_mated = int(result.mated.sum())
    num_non_mated = int((~result.mated).sum())
    if num_mated == 0:
        raise ValueError("probe_ids must include mated probes (ids enrolled in gallery_ids), got none")
    if num_non_mated == 0:
        raise ValueError("probe_ids must include non-mated probes (ids not in gallery_ids), got none")
    if fpir < 1.0 / num_non_mated:
        raise ValueError(
            f"fpir={fpir:g} is not supported by {num_non_mated} non-mated probes: the smallest supported "
            f"target is 1/{num_non_mated} = {1.0 / num_non_mated:.3g} (use more non-mated probes)"
        )
    k = max_false_accepts(num_non_mated, fpir)
    non_mated_desc = np.sort(result.top_score[~result.mated])[::-1]
    tau = non_mated_desc[k] if k < num_non_mated else -np.inf
    hit = (result.mate_rank[result.mated] <= rank) & (result.mate_score[result.mated] > tau)
    return float(hit.mean())


def rank1(gallery: Any, gallery_ids: Any, probes: Any, probe_ids: Any) -> float:
    """Closed-set rank-1 identification rate over the mated probes (non-mated probes ignored).

    A probe counts as identified when its mate template scores strictly higher than every other
    template (ties count as misses, the pessimistic convention of `search`).
    """
    result = search(gallery, gallery_ids, probes, probe_ids)
    if not result.mated.any():
        raise ValueError("probe_ids must include mated probes (ids enrolled in gallery_ids), got none")
    return float(np.mean(result.mate_rank[result.mated] == 1))
