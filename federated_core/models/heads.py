"""Margin-softmax classification heads (Softmax, CosFace, ArcFace), as functions of ANY matrix of
class centers, plus the `MarginHead` module that owns a center matrix W.

With embeddings ``f_i`` and centers ``w_j``, and ``cos θ_ij = w_jᵀ f_i / (‖w_j‖‖f_i‖)``, the loss
is PrivacyFace Eq. 1: ``L = -mean_i log e^{u(w_{y_i}, f_i)} / (e^{u(w_{y_i}, f_i)} +
Σ_{j≠y_i} e^{v(w_j, f_i)})`` with

- ``"softmax"``: ``u = v = w_jᵀ f_i (+ b_j)`` — the plain linear classifier (FedGC Eq. 2); ``s``
  and ``m`` do not apply and are ignored;
- ``"cosface"``: ``u = s·(cos θ − m)``, ``v = s·cos θ`` (Wang et al. 2018, CosFace Eq. 4;
  PrivacyFace Eq. 2). Defaults ``s = 64, m = 0.35`` (FedGC's CosFace setting);
- ``"arcface"``: ``u = s·cos(θ + m)``, ``v = s·cos θ`` (Deng et al. 2019, ArcFace Eq. 3;
  PrivacyFace Eq. 3 prints ``cos(θ − m)``, a sign typo). Defaults ``s = 64, m = 0.5`` (FedGC's
  ArcFace setting).

ArcFace numerics and the θ + m > π case: θ = arccos(cos θ) is computed from the cosine clamped to
``[-1 + ε, 1 − ε]`` (ε = 1e-6) so that sin θ = sqrt(1 − cos²θ) stays away from 0 and the
gradient stays finite at θ = 0 and θ = π. ``cos(θ + m)`` stops decreasing in θ once θ + m > π
(it would reward moving *away* from the center), so the target logit there is replaced by a
CosFace-like fallback, shifted so that it meets ``cos(θ + m) = −1`` at θ = π − m:

    u = s·cos(θ + m)                 if θ ≤ π − m   (i.e. cos θ ≥ cos(π − m))
    u = s·(cos θ − (1 − cos m))      otherwise.

This form is continuous and strictly decreasing in θ on [0, π], and never above ``s·cos θ``.
(insightface's ``easy_margin=False`` branch uses ``cos θ − m·sin m`` instead, which jumps by
``m·sin m − (1 − cos m)`` ≈ 0.12 at θ = π − m for m = 0.5; we prefer the continuous form.)

Labels: ``labels[i]`` is the row of ``centers`` that is sample i's own class, or ``-1`` when
none of the given centers is sample i's class (e.g. a client whose identities have no center in
the matrix, or a batch scored only against other parties' centers). A ``-1`` row gets no margin
in `margin_logits` and contributes no term to `margin_loss` (its cross-entropy has no target).
``labels=None`` gives the logits without any margin (``s·cos θ`` or inner products).

Extra negatives (`margin_loss(..., extra_negatives=E)`): additional class centers that are
never a target (e.g. other clients' centers in the "shared centers" method, PrivacyFace's p̂ in
Eq. 5). They are appended to the denominator with ``v = s·cos(max(θ − ρ, 0))`` where ``ρ =
negative_slack`` (PrivacyFace Eq. 5's μ(p, f, ρ); ρ = 0 gives ``s·cos θ``), or with inner
products for the softmax head. Gradients flow into them unless the caller detaches them.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("softmax", "cosface", "arcface")
DEFAULT_SCALE = {"cosface": 64.0, "arcface": 64.0}
DEFAULT_MARGIN = {"cosface": 0.35, "arcface": 0.5}
# Allowed margins: CosFace subtracts m from a cosine in [-1, 1]; ArcFace adds m to an angle in
# [0, π], and a margin beyond π/2 would make the fallback region cover most of the sphere.
MARGIN_RANGE = {"cosface": (0.0, 1.0), "arcface": (0.0, math.pi / 2)}
COS_EPS = 1e-6


def _resolve_scale_margin(kind: str, s: float | None, m: float | None) -> tuple[float, float]:
    if kind not in HEAD_KINDS:
        raise ValueError(f"kind must be one of {list(HEAD_KINDS)}, got {kind!r}")
    if kind == "softmax":
        return 1.0, 0.0
    s = DEFAULT_SCALE[kind] if s is None else s
    m = DEFAULT_MARGIN[kind] if m is None else m
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not (math.isfinite(s) and s > 0):
        raise ValueError(f"s (the logit scale) must be a finite number > 0, got {s!r}")
    low, high = MARGIN_RANGE[kind]
    if isinstance(m, bool) or not isinstance(m, numbers.Real) or not (low <= m <= high):
        raise ValueError(f"m (the {kind} margin) must be a number in [{low}, {high:.4g}], got {m!r}")
    return float(s), float(m)


def _check_inputs(
    embeddings: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor | None, check_labels: bool
) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be a 2-d tensor [B, d], got shape {tuple(embeddings.shape)}")
    if centers.dim() != 2 or centers.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"centers must be a 2-d tensor [C, {embeddings.shape[1]}] (same d as embeddings), "
            f"got shape {tuple(centers.shape)}"
        )
    if labels is None:
        return
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be a 1-d tensor with one entry per embedding ({embeddings.shape[0]}), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if check_labels and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < -1 or high >= centers.shape[0]:
            raise ValueError(
                f"labels must be in [-1, {centers.shape[0] - 1}] (-1: no positive among the centers), "
                f"got values in [{low}, {high}]"
            )


def _arcface_target(cos_target: torch.Tensor, m: float) -> torch.Tensor:
    """``cos(θ + m)`` for θ ≤ π − m, else ``cos θ − (1 − cos m)`` (see the module docstring)."""
    c = cos_target.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)
    sin = torch.sqrt(1.0 - c * c)
    shifted = c * math.cos(m) - sin * math.sin(m)
    fallback = c - (1.0 - math.cos(m))
    return torch.where(c >= math.cos(math.pi - m), shifted, fallback)


def margin_logits(
    embeddings: torch.Tensor,
    centers: torch.Tensor,
    labels: torch.Tensor | None = None,
    kind: str = "cosface",
    s: float | None = None,
    m: float | None = None,
    bias: torch.Tensor | None = None,
    check_labels: bool = True,
) -> torch.Tensor:
    """Logits ``[B, C]`` of ``embeddings [B, d]`` against ``centers [C, d]`` (PrivacyFace Eq. 1–3).

    Args:
        embeddings: features ``f_i`` (need not be normalised).
        centers: class centers ``w_j`` (need not be normalised; cos heads normalise both sides).
        labels: ``[B]`` integer row of each sample's own center, ``-1`` for none, or ``None`` for
            no margin at all.
        kind: ``"softmax"``, ``"cosface"`` or ``"arcface"``.
        s, m: scale and margin; ``None`` gives the kind's default (CosFace 64 / 0.35, ArcFace
            64 / 0.5). Ignored by ``"softmax"``.
        bias: optional ``[C]`` bias, only for ``"softmax"``.
        check_labels: validate the label range (one device sync); pass ``False`` inside
            compiled / graph-captured steps.
    """
    s, m = _resolve_scale_margin(kind, s, m)
    _check_inputs(embeddings, centers, labels, check_labels)
    if kind == "softmax":
        logits = embeddings @ centers.t()
        if bias is not None:
            if bias.shape != (centers.shape[0],):
                raise ValueError(f"bias must have shape [{centers.shape[0]}], got {tuple(bias.shape)}")
            logits = logits + bias
        return logits
    if bias is not None:
        raise ValueError(f"bias applies only to kind='softmax', got bias with kind={kind!r}")
    cos = F.normalize(embeddings, dim=1) @ F.normalize(centers, dim=1).t()
    if labels is None or m == 0.0:
        return s * cos
    labels = labels.long()
    has_target = labels >= 0
    rows = labels.clamp(min=0).unsqueeze(1)  # -1 rows point at column 0 and are masked out below
    cos_target = cos.gather(1, rows)
    if kind == "cosface":
        target = cos_target - m
    else:
        target = _arcface_target(cos_target, m)
    # A comparison one-hot (not F.one_hot) so torch.func.vmap / opacus per-sample gradients work.
    columns = torch.arange(cos.shape[1], device=cos.device)
    onehot = ((columns.unsqueeze(0) == rows) & has_target.unsqueeze(1)).to(cos.dtype)
    return s * (cos + onehot * (target - cos_target))


def _extra_negative_logits(
    embeddings: torch.Tensor, extra: torch.Tensor, kind: str, s: float, slack: float
) -> torch.Tensor:
    if kind == "softmax":
        return embeddings @ extra.t()
    cos = F.normalize(embeddings, dim=1) @ F.normalize(extra, dim=1).t()
    if slack == 0.0:
        return s * cos
    # μ(p, f, ρ) = s·cos(max(θ − ρ, 0)) (PrivacyFace Eq. 5), clamped like the ArcFace target.
    c = cos.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)
    theta = torch.acos(c)
    return s * torch.cos(torch.clamp(theta - slack, min=0.0))


def margin_loss(
    embeddings: torch.Tensor,
    centers: torch.Tensor,
    labels: torch.Tensor,
    kind: str = "cosface",
    s: float | None = None,
    m: float | None = None,
    extra_negatives: torch.Tensor | None = None,
    negative_slack: float = 0.0,
    bias: torch.Tensor | None = None,
    check_labels: bool = True,
) -> torch.Tensor:
    """Mean margin-softmax cross-entropy (PrivacyFace Eq. 1; Eq. 5 with ``extra_negatives``).

    Args:
        embeddings, centers, labels, kind, s, m, bias, check_labels: as in `margin_logits`
            (labels are required; ``-1`` rows contribute no term).
        extra_negatives: optional ``[E, d]`` centers appended to every denominator, never a
            target (see the module docstring).
        negative_slack: ρ of PrivacyFace Eq. 5 for the extra negatives (radians, in ``[0, π]``);
            only for cos heads.

    Returns:
        scalar tensor: mean over the rows with a label ``>= 0``; ``0`` (still attached to the
        graph) when every label is ``-1``.
    """
    if labels is None:
        raise ValueError("labels must be given to margin_loss (use -1 for rows without a positive center)")
    s_val, _ = _resolve_scale_margin(kind, s, m)
    if (
        isinstance(negative_slack, bool)
        or not isinstance(negative_slack, numbers.Real)
        or not (0.0 <= negative_slack <= math.pi)
    ):
        raise ValueError(f"negative_slack must be a number in [0, π] (radians), got {negative_slack!r}")
    if kind == "softmax" and negative_slack != 0.0:
        raise ValueError(f"negative_slack applies only to cos heads, got {negative_slack} with kind='softmax'")
    logits = margin_logits(embeddings, centers, labels, kind, s, m, bias=bias, check_labels=check_labels)
    if extra_negatives is not None:
        if extra_negatives.dim() != 2 or extra_negatives.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"extra_negatives must be a 2-d tensor [E, {embeddings.shape[1]}], "
                f"got shape {tuple(extra_negatives.shape)}"
            )
        extra = _extra_negative_logits(embeddings, extra_negatives, kind, s_val, float(negative_slack))
        logits = torch.cat([logits, extra], dim=1)
    labels = labels.long()
    per_sample = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    weight = (labels >= 0).to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)


class MarginHead(nn.Module):
    """A classification head that owns its class centers ``W [C, d]`` (``nn.Parameter``).

    Args:
        num_classes: C.
        embedding_dim: d.
        kind, s, m: as in `margin_logits` (defaults per kind: CosFace 64 / 0.35, ArcFace 64 / 0.5).
        bias: add a learnable bias (``"softmax"`` only).
        generator: optional ``torch.Generator`` for the initialisation ``W ~ N(0, 0.01²)``.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        kind: str = "cosface",
        s: float | None = None,
        m: float | None = None,
        bias: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.s, self.m = _resolve_scale_margin(kind, s, m)
        if bias and kind != "softmax":
            raise ValueError(f"bias=True applies only to kind='softmax', got kind={kind!r}")
        self.kind = kind
        self.weight = nn.Parameter(torch.randn(int(num_classes), int(embedding_dim), generator=generator) * 0.01)
        self.bias = nn.Parameter(torch.zeros(int(num_classes))) if bias else None

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C]`` logits against this head's centers (margin on the label column if given)."""
        return margin_logits(embeddings, self.weight, labels, self.kind, self.s, self.m, bias=self.bias)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        extra_negatives: torch.Tensor | None = None,
        negative_slack: float = 0.0,
    ) -> torch.Tensor:
        """Mean margin loss of ``embeddings`` with ``labels`` (see `margin_loss`)."""
        return margin_loss(
            embeddings,
            self.weight,
            labels,
            self.kind,
            self.s,
            self.m,
            extra_negatives=extra_negatives,
            negative_slack=negative_slack,
            bias=self.bias,
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.weight.shape[0]}, embedding_dim={self.weight.shape[1]}, kind={self.kind!r}, s={self.s}, m={self.m}"
