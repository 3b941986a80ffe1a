"""Parameter checks shared by every public function of `accountants`.

Each check raises a `ValueError` that names the parameter, the bad value and the allowed range,
so that a user (or the CLI, which turns `ValueError` into exit code 2) can act on it. Nothing is
clipped silently.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def _is_real_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_finite_real(name: str, value: Any) -> float:
    """Return `value` as a float if it is a finite real number, else raise `ValueError`."""
    if not _is_real_number(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """A finite real number in (0, inf)."""
    value = check_finite_real(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be in (0, inf); got {value!r}")
    return value


def check_epsilon(value: Any, name: str = "epsilon") -> float:
    """A privacy loss epsilon: finite, in (0, inf)."""
    return check_positive(name, value)


def check_delta(value: Any, name: str = "delta") -> float:
    """A privacy failure probability delta in the open interval (0, 1)."""
    value = check_finite_real(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1); got {value!r}")
    return value


def check_open_unit(name: str, value: Any) -> float:
    """A probability-like number in the open interval (0, 1) (confidence levels, fractions)."""
    value = check_finite_real(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1); got {value!r}")
    return value


def check_in_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """A finite real number in [low, high] (either end optionally open)."""
    value = check_finite_real(name, value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low!r}, {high!r}{right}; got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An integer (Python or numpy, not bool, not a float) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        upper = "inf" if maximum is None else str(maximum)
        raise ValueError(f"{name} must be an integer in [{minimum}, {upper}]; got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = "inf" if maximum is None else str(maximum)
        raise ValueError(f"{name} must be an integer in [{minimum}, {upper}]; got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of a fixed set of strings."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def check_unit_rows(name: str, array: Any, *, min_rows: int = 1, min_dim: int = 2) -> np.ndarray:
    """A finite float64 matrix [n, d] with non-zero rows, returned with rows scaled to unit norm.

    Class centers live on the unit sphere in PrivacyFace (footnote 1 of §3.1: cosine similarity on
    a unit sphere); normalising them is part of the algorithm, not a repair of bad input. Rows of
    norm zero have no direction and are rejected.
    """
    try:
        matrix = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape [n, d]; got {type(array).__name__}") from exc
    if matrix.ndim != 2:
        raise ValueError(f"{name} must have shape [n, d] (2 dimensions); got shape {matrix.shape}")
    if matrix.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s); got {matrix.shape[0]}")
    if matrix.shape[1] < min_dim:
        raise ValueError(f"{name} must have dimension d >= {min_dim}; got d={matrix.shape[1]}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} must contain only finite values")
    norms = np.linalg.norm(matrix, axis=1)
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"{name} rows must have non-zero norm; row {bad} is zero")
    return matrix / norms[:, None]


def as_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """A `numpy.random.Generator` from a Generator or an integer seed (no global seeding)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool):
        if int(rng) < 0:
            raise ValueError(f"{name} seed must be an integer in [0, inf); got {rng!r}")
        return np.random.default_rng(int(rng))
    raise ValueError(f"{name} must be a numpy.random.Generator or an integer seed >= 0; got {rng!r}")
