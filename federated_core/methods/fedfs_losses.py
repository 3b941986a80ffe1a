"""The loss terms of FedFS (Kim, Choi & Kwak, "Federated Learning for Face Recognition via
Intra-subject Self-supervised Learning", 2024), as read from the paper's summary (see
`federated_core.methods.fedfs` for every reading and its named option).

* `aggregate_features` — the "aggregated features of the local and global models".
* `adaptive_soft_labels` — soft labels from dot products between the instances of a batch:
  each row keeps its top-K similarities (K = batch/4) and weights them (softmax of the dot
  products, or their normalised positive part), instead of hard labels.
* `intra_subject_loss` — F_insub: cosine similarities between the aggregated features and the
  pre-trained model's representations, as logits over a temperature, supervised by the soft
  labels (cross-entropy).
* `cosine_regulariser` — F_reg: ``1 − cos`` between the global and personalised models' outputs.

All work on the instances of one batch; ``allowed [B, B]`` (optional) restricts each row to the
instances of the same identity, so a client with several identities stays positive-only per
identity (FedFS itself has one identity per client: then every pair is allowed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AGGREGATIONS = ("mean", "normalized-mean")
LABEL_WEIGHTINGS = ("softmax", "linear")


def aggregate_features(global_features: torch.Tensor, local_features: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """``(g + l)/2`` (``"mean"``: keeps the features' magnitudes, which the dot products of the
    soft labels see) or ``(ĝ + l̂)/2`` of the L2-normalised features (``"normalized-mean"``)."""
    if global_features.shape != local_features.shape or global_features.dim() != 2:
        raise ValueError(
            f"global_features and local_features must be [B, d] tensors of one shape, got "
            f"{tuple(global_features.shape)} and {tuple(local_features.shape)}"
        )
    if how == "mean":
        return (global_features + local_features) / 2.0
    if how == "normalized-mean":
        return (F.normalize(global_features, dim=1) + F.normalize(local_features, dim=1)) / 2.0
    raise ValueError(f"how must be one of {AGGREGATIONS}, got {how!r}")


def _check_allowed(allowed: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor:
    if allowed is None:
        return torch.ones(b, b, dtype=torch.bool, device=device)
    if allowed.shape != (b, b) or allowed.dtype != torch.bool:
        raise ValueError(
            f"allowed must be a boolean [{b}, {b}] mask, got dtype {allowed.dtype} shape {tuple(allowed.shape)}"
        )
    if not bool(allowed.diagonal().all()):
        raise ValueError("allowed must allow every instance with itself (its diagonal must be True)")
    return allowed


def top_k_count(batch_size: int, fraction: float = 0.25) -> int:
    """K of the adaptive soft labels: ``max(1, floor(fraction · batch_size))`` (FedFS: batch/4)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    return max(1, int(math.floor(float(fraction) * batch_size)))


def adaptive_soft_labels(
    dots: torch.Tensor,
    k: int,
    allowed: torch.Tensor | None = None,
    weighting: str = "softmax",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Soft labels ``[B, B]`` from the dot products ``dots[i, j]`` between instances of a batch.

    Row ``i`` keeps its ``k`` largest allowed entries (ties broken by index) and weights them:

    * ``"softmax"``: ``softmax(dots[i, top-k] / temperature)``;
    * ``"linear"``: the positive parts ``max(dots, 0)`` normalised to sum 1 (all weight on the
      largest entry if none is positive).

    Every other entry is 0; every row sums to 1, and its largest weight sits on its largest dot
    product. No gradient flows through the labels.
    """
    if dots.dim() != 2 or dots.shape[0] != dots.shape[1]:
        raise ValueError(f"dots must be a square [B, B] tensor, got shape {tuple(dots.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if weighting not in LABEL_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {LABEL_WEIGHTINGS}, got {weighting!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (math.isfinite(float(temperature)) and float(temperature) > 0)
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    b = dots.shape[0]
    allowed = _check_allowed(allowed, b, dots.device)
    d = dots.detach().float().masked_fill(~allowed, float("-inf"))
    values, index = d.topk(min(k, b), dim=1)
    kept = torch.isfinite(values)
    if weighting == "softmax":
        weights = torch.softmax((values / float(temperature)).masked_fill(~kept, float("-inf")), dim=1)
    else:
        positive = values.clamp(min=0.0).masked_fill(~kept, 0.0)
        total = positive.sum(dim=1, keepdim=True)
        first = torch.zeros_like(positive)
        first[:, 0] = 1.0  # topk is sorted: column 0 holds the row's largest allowed entry
        weights = torch.where(total > 0, positive / total.clamp(min=torch.finfo(positive.dtype).tiny), first)
    return torch.zeros_like(d).scatter(1, index, weights.masked_fill(~kept, 0.0))


def intra_subject_loss(
    aggregated: torch.Tensor,
    pretrained: torch.Tensor,
    soft_labels: torch.Tensor,
    temperature: float = 0.1,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example F_insub: ``−Σ_j y_ij log softmax_j(cos(a_i, p_j) / temperature)`` over the
    allowed ``j`` (``a`` aggregated features, ``p`` the pre-trained model's representations, ``y``
    the soft labels; ``p`` is fixed, the gradient flows into ``a``)."""
    if aggregated.shape != pretrained.shape or aggregated.dim() != 2:
        raise ValueError(
            f"aggregated and pretrained must be [B, d] tensors of one shape, got {tuple(aggregated.shape)} "
            f"and {tuple(pretrained.shape)}"
        )
    b = aggregated.shape[0]
    if soft_labels.shape != (b, b):
        raise ValueError(f"soft_labels must have shape [{b}, {b}], got {tuple(soft_labels.shape)}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (math.isfinite(float(temperature)) and float(temperature) > 0)
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    allowed = _check_allowed(allowed, b, aggregated.device)
    cos = F.normalize(aggregated, dim=1) @ F.normalize(pretrained.detach(), dim=1).t()
    log_p = torch.log_softmax((cos / float(temperature)).masked_fill(~allowed, float("-inf")), dim=1)
    return -(soft_labels.to(log_p.dtype) * log_p.masked_fill(~allowed, 0.0)).sum(dim=1)


def cosine_regulariser(global_features: torch.Tensor, local_features: torch.Tensor) -> torch.Tensor:
    """Per-example F_reg: ``1 − cos(g_i, l_i)`` between the global and the personalised models'
    outputs (0 when they agree in direction, at most 2)."""
    if global_features.shape != local_features.shape or global_features.dim() != 2:
        raise ValueError(
            f"global_features and local_features must be [B, d] tensors of one shape, got "
            f"{tuple(global_features.shape)} and {tuple(local_features.shape)}"
        )
    return 1.0 - F.cosine_similarity(global_features, local_features, dim=1)
