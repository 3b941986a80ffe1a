"""The Gaussian mechanism: calibration of sigma to (epsilon, delta) and the inverse.

Two calibrations are offered:

* ``"classic"``: sigma = Delta * sqrt(2 ln(1.25/delta)) / epsilon (Dwork & Roth 2014, Thm A.1;
  Definition 3 of PrivacyFace). The theorem is proven only for 0 < epsilon < 1. PrivacyFace uses
  epsilon = 1 and sweeps above it, so outside that range we warn (`ClassicGaussianRangeWarning`)
  or, with ``strict=True``, refuse.
* ``"analytic"``: the analytic Gaussian mechanism of Balle & Wang (2018, Thm 8), exact for every
  epsilon > 0: the Gaussian mechanism with noise sigma and l2-sensitivity Delta is
  (epsilon, delta)-DP iff

      delta >= Phi(Delta/(2 sigma) - epsilon sigma/Delta) - e^epsilon Phi(-Delta/(2 sigma) - epsilon sigma/Delta).

  With mu = Delta/sigma this is the privacy profile of mu-Gaussian DP (Dong, Roth & Su 2022,
  Cor. 2.13), which the same helpers (`gdp_delta`, `gdp_epsilon`, `gdp_mu`) also serve for the
  auditing code. The root searches run in log space (``log_ndtr`` and ``expm1``) and by
  bisection that keeps the safe side of the bracket, so a calibrated sigma never under-delivers.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable

from scipy.special import log_ndtr

from accountants._validation import check_choice, check_delta, check_epsilon, check_finite_real, check_positive

METHODS = ("classic", "analytic")


class PrivacyAccountingWarning(UserWarning):
    """Base class of the warnings that `accountants` emits (and the ledger records as flags)."""


class ClassicGaussianRangeWarning(PrivacyAccountingWarning):
    """The classic Gaussian calibration was used where its theorem does not apply (epsilon >= 1)."""


# --------------------------------------------------------------------------------------------
# mu-GDP privacy profile (shared by the analytic Gaussian mechanism and the GDP auditor)
# --------------------------------------------------------------------------------------------


def log_gdp_delta(mu: float, epsilon: float) -> float:
    """log delta(epsilon) of mu-GDP (Dong, Roth & Su 2022, Cor. 2.13), computed stably.

    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)
               = Phi(a) * (1 - exp(eps + log Phi(b) - log Phi(a))).
    Returns -inf where delta underflows to 0. `mu` > 0, `epsilon` any finite real.
    """
    a = -epsilon / mu + mu / 2.0
    b = -epsilon / mu - mu / 2.0
    log_a = float(log_ndtr(a))
    log_b = float(log_ndtr(b))
    x = epsilon + log_b - log_a
    if x >= 0.0:
        return -math.inf
    return log_a + math.log(-math.expm1(x))


def gdp_delta(mu: float, epsilon: float) -> float:
    """delta(epsilon) of mu-Gaussian DP (equivalently of the Gaussian mechanism with Delta/sigma = mu).

    Dong, Roth & Su (2022) Cor. 2.13; Balle & Wang (2018) Thm 8.
    """
    mu = check_positive("mu", mu)
    epsilon = check_finite_real("epsilon", epsilon)
    if epsilon < 0:
        raise ValueError(f"epsilon must be in [0, inf); got {epsilon!r}")
    return math.exp(log_gdp_delta(mu, epsilon))


def _bisect_log(
    predicate_ok: Callable[[float], bool], lo: float, hi: float, rtol: float = 1e-12
) -> tuple[float, float]:
    """Bisection in log space keeping predicate_ok(lo) != predicate_ok(hi); returns the bracket."""
    while hi / lo - 1.0 > rtol:
        mid = math.sqrt(lo * hi)
        if mid <= lo or mid >= hi:
            break
        if predicate_ok(mid) == predicate_ok(lo):
            lo = mid
        else:
            hi = mid
    return lo, hi


@functools.lru_cache(maxsize=8192)
def _gdp_epsilon(mu: float, delta: float) -> float:
    target = math.log(delta)
    if log_gdp_delta(mu, 0.0) <= target:
        return 0.0
    hi = 1.0
    while log_gdp_delta(mu, hi) > target:
        hi *= 2.0
        if hi > 1e12:  # pragma: no cover - mu would have to be astronomically large
            return math.inf
    lo = hi / 2.0
    while lo > 1e-300 and log_gdp_delta(mu, lo) <= target:
        lo /= 2.0
    lo, hi = _bisect_log(lambda e: log_gdp_delta(mu, e) <= target, lo, hi)
    return hi


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon >= 0 such that mu-GDP implies (epsilon, delta)-DP.

    Solves delta(eps) = delta for the profile of `gdp_delta` (decreasing in eps). Returns 0 when
    delta(0) = 2 Phi(mu/2) - 1 <= delta, and `inf` for mu = inf. The returned value is the upper
    end of the final bracket, so delta(returned) <= delta always holds.
    """
    delta = check_delta(delta)
    if isinstance(mu, (int, float)) and not isinstance(mu, bool) and mu == math.inf:
        return math.inf
    mu = check_finite_real("mu", mu)
    if mu < 0:
        raise ValueError(f"mu must be in [0, inf]; got {mu!r}")
    if mu == 0:
        return 0.0
    return _gdp_epsilon(mu, delta)


@functools.lru_cache(maxsize=8192)
def _gdp_mu(epsilon: float, delta: float) -> float:
    target = math.log(delta)

    def ok(mu: float) -> bool:
        return log_gdp_delta(mu, epsilon) <= target

    lo = hi = 1.0
    while not ok(lo):
        lo /= 2.0
    while ok(hi):
        hi *= 2.0
        if hi > 1e12:  # pragma: no cover
            return math.inf
    lo, hi = _bisect_log(ok, lo, hi if hi > lo else lo * 2)
    return lo


def gdp_mu(epsilon: float, delta: float) -> float:
    """The largest mu such that mu-GDP is (epsilon, delta)-DP (inverse of `gdp_epsilon`).

    The returned value is the lower end of the final bracket: gdp_delta(mu, epsilon) <= delta.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    return _gdp_mu(epsilon, delta)


# --------------------------------------------------------------------------------------------
# Gaussian mechanism calibration
# --------------------------------------------------------------------------------------------


def _classic_factor(delta: float) -> float:
    return math.sqrt(2.0 * math.log(1.25 / delta))


def _classic_range(epsilon: float, strict: bool, what: str) -> None:
    if epsilon < 1.0:
        return
    message = (
        f"the classic Gaussian calibration sigma = Delta*sqrt(2 ln(1.25/delta))/epsilon is proven only "
        f"for epsilon in (0, 1) (Dwork & Roth 2014, Thm A.1); {what} epsilon={epsilon!r}. "
        f"Use method='analytic' (Balle & Wang 2018) for a guarantee at this epsilon."
    )
    if strict:
        raise ValueError(message)
    warnings.warn(message, ClassicGaussianRangeWarning, stacklevel=3)


def gaussian_sigma(
    sensitivity: float, epsilon: float, delta: float, method: str = "analytic", strict: bool = False
) -> float:
    """Noise standard deviation sigma that makes f(X) + N(0, sigma^2 I) (epsilon, delta)-DP.

    Args:
        sensitivity: l2-sensitivity Delta of f (Definition 2 of PrivacyFace), in (0, inf).
        epsilon: target epsilon, in (0, inf).
        delta: target delta, in (0, 1).
        method: ``"analytic"`` (Balle & Wang 2018, Thm 8 / Alg. 1; exact, any epsilon) or
            ``"classic"`` (Dwork & Roth 2014, Thm A.1; Definition 3 of PrivacyFace; proven only for
            epsilon < 1: warns outside, refuses with ``strict=True``).
        strict: refuse (ValueError) instead of warning when the classic theorem does not apply.
    """
    sensitivity = check_positive("sensitivity", sensitivity)
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    check_choice("method", method, METHODS)
    if method == "classic":
        _classic_range(epsilon, strict, "asked for")
        return sensitivity * _classic_factor(delta) / epsilon
    return sensitivity / gdp_mu(epsilon, delta)


def gaussian_epsilon(
    sigma: float, sensitivity: float, delta: float, method: str = "analytic", strict: bool = False
) -> float:
    """The epsilon that noise `sigma` buys at `delta` for l2-sensitivity `sensitivity`.

    ``"analytic"``: the exact (smallest) epsilon from the Balle & Wang condition, 0 if even
    epsilon = 0 holds. ``"classic"``: inverts Definition 3, epsilon = Delta sqrt(2 ln(1.25/delta))/sigma,
    which is a guarantee only when the result is < 1 (warns otherwise; refuses with ``strict``).
    """
    sigma = check_positive("sigma", sigma)
    sensitivity = check_positive("sensitivity", sensitivity)
    delta = check_delta(delta)
    check_choice("method", method, METHODS)
    if method == "classic":
        epsilon = sensitivity * _classic_factor(delta) / sigma
        _classic_range(epsilon, strict, "the inversion gives")
        return epsilon
    return gdp_epsilon(sensitivity / sigma, delta)


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The exact delta(epsilon) of the Gaussian mechanism (Balle & Wang 2018, Thm 8), epsilon >= 0."""
    sigma = check_positive("sigma", sigma)
    sensitivity = check_positive("sensitivity", sensitivity)
    return gdp_delta(sensitivity / sigma, epsilon)
