"""The consensus-aware recognition loss of PrivacyFace (Eq. 5, Meng et al. ICLR 2022).

A margin-softmax loss (CosFace, Eq. 2, or ArcFace, Eq. 3) whose denominator also holds, for every
cluster center ``p_hat`` received from the *other* clients, the term ``exp(mu(p_hat, f, rho))``
with

    mu(p, f, rho) = s * cos(max(theta - rho, 0)),   theta = angle(p, f).

A feature inside a cluster's cap (``theta <= rho``) meets the largest possible negative logit
``s``; outside, the penalty decays as the angle to the cap's border grows. With no clusters the
loss is exactly the plain margin loss of `federated_core.models.heads`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CONSENSUS_KINDS = ("cosface", "arcface")


def cluster_similarity(embeddings: torch.Tensor, clusters: torch.Tensor, rho: float, s: float) -> torch.Tensor:
    """``mu(p, f, rho) = s * cos(max(theta - rho, 0))`` of Eq. 5 for every (feature, cluster) pair.

    Args:
        embeddings: ``[B, d]`` features ``f`` (normalised here).
        clusters: ``[K, d]`` cluster centers ``p`` (normalised here).
        rho: cluster margin, ``0 <= rho <= pi``.
        s: the scale of the margin loss.

    Returns ``[B, K]``. Computed without ``arccos`` for stable gradients: for ``theta > rho``,
    ``cos(theta - rho) = cos(theta) cos(rho) + sin(theta) sin(rho)``.
    """
    if not (0.0 <= float(rho) <= math.pi):
        raise ValueError(f"rho must be in [0, pi], got {rho!r}")
    if clusters.dim() != 2 or embeddings.dim() != 2 or clusters.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"embeddings [B, d] and clusters [K, d] must share d, got {tuple(embeddings.shape)} and "
            f"{tuple(clusters.shape)}"
        )
    f = F.normalize(embeddings, dim=1)
    p = F.normalize(clusters.to(device=f.device, dtype=f.dtype), dim=1)
    cos_theta = (f @ p.t()).clamp(-1.0, 1.0)
    sin_theta = torch.sqrt((1.0 - cos_theta * cos_theta).clamp_min(1e-12))
    shifted = cos_theta * math.cos(rho) + sin_theta * math.sin(rho)
    inside = cos_theta >= math.cos(rho)
    return s * torch.where(inside, torch.ones_like(shifted), shifted)


def consensus_logits(
    embeddings: torch.Tensor,
    centers: torch.Tensor,
    labels: torch.Tensor,
    clusters: torch.Tensor | None,
    *,
    rho: float,
    kind: str = "cosface",
    s: float = 30.0,
    m: float = 0.35,
) -> torch.Tensor:
    """``[B, C + K]``: the margin logits ``u(w_y, f)`` / ``v(w_j, f)`` of the ``C`` local classes
    followed by ``mu(p_hat_k, f, rho)`` for the ``K`` received clusters (Eq. 5's denominator)."""
    from federated_core.models.heads import margin_logits

    if kind not in CONSENSUS_KINDS:
        raise ValueError(f"kind must be one of {CONSENSUS_KINDS} for the consensus-aware loss, got {kind!r}")
    logits = margin_logits(embeddings, centers, labels, kind=kind, s=s, m=m)
    if clusters is None or clusters.shape[0] == 0:
        return logits
    return torch.cat([logits, cluster_similarity(embeddings, clusters, rho, s).to(logits.dtype)], dim=1)


def consensus_loss(
    embeddings: torch.Tensor,
    centers: torch.Tensor,
    labels: torch.Tensor,
    clusters: torch.Tensor | None,
    *,
    rho: float,
    kind: str = "cosface",
    s: float = 30.0,
    m: float = 0.35,
    reduction: str = "mean",
) -> torch.Tensor:
    """Eq. 5 of PrivacyFace: cross-entropy of `consensus_logits` with the local labels (cluster
    columns are never targets). ``clusters=None`` or ``[0, d]`` gives the plain CosFace / ArcFace
    loss. Labels ``-1`` (no local center is the sample's class) contribute no term, as in
    `federated_core.models.heads.margin_loss`.

    ``reduction``: ``"mean"`` (over rows with a label ``>= 0``) or ``"none"`` (``[B]`` per-example
    losses, ``0`` for ``-1`` rows; what `federated_core.engine.local_sgd.train_local` needs).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    logits = consensus_logits(embeddings, centers, labels, clusters, rho=rho, kind=kind, s=s, m=m)
    per_example = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    weight = (labels >= 0).to(per_example.dtype)
    per_example = per_example * weight
    if reduction == "none":
        return per_example
    return per_example.sum() / weight.sum().clamp(min=1.0)
