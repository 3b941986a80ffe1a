"""Counter-based random numbers for the synthetic face generator.

Every random quantity of `SyntheticFaces` is a pure function of a key ``(seed, stream, a, b,
...)`` and a counter ``k``: ``u = hash(key, k)``. Nothing is drawn from a sequential stream, so
identity 10**6 costs the same as identity 0, and an image's pixels do not depend on which other
images share its batch (the property the generator's tests check).

The mixing function is the 32-bit "lowbias32" integer finaliser (Chris Wellons' hash-prospector
construction: xorshift-multiply-xorshift-multiply-xorshift). It is evaluated on int64 tensors
holding 32-bit values; multiplications are split into 16-bit halves so no intermediate exceeds
2**49, which makes the result exact, identical on CPU and CUDA, and free of signed overflow.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
_MUL_A = 0x7FEB352D
_MUL_B = 0x846CA68B
_GOLDEN = 0x9E3779B9

# Stream ids: one per kind of random quantity, so no two kinds ever share numbers.
STREAM_GROUP_OF = 1
STREAM_GROUP_PARAMS = 2
STREAM_IDENTITY = 3
STREAM_IMAGE = 4
STREAM_NOISE_BANK = 5
STREAM_BACKGROUND = 6


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` without int64 overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 finaliser on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, _MUL_A)
    x = x ^ (x >> 15)
    x = _mul32(x, _MUL_B)
    return x ^ (x >> 16)


def hash_key(seed: int, stream: int, *parts: torch.Tensor | int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Hash of a key ``(seed, stream, *parts)``; tensor parts broadcast against each other.

    Each part is a non-negative integer below ``2**63``; both 32-bit halves enter the hash.
    Returns an int64 tensor of 32-bit hashes with the broadcast shape of the tensor parts.
    """
    h = torch.tensor(0x243F6A88, dtype=torch.int64, device=device)
    for value in (seed, stream, *parts):
        v = torch.as_tensor(value, dtype=torch.int64, device=device)
        h = mix32(h ^ (v & MASK32))
        h = mix32(h ^ ((v >> 32) & MASK32) ^ _GOLDEN)
    return h


def uniform(key: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` uniforms in the open interval (0, 1) per key: float64 ``[*key.shape, count]``.

    The values are odd multiples of ``2**-25`` (24 random bits), exactly representable in
    float32 too, so 0 and 1 never occur.
    """
    k = torch.arange(1, count + 1, dtype=torch.int64, device=key.device)
    h = mix32(key.unsqueeze(-1) ^ _mul32(k, _GOLDEN))
    h = mix32(h ^ (h >> 7) ^ 0x5BD1E995)
    return ((h >> 8).to(torch.float64) + 0.5) * (1.0 / 16777216.0)


def normal(key: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` standard-normal values per key (inverse CDF of `uniform`): float64
    ``[*key.shape, count]``.

    Computed in float64 on purpose: callers round to float32 afterwards, which removes the
    last-bit differences between torch's vectorised and scalar CPU paths of ``erfinv`` (whose
    choice depends on the batch size), so the result does not depend on batch composition.
    """
    u = uniform(key, count)
    return torch.erfinv(u.mul(2.0).sub(1.0)).mul(math.sqrt(2.0))
