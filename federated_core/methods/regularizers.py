"""Server-side regularisers on the stacked class embeddings of all clients.

Rows of ``W [C, d]`` are class embeddings; ``owners [C]`` the client of each row. A boolean
``negatives [C, C]`` says which rows act as negatives of which (``negatives[q, c]``: row ``c`` is
a negative for query row ``q``); `cross_client_mask` gives FedGC's "cross-client negatives only".

* `softmax_regularizer` — FedGC Eq. 5: ``Reg(W) = Σ_q −log e^{W_q·W'_q} / (e^{W_q·W'_q} +
  Σ_{c ∈ neg(q)} e^{W_c·W'_q})`` with ``W'`` a stop-gradient copy. Its gradient is the closed form
  of Eq. 11 for a negative, ``∂/∂W_c = Σ_q p_{q→c} W_q``, and ``(p_{q→q} − 1) W_q`` for the
  positive. ``form="dot"`` uses raw dot products as Eq. 5 does; ``form="scaled-cosine"`` is the
  "minor modification" of FedGC's Remark for CosFace/ArcFace training: ``s·cos`` logits, the
  positive shifted by the head's margin at angle 0 (CosFace ``s·(cos − m)``, ArcFace
  ``s·(cos − (1 − cos m))``), a constant because ``cos(W_q, W'_q) = 1``.
* `cosine_regularizer` — FedGC's Remark ("FedCos", Table 4): ``Σ_q Σ_{c ∈ neg(q)} W_c·W'_q``
  (gradient ``∂/∂W_c = Σ_q W_q``, the Remark's closed form), or ``s·cos`` with
  ``form="scaled-cosine"``.
* `spreadout_distance` — the spreadout regulariser of Yu et al. 2020 (FedAwS, as FedFace uses
  it): ``Σ_{(a,b)} max(0, ν − ‖ŵ_a − ŵ_b‖)²`` over ordered pairs of normalised rows.
* `spreadout_cosine` — FedFace's public code form: ``mean_{(a,b)} max(0, cos(w_a, w_b) − τ)²``.

`server_gradient_step` applies ``W ← W − lr·∇(weight·Reg)``, as FedGC Alg. 1 line 14
(``lr·weight = λη``) and FedAwS do. `merge_shared_identities` implements § "Extend FedGC to More
General Case": rows of one identity held by several clients are averaged and regularised only
against classes of clients outside that group.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

REGULARIZER_FORMS = ("dot", "scaled-cosine")
MARGIN_KINDS = ("softmax", "cosface", "arcface")


def _check_w(w: torch.Tensor, negatives: torch.Tensor | None = None) -> None:
    if w.dim() != 2:
        raise ValueError(f"W must be a 2-d tensor [C, d], got shape {tuple(w.shape)}")
    if negatives is not None and negatives.shape != (w.shape[0], w.shape[0]):
        raise ValueError(
            f"negatives must be a boolean [C, C] = [{w.shape[0]}, {w.shape[0]}] mask, got {tuple(negatives.shape)}"
        )


def cross_client_mask(owners: torch.Tensor) -> torch.Tensor:
    """``mask[q, c] = owners[q] != owners[c]``: only other clients' rows are negatives (Eq. 5)."""
    if owners.dim() != 1:
        raise ValueError(f"owners must be a 1-d tensor [C], got shape {tuple(owners.shape)}")
    return owners[:, None] != owners[None, :]


def _logits(w: torch.Tensor, form: str, s: float) -> torch.Tensor:
    """``logits[q, c]`` = similarity of key row ``c`` (with gradient) to query row ``q`` (without)."""
    queries = w.detach()
    if form == "dot":
        return queries @ w.t()
    if form == "scaled-cosine":
        return s * (F.normalize(queries, dim=1) @ F.normalize(w, dim=1).t())
    raise ValueError(f"form must be one of {REGULARIZER_FORMS}, got {form!r}")


def positive_shift(kind: str, s: float, m: float) -> float:
    """The margin subtracted from the positive logit in the scaled-cosine form (angle 0)."""
    if kind == "softmax":
        return 0.0
    if kind == "cosface":
        return s * m
    if kind == "arcface":
        return s * (1.0 - math.cos(m))
    raise ValueError(f"kind must be one of {MARGIN_KINDS}, got {kind!r}")


def softmax_regularizer(
    w: torch.Tensor,
    negatives: torch.Tensor,
    form: str = "dot",
    s: float = 1.0,
    kind: str = "softmax",
    m: float = 0.0,
) -> torch.Tensor:
    """FedGC's softmax regulariser, Eq. 5 (see the module docstring). Returns a scalar: the sum
    over query rows that have at least one negative."""
    _check_w(w, negatives)
    logits = _logits(w, form, s)
    diag = torch.arange(w.shape[0], device=w.device)
    if form == "scaled-cosine":
        shift = torch.zeros_like(logits)
        shift[diag, diag] = positive_shift(kind, s, m)
        logits = logits - shift
    allowed = negatives.to(w.device).clone()
    allowed[diag, diag] = True
    masked = logits.masked_fill(~allowed, float("-inf"))
    per_query = torch.logsumexp(masked, dim=1) - logits[diag, diag]
    has_negative = negatives.any(dim=1).to(w.device)
    return (per_query * has_negative.to(per_query.dtype)).sum()


def cosine_regularizer(w: torch.Tensor, negatives: torch.Tensor, form: str = "dot", s: float = 1.0) -> torch.Tensor:
    """FedGC's cosine regulariser (Remark; "FedCos" of Table 4): ``Σ_q Σ_{c∈neg(q)} W_c·W'_q``."""
    _check_w(w, negatives)
    logits = _logits(w, form, s)
    return (logits * negatives.to(device=w.device, dtype=logits.dtype)).sum()


def spreadout_distance(w: torch.Tensor, pairs: torch.Tensor, margin: float = 0.9) -> torch.Tensor:
    """Spreadout regulariser of Yu et al. 2020 (FedAwS Eq. for reg_sp), as FedFace uses it:
    ``Σ_{(a,b): pairs[a,b]} max(0, ν − ‖ŵ_a − ŵ_b‖₂)²`` with ``ŵ`` the L2-normalised rows."""
    _check_w(w, pairs)
    if not (0.0 < margin <= 2.0):
        raise ValueError(f"margin (ν) must be in (0, 2] (distances of unit vectors), got {margin!r}")
    u = F.normalize(w, dim=1)
    sq = (2.0 - 2.0 * (u @ u.t())).clamp_min(0.0)
    pairs = pairs.to(w.device)
    # sqrt has an infinite slope at 0: only pairs closer than ν matter, and identical rows get a
    # zero distance with a zero (sub)gradient instead of NaN.
    dist = torch.sqrt(sq.masked_fill(~pairs, 1.0).clamp_min(1e-12))
    hinge = (margin - dist).clamp_min(0.0) ** 2
    return (hinge * pairs.to(hinge.dtype)).sum()


def spreadout_cosine(w: torch.Tensor, pairs: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """FedFace's public-code form: ``mean_{(a,b): pairs[a,b]} max(0, cos(w_a, w_b) − τ)²``."""
    _check_w(w, pairs)
    if not (-1.0 <= threshold < 1.0):
        raise ValueError(f"threshold (τ) must be in [-1, 1), got {threshold!r}")
    u = F.normalize(w, dim=1)
    cos = u @ u.t()
    pairs = pairs.to(w.device)
    count = pairs.sum()
    if int(count) == 0:
        return (cos * 0.0).sum()
    hinge = (cos - threshold).clamp_min(0.0) ** 2
    return (hinge * pairs.to(hinge.dtype)).sum() / count


def server_gradient_step(
    w: torch.Tensor,
    regularizer: Callable[[torch.Tensor], torch.Tensor],
    lr: float,
    weight: float = 1.0,
    steps: int = 1,
) -> tuple[torch.Tensor, list[float]]:
    """``steps`` plain gradient steps ``W ← W − lr·∇(weight·Reg(W))`` (FedGC Alg. 1 line 14 with
    ``lr·weight = λη``). Returns the new ``W`` (detached) and the regulariser value before each
    step."""
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (weight >= 0 and math.isfinite(weight)):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    current = w.detach().clone()
    values = []
    for _ in range(steps):
        var = current.clone().requires_grad_(True)
        value = regularizer(var)
        (grad,) = torch.autograd.grad(weight * value, var, allow_unused=True)
        values.append(float(value.detach()))
        if grad is not None:
            current = current - lr * grad
    return current, values


def merge_shared_identities(
    w: torch.Tensor, owners: torch.Tensor, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FedGC § "Extend FedGC to More General Case": identities shared by several clients.

    Args:
        w: ``[R, d]`` uploaded rows; ``owners [R]`` their clients; ``keys [R]`` their identity
            keys (rows of one identity at several clients share a key).

    Returns:
        ``(classes, negatives, assignment)``: ``classes [L, d]`` the average of each key's rows;
        ``negatives [L, L]`` with ``negatives[l, l']`` true iff ``l' != l`` and class ``l'`` is
        held by at least one client outside ``K_l`` (the clients holding ``l``: "only exclusive
        clients are introduced"); ``assignment [R]`` the class index of each row (to write the
        regularised classes back). With all keys distinct this is exactly Eq. 5's cross-client
        mask.
    """
    _check_w(w)
    if owners.shape != (w.shape[0],) or keys.shape != (w.shape[0],):
        raise ValueError(
            f"owners and keys must have shape [{w.shape[0]}], got {tuple(owners.shape)} and {tuple(keys.shape)}"
        )
    unique_keys, assignment = torch.unique(keys, return_inverse=True)
    num = unique_keys.shape[0]
    sums = torch.zeros(num, w.shape[1], dtype=w.dtype, device=w.device).index_add_(0, assignment.to(w.device), w)
    counts = torch.zeros(num, dtype=w.dtype, device=w.device).index_add_(
        0, assignment.to(w.device), torch.ones(w.shape[0], dtype=w.dtype, device=w.device)
    )
    classes = sums / counts[:, None]
    clients, client_index = torch.unique(owners, return_inverse=True)
    holds = torch.zeros(num, clients.shape[0], dtype=torch.bool)
    holds[assignment.cpu(), client_index.cpu()] = True
    # l' is a negative of l iff some holder of l' is not a holder of l.
    outside = (holds[None, :, :] & ~holds[:, None, :]).any(dim=2)
    outside.fill_diagonal_(False)
    return classes, outside, assignment
