"""The loss terms and the hard-negative selection of FedFR (Liu et al., AAAI 2022).

* `dynamic_range` — ``g(z) = 2((z + 1)/2)^t′ − 1`` of Eq. 6 (maps [−1, 1] onto itself, g(1) = 1,
  g(−1) = −1, and spreads the cosines near 1 apart for t′ > 1).
* `margin_bce` — the margin-based binary cross-entropy of the one-vs-all branches Ω (Eq. 6),
  one term per branch, summed over branches (the official code sums over classes and averages
  over the batch; this returns the per-example sums, the caller averages).
* `model_contrastive` — the contrastive regulariser of Eq. 5 (MOON-style): the global model's
  feature is the positive, the previous local model's the negative, cosine logits over τ.
* `select_hard_negatives` — the hard-negative sampling of § "Hard Negative Sampling Strategy":
  keep a public sample when its cosine to *any* local sample exceeds ``t_HN``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_CHUNK = 4096


def _check_finite(name: str, value: float, low: float, high: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and v <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def dynamic_range(z: torch.Tensor, t: float = 3.0) -> torch.Tensor:
    """``g(z) = 2((z + 1)/2)^t − 1`` (Eq. 6 of FedFR, ``t = t′``), for cosines ``z`` in [−1, 1].

    ``(z + 1)/2`` is clamped at 0 so that rounding below −1 cannot give a NaN for fractional ``t``.
    """
    t = _check_finite("t (t′ of Eq. 6)", t, 0.0, 1e6, low_open=True)
    return 2.0 * ((z + 1.0) / 2.0).clamp(min=0.0).pow(t) - 1.0


def margin_bce(
    cos: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor,
    lam: float = 0.7,
    s: float = 30.0,
    m: float = 0.4,
    t: float = 3.0,
) -> torch.Tensor:
    """Per-example margin BCE of the K one-vs-all branches (Eq. 6 of FedFR).

    For an example of local class ``k`` (``targets = k``)::

        λ/s′ · log(1 + exp(−s′(g(cos θ_k) − m′) − b_k)) + (1 − λ)/s′ · Σ_{j≠k} log(1 + exp(s′(g(cos θ_j) + m′) + b_j))

    and for an example of no local class (``targets = −1``: a public sample, a negative of every
    branch, as in the official code) only the second sum, over all ``j``.

    Args:
        cos: ``[B, K]`` cosine of each transformed feature ``f′ = Π(f)`` to each branch vector Ω_j.
        targets: ``[B]`` local class in ``0..K−1``, or −1.
        bias: ``[K]`` learned bias of each branch (the paper's ``b``; one per branch in the
            official code).
        lam, s, m, t: λ (balance), s′ (scale), m′ (cosine margin), t′ (of ``g``).

    Returns:
        ``[B]``: the sum over branches for each example.
    """
    lam = _check_finite("lam (λ of Eq. 6)", lam, 0.0, 1.0)
    s = _check_finite("s (s′ of Eq. 6)", s, 0.0, 1e6, low_open=True)
    m = _check_finite("m (m′ of Eq. 6)", m, 0.0, 1.0)
    if cos.dim() != 2:
        raise ValueError(f"cos must be a 2-d tensor [B, K], got shape {tuple(cos.shape)}")
    if targets.shape != (cos.shape[0],):
        raise ValueError(f"targets must have shape [{cos.shape[0]}], got {tuple(targets.shape)}")
    if bias.shape != (cos.shape[1],):
        raise ValueError(f"bias must have shape [{cos.shape[1]}], got {tuple(bias.shape)}")
    g = dynamic_range(cos, t)
    positive = (targets.long().unsqueeze(1) == torch.arange(cos.shape[1], device=cos.device).unsqueeze(0)).to(cos.dtype)
    pos_term = (lam / s) * F.softplus(-(s * (g - m) + bias))
    neg_term = ((1.0 - lam) / s) * F.softplus(s * (g + m) + bias)
    return (positive * pos_term + (1.0 - positive) * neg_term).sum(dim=1)


def model_contrastive(f: torch.Tensor, f_glob: torch.Tensor, f_prev: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """Per-example contrastive regulariser (Eq. 5 of FedFR; MOON, Li et al. 2021)::

        −log exp(sim(f, f_glob)/τ) / (exp(sim(f, f_glob)/τ) + exp(sim(f, f_prev)/τ))

    with ``sim`` the cosine similarity: the cross-entropy of the two cosine logits over τ with the
    global feature as the target (the official code's form). Equals
    ``softplus((sim(f, f_prev) − sim(f, f_glob))/τ)``.
    """
    tau = _check_finite("tau (τ of Eq. 5)", tau, 0.0, 1e6, low_open=True)
    if f.shape != f_glob.shape or f.shape != f_prev.shape or f.dim() != 2:
        raise ValueError(
            f"f, f_glob and f_prev must be [B, d] tensors of one shape, got {tuple(f.shape)}, "
            f"{tuple(f_glob.shape)}, {tuple(f_prev.shape)}"
        )
    pos = F.cosine_similarity(f, f_glob, dim=1) / tau
    neg = F.cosine_similarity(f, f_prev, dim=1) / tau
    return F.softplus(neg - pos)


def select_hard_negatives(
    public_features: torch.Tensor, local_features: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Boolean mask ``[P]`` of the public samples whose cosine similarity to *any* local sample
    is strictly above ``threshold`` (t_HN of FedFR; the paper sets it to the CosFace margin m).

    Both inputs are features of the current global model Θ_g (rows need not be normalised).
    """
    threshold = _check_finite("threshold (t_HN)", threshold, -1.0, 1.0)
    if public_features.dim() != 2 or local_features.dim() != 2 or public_features.shape[1] != local_features.shape[1]:
        raise ValueError(
            f"public_features [P, d] and local_features [L, d] must share d, got {tuple(public_features.shape)} "
            f"and {tuple(local_features.shape)}"
        )
    if local_features.shape[0] == 0:
        return torch.zeros(public_features.shape[0], dtype=torch.bool, device=public_features.device)
    pub = F.normalize(public_features.float(), dim=1)
    loc = F.normalize(local_features.float(), dim=1)
    best = torch.empty(pub.shape[0], device=pub.device)
    for start in range(0, pub.shape[0], _CHUNK):
        best[start : start + _CHUNK] = (pub[start : start + _CHUNK] @ loc.t()).amax(dim=1)
    return best > threshold
