"""Normalisation layers shared by the MobileFaceNet and IResNet backbones (``norm`` keyword).

- ``"batch"`` (default): the papers' BatchNorm. It normalises each channel over the batch, so one
  example's output depends on the others: opacus DP-SGD (per-sample gradients) refuses it.
- ``"group"``: per-example normalisation that opacus accepts. Every ``BatchNorm2d(c)`` becomes
  ``GroupNorm(g, c)`` with ``g`` the largest of 32, 16, 8, 4, 2, 1 that divides ``c`` (32 groups is
  the default of Wu & He 2018, "Group Normalization"; all channel counts of both backbones are
  multiples of 32, so every group has at least 2 channels). The final ``BatchNorm1d(d)`` of the
  embedding becomes ``LayerNorm(d)``: a ``[B, d]`` vector has no spatial extent and ``d`` is free
  (it need not be a multiple of anything), so the normalisation runs over all ``d`` features of
  one example — the same as ``GroupNorm(1, d)`` on ``[B, d, 1]``, with a per-feature affine.
  Unlike BatchNorm1d (which centres each feature over the batch), it centres and scales each
  embedding over its own features, so before the affine every embedding is orthogonal to the
  all-ones direction and has norm about ``sqrt(d)``; recognition compares normalised embeddings,
  so this only costs one of the ``d`` directions.

Every GroupNorm group holds at least 2 channels (16 for the 512-channel layers), so the groups
stay non-degenerate on the 1×1 maps of the GDConv output and of small inputs.
"""

from __future__ import annotations

from torch import nn

NORM_CHOICES: tuple[str, ...] = ("batch", "group")
_GROUP_CANDIDATES = (32, 16, 8, 4, 2, 1)


def check_norm(value: object) -> str:
    """``value`` if it is one of `NORM_CHOICES`, else a ValueError naming it and the choices."""
    if not isinstance(value, str) or value not in NORM_CHOICES:
        raise ValueError(f"norm must be one of {list(NORM_CHOICES)}, got {value!r}")
    return value


def num_groups(channels: int) -> int:
    """The largest of 32, 16, 8, 4, 2, 1 that divides ``channels``."""
    return next(g for g in _GROUP_CANDIDATES if channels % g == 0)


def norm2d(norm: str, channels: int, eps: float = 1e-5) -> nn.Module:
    """``BatchNorm2d(channels)`` for ``"batch"``, ``GroupNorm(num_groups(channels), channels)``
    for ``"group"`` (both with affine weight 1 and bias 0 at initialisation)."""
    if check_norm(norm) == "batch":
        return nn.BatchNorm2d(channels, eps=eps)
    return nn.GroupNorm(num_groups(channels), channels, eps=eps)


def norm1d(norm: str, features: int, eps: float = 1e-5) -> nn.BatchNorm1d | nn.LayerNorm:
    """Normalisation of a ``[B, features]`` embedding: ``BatchNorm1d`` for ``"batch"``,
    ``LayerNorm(features)`` (over the features of each example) for ``"group"``."""
    if check_norm(norm) == "batch":
        return nn.BatchNorm1d(features, eps=eps)
    return nn.LayerNorm(features, eps=eps)
