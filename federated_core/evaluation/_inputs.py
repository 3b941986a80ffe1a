"""Conversion and validation of evaluation inputs (numpy arrays or torch tensors)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view/copy of a numpy array, torch tensor (any device) or sequence."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def scores_and_labels(scores: Any, is_same: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 scores and boolean genuine flags, both 1-d and of equal length."""
    s = to_numpy(scores)
    y = to_numpy(is_same)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-d array, got shape {s.shape}")
    if y.ndim != 1:
        raise ValueError(f"is_same must be a 1-d array, got shape {y.shape}")
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"scores and is_same must have the same length, got {s.shape[0]} and {y.shape[0]}")
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores must be finite, got {int(np.sum(~np.isfinite(s)))} non-finite value(s)")
    if y.dtype != np.bool_:
        if not np.all(np.isin(y, (0, 1))):
            raise ValueError(f"is_same must be boolean or 0/1, got values {np.unique(y)[:5]}")
        y = y.astype(bool)
    return s, y


def require_both_classes(y: np.ndarray) -> tuple[int, int]:
    """(number of genuine, number of impostor) pairs; both must be > 0."""
    num_genuine = int(y.sum())
    num_impostor = int(y.shape[0] - num_genuine)
    if num_genuine == 0:
        raise ValueError("is_same must contain at least one genuine pair (True), got none")
    if num_impostor == 0:
        raise ValueError("is_same must contain at least one impostor pair (False), got none")
    return num_genuine, num_impostor


def check_rate(name: str, value: Any) -> float:
    """A false-accept / false-positive rate target in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
