"""Parameter checks shared by the backbone constructors (errors name the parameter, the bad value
and the allowed range, as everywhere in privaudit)."""

from __future__ import annotations

import numbers


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_resolution(name: str, value: object, multiple: int, minimum: int, backbone: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or value % multiple != 0:
        raise ValueError(
            f"{name} for backbone {backbone!r} must be a multiple of {multiple} and >= {minimum}, got {value}"
        )
    return value


def check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)
