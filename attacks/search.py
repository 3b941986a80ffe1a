"""Blocked cosine nearest-neighbour search with torch matrix products.

Galleries of 100k × 512 (and far larger) are searched block by block: never an ``[N, N]`` or a full
``[Q, G]`` matrix in memory, only ``[query_block, gallery_block]`` tiles, with a running top-k
merged across gallery blocks. The same code runs on CPU and CUDA (``device``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["topk_cosine", "identity_index", "identity_scores_blocks"]


def _check_pair(queries: torch.Tensor, gallery: torch.Tensor) -> None:
    if queries.dim() != 2 or gallery.dim() != 2:
        raise ValueError(
            f"queries and gallery must be 2-d [N, d], got shapes {tuple(queries.shape)} and {tuple(gallery.shape)}"
        )
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"dimension mismatch: queries have d={queries.shape[1]}, gallery has d={gallery.shape[1]}")
    if queries.shape[0] == 0:
        raise ValueError("queries are empty (0 rows)")
    if gallery.shape[0] == 0:
        raise ValueError("gallery is empty (0 rows)")


# Normalised gallery blocks are kept on the device when they fit in this many bytes; larger
# galleries are normalised block by block for every query block instead.
_CACHE_BYTES = 2 * 1024**3


def _normalised(gallery: torch.Tensor, start: int, block: int, device: torch.device) -> torch.Tensor:
    return F.normalize(gallery[start : start + block].to(device).float(), dim=1)


def _normalised_blocks(gallery: torch.Tensor, block: int, device: torch.device) -> list[torch.Tensor] | None:
    if gallery.shape[0] * gallery.shape[1] * 4 > _CACHE_BYTES:
        return None
    return [_normalised(gallery, s, block, device) for s in range(0, gallery.shape[0], block)]


def topk_cosine(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int = 1,
    query_block: int = 1024,
    gallery_block: int = 32768,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` gallery rows of highest cosine similarity to each query.

    Returns ``(scores [Q, k] float32, indices [Q, k] int64)`` on the CPU, best first. Both sides are
    L2-normalised here (zero rows stay zero and score 0).
    """
    _check_pair(queries, gallery)
    if not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k must be in [1, gallery size={gallery.shape[0]}], got {k}")
    if query_block < 1 or gallery_block < 1:
        raise ValueError(f"query_block and gallery_block must be >= 1, got {query_block}, {gallery_block}")
    device = torch.device(device) if device is not None else gallery.device
    q_all = F.normalize(queries.float(), dim=1)
    out_s = torch.empty(queries.shape[0], k, dtype=torch.float32)
    out_i = torch.empty(queries.shape[0], k, dtype=torch.int64)
    g_blocks = _normalised_blocks(gallery, gallery_block, device)
    bar = tqdm(total=queries.shape[0], desc="k-NN search", disable=not progress, leave=False)
    for qs in range(0, queries.shape[0], query_block):
        q = q_all[qs : qs + query_block].to(device)
        best_s = torch.full((q.shape[0], k), -float("inf"), device=device)
        best_i = torch.zeros((q.shape[0], k), dtype=torch.int64, device=device)
        for b, gs in enumerate(range(0, gallery.shape[0], gallery_block)):
            g = g_blocks[b] if g_blocks is not None else _normalised(gallery, gs, gallery_block, device)
            s = q @ g.T
            kk = min(k, s.shape[1])
            bs, bi = torch.topk(s, kk, dim=1)
            cand_s = torch.cat([best_s, bs], dim=1)
            cand_i = torch.cat([best_i, bi + gs], dim=1)
            top_s, pos = torch.topk(cand_s, k, dim=1)
            best_s, best_i = top_s, torch.gather(cand_i, 1, pos)
        out_s[qs : qs + q.shape[0]] = best_s.cpu()
        out_i[qs : qs + q.shape[0]] = best_i.cpu()
        bar.update(q.shape[0])
    bar.close()
    return out_s, out_i


def identity_index(gallery_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unique identity ids [I], column of each gallery row in that list [G])``."""
    ids = torch.as_tensor(gallery_ids, dtype=torch.int64).cpu()
    if ids.dim() != 1:
        raise ValueError(f"gallery_ids must be 1-d, got shape {tuple(ids.shape)}")
    return torch.unique(ids, return_inverse=True)


def identity_scores_blocks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    gallery_ids: torch.Tensor,
    reduce: str = "max",
    query_block: int = 256,
    gallery_block: int = 32768,
    device: str | torch.device | None = None,
    progress: bool = False,
):
    """Yield ``(query_slice, scores [q_block, I])``: each query's similarity to each gallery identity.

    ``reduce="max"``: an identity scores the best cosine over its gallery images (what a k-NN
    attacker matching single faces gets, PrivacyFace A.2.4). ``reduce="mean"``: cosine to the
    identity template (normalised mean of its normalised embeddings). Columns follow
    ``identity_index(gallery_ids)[0]``.
    """
    _check_pair(queries, gallery)
    if gallery_ids.shape[0] != gallery.shape[0]:
        raise ValueError(f"gallery_ids has {gallery_ids.shape[0]} entries for {gallery.shape[0]} gallery rows")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    device = torch.device(device) if device is not None else gallery.device
    uniq, col = identity_index(gallery_ids)
    n_ids = len(uniq)
    col = col.to(device)
    q_all = F.normalize(queries.float(), dim=1)
    g_blocks = _normalised_blocks(gallery, gallery_block, device)
    if reduce == "mean":
        templates = torch.zeros(n_ids, gallery.shape[1], device=device)
        for b, gs in enumerate(range(0, gallery.shape[0], gallery_block)):
            g = g_blocks[b] if g_blocks is not None else _normalised(gallery, gs, gallery_block, device)
            templates.index_add_(0, col[gs : gs + gallery_block], g)
        templates = F.normalize(templates, dim=1)
    bar = tqdm(total=queries.shape[0], desc="identity scores", disable=not progress, leave=False)
    for qs in range(0, queries.shape[0], query_block):
        q = q_all[qs : qs + query_block].to(device)
        if reduce == "mean":
            out = q @ templates.T
        else:
            out = torch.full((q.shape[0], n_ids), -float("inf"), device=device)
            for b, gs in enumerate(range(0, gallery.shape[0], gallery_block)):
                g = g_blocks[b] if g_blocks is not None else _normalised(gallery, gs, gallery_block, device)
                s = q @ g.T
                idx = col[gs : gs + gallery_block].unsqueeze(0).expand_as(s)
                out.scatter_reduce_(1, idx, s, reduce="amax", include_self=True)
        bar.update(q.shape[0])
        yield slice(qs, qs + q.shape[0]), out
    bar.close()
