"""Accountants: the epsilon of a composed DP event at a given delta, and calibration of noise.

Every accountant reads the same events (`accountants.events`) and returns an upper bound on
epsilon for the given (total) delta:

* ``"basic"``: basic composition (Dwork & Roth 2014, Thm 3.16; Definition 4 of PrivacyFace).
  delta is split equally over the k elementary mechanisms; each one's epsilon at delta/k is exact
  (analytic Gaussian; for a Poisson-subsampled Gaussian, amplification by subsampling,
  eps' = log(1 + q (e^eps - 1)) at delta' = q delta, Balle, Barthe & Gaboardi 2018).
* ``"advanced"``: advanced composition (Dwork, Rothblum & Vadhan 2010; Dwork & Roth Thm 3.20),
  eps = sqrt(2 ln(1/delta') sum_i eps_i^2) + sum_i eps_i (e^eps_i - 1) at delta = delta' + sum_i delta_i,
  optimised over the split of delta between delta' and the delta_i; never reported above basic
  (both are valid bounds, the smaller is returned).
* ``"rdp"``: Renyi DP with opacus' RDP analysis (``compute_rdp``; curves of different events are
  summed) and the improved RDP -> (eps, delta) conversion of Balle et al. 2020 (Thm 21) /
  Canonne, Kamath & Steinke 2020 (Prop. 12), as ``opacus.accountants.analysis.rdp.get_privacy_spent``
  does. opacus can return a negative epsilon for tiny RDP; it is clamped at 0 with a warning.
* ``"prv"``: numerical composition of privacy-loss random variables (Gopi, Lee & Wutschitz 2021)
  with opacus' PRV accountant; its upper estimate ``eps_upper`` is returned. opacus' PRV fails
  in some regimes: it raises at tiny delta ("floating point errors will dominate") or on
  discretisation errors, and at large epsilon its grid (2L / mesh points, L growing with the RDP
  epsilon) exhausts memory instead of raising, so grids above `PRV_MAX_GRID` are refused up front.
  All of these, and non-finite or negative results, fall back to RDP with the reason recorded.
* ``"gdp"``: exact for compositions of plain Gaussian mechanisms, which compose to mu-GDP with
  mu = sqrt(sum_i count_i / s_i^2) (Dong, Roth & Su 2022, Cor. 3.3). Not defined for subsampled
  events (ValueError).

A `NonPrivateEvent` anywhere in the event gives epsilon = inf under every accountant.
opacus (and therefore torch) is imported lazily, only by the "rdp" and "prv" accountants.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from accountants._validation import check_choice, check_delta, check_epsilon, check_in_range, check_int, check_positive
from accountants.events import Atoms, DpEvent, GaussianEvent, PoissonSampledGaussianEvent, SelfComposedEvent, flatten
from accountants.mechanisms import PrivacyAccountingWarning, gdp_epsilon

ACCOUNTANTS = ("basic", "advanced", "rdp", "prv", "gdp")

RDP_ORDERS: tuple[float, ...] = tuple(
    [1.01, 1.02, 1.05]
    + [1.0 + x / 10.0 for x in range(1, 100)]
    + list(range(12, 64))
    + [64, 80, 96, 128, 160, 192, 256]
)
"""RDP orders: opacus' defaults extended down to 1.01 and up to 256 (small orders matter at large
epsilon, large orders for heavily noised releases)."""

PRV_MAX_GRID = 2_000_000
"""Largest discretisation grid (points) the PRV accountant may build before falling back to RDP."""


class AccountingFallbackWarning(PrivacyAccountingWarning):
    """An accountant could not answer and another (valid, looser) one was used instead."""


@dataclass(frozen=True)
class EpsilonResult:
    """An accountant's answer: epsilon at delta, which accountant actually answered, and warnings."""

    epsilon: float
    delta: float
    accountant: str
    used: str
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "used": self.used,
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------------------------
# per-mechanism (epsilon, delta) for basic / advanced composition
# --------------------------------------------------------------------------------------------


def _atom_epsilon(event: DpEvent, delta: float) -> float:
    """Exact-profile epsilon of one elementary mechanism at delta (0 < delta < 1)."""
    if isinstance(event, GaussianEvent):
        return gdp_epsilon(1.0 / event.noise_multiplier, delta)
    assert isinstance(event, PoissonSampledGaussianEvent)
    q = event.sampling_probability
    if delta >= q:
        return 0.0  # the subsampled mechanism is (0, q)-DP: outputs differ only when the record is sampled
    base = gdp_epsilon(1.0 / event.noise_multiplier, delta / q)
    if base > 30.0:  # log(1 + q (e^b - 1)) = b + log(q + (1 - q) e^-b), without overflow
        return base + math.log(q + (1.0 - q) * math.exp(-base))
    return math.log1p(q * math.expm1(base))


def _basic(atoms: Atoms, delta: float) -> float:
    total = atoms.total
    if total == 0:
        return 0.0
    per = delta / total
    return sum(count * _atom_epsilon(event, per) for event, count in atoms.items())


def _drv(atoms: Atoms, delta: float, fraction: float) -> float:
    """Heterogeneous advanced composition with delta' = fraction * delta."""
    total = atoms.total
    delta_prime = fraction * delta
    per = (1.0 - fraction) * delta / total
    sum_sq = 0.0
    sum_lin = 0.0
    for event, count in atoms.items():
        eps_i = _atom_epsilon(event, per)
        sum_sq += count * eps_i * eps_i
        sum_lin += count * eps_i * (math.expm1(eps_i) if eps_i < 700.0 else math.inf)
    return math.sqrt(2.0 * math.log(1.0 / delta_prime) * sum_sq) + sum_lin


def _advanced(atoms: Atoms, delta: float) -> float:
    if atoms.total == 0:
        return 0.0
    from scipy.optimize import minimize_scalar

    # coarse grid over the split in logit space, then a bounded refinement around the best point
    logits = np.linspace(-12.0, 12.0, 49)
    values = [_drv(atoms, delta, 1.0 / (1.0 + math.exp(-z))) for z in logits]
    best = int(np.argmin(values))
    low = logits[max(best - 1, 0)]
    high = logits[min(best + 1, len(logits) - 1)]
    result = minimize_scalar(
        lambda z: _drv(atoms, delta, 1.0 / (1.0 + math.exp(-z))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    advanced = min(values[best], float(result.fun))
    return min(advanced, _basic(atoms, delta))


# --------------------------------------------------------------------------------------------
# opacus-backed accountants
# --------------------------------------------------------------------------------------------


def _history(atoms: Atoms) -> list[tuple[float, float, int]]:
    history = [(multiplier, 1.0, count) for multiplier, count in atoms.gaussian.items() if count > 0]
    history += [(multiplier, q, count) for (multiplier, q), count in atoms.sampled.items() if count > 0]
    return history


@lru_cache(maxsize=256)
def _rdp_curve(history: tuple[tuple[float, float, int], ...]) -> np.ndarray:
    """The RDP curve over `RDP_ORDERS` of a history (cached: the same event is often converted at
    many δ, e.g. by group privacy's search, and for every client of a run)."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    orders = list(RDP_ORDERS)
    curve = np.zeros(len(orders))
    for multiplier, q, count in history:
        curve = curve + np.asarray(
            rdp_analysis.compute_rdp(q=q, noise_multiplier=multiplier, steps=count, orders=orders), dtype=float
        )
    curve.setflags(write=False)
    return curve


def _rdp(atoms: Atoms, delta: float, notes: list[str]) -> float:
    from opacus.accountants.analysis import rdp as rdp_analysis

    history = _history(atoms)
    if not history:
        return 0.0
    orders = list(RDP_ORDERS)
    curve = _rdp_curve(tuple(sorted(history)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eps, order = rdp_analysis.get_privacy_spent(orders=orders, rdp=curve, delta=delta)
    for item in caught:
        notes.append(f"rdp: opacus: {item.message}")
    eps = float(eps)
    if math.isnan(eps):
        notes.append("rdp: opacus returned NaN; reported as inf")
        return math.inf
    if eps < 0:
        notes.append(f"rdp: opacus returned a negative epsilon ({eps:.3g}) at order {order}; clamped at 0")
        return 0.0
    return eps


def _prv(atoms: Atoms, delta: float, notes: list[str], eps_error: float) -> tuple[float, str]:
    history = _history(atoms)
    if not history:
        return 0.0, "prv"
    try:
        from opacus.accountants import PRVAccountant
        from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, compute_safe_domain_size

        # opacus sizes its grid as 2L / mesh without a limit; at large epsilon (L grows with the
        # RDP epsilon) that exhausts memory instead of raising. Check the size first.
        delta_error = delta / 1000.0
        counts = [count for _, _, count in history]
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # opacus' numpy overflow inside the domain search
            half_width = compute_safe_domain_size(
                [PoissonSubsampledGaussianPRV(q, m) for m, q, _ in history],
                counts,
                eps_error=eps_error,
                delta_error=delta_error,
            )
        mesh = eps_error / math.sqrt(sum(counts) * math.log(12.0 / delta_error) / 2.0)
        grid = 2.0 * half_width / mesh
        if not math.isfinite(grid) or grid > PRV_MAX_GRID:
            raise ArithmeticError(
                f"its discretisation grid would have {grid:.3g} points (limit {PRV_MAX_GRID:.0e}); "
                f"epsilon is too large for the PRV accountant here"
            )
        accountant = PRVAccountant()
        accountant.history = list(history)
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow in opacus' PRV convolution
            eps = float(accountant.get_epsilon(delta, eps_error=eps_error))
        if not math.isfinite(eps) or eps < 0:
            raise ArithmeticError(f"opacus PRV returned {eps!r}")
        return eps, "prv"
    except (ArithmeticError, RuntimeError, ValueError, FloatingPointError, OverflowError) as exc:
        notes.append(f"prv: opacus' PRV accountant failed ({type(exc).__name__}: {exc}); fell back to rdp")
        return _rdp(atoms, delta, notes), "rdp"


def compute_epsilon(
    event: DpEvent, delta: float, accountant: str = "rdp", *, prv_eps_error: float = 0.01
) -> EpsilonResult:
    """epsilon of `event` at total `delta` under `accountant`, with the accountant that answered
    and any warnings (fallbacks, clamps). See the module docstring for each accountant.
    """
    delta = check_delta(delta)
    check_choice("accountant", accountant, ACCOUNTANTS)
    prv_eps_error = check_positive("prv_eps_error", prv_eps_error)
    atoms = flatten(event)
    if atoms.non_private:
        return EpsilonResult(
            math.inf, delta, accountant, accountant, ("the event contains a NonPrivateEvent: no DP guarantee",)
        )
    notes: list[str] = []
    used = accountant
    if accountant == "basic":
        eps = _basic(atoms, delta)
    elif accountant == "advanced":
        eps = _advanced(atoms, delta)
    elif accountant == "rdp":
        eps = _rdp(atoms, delta, notes)
    elif accountant == "prv":
        eps, used = _prv(atoms, delta, notes, prv_eps_error)
    else:
        if atoms.sampled:
            raise ValueError(
                "accountant 'gdp' is exact only for compositions of GaussianEvent; the event "
                "contains Poisson-subsampled steps (use 'rdp' or 'prv')"
            )
        mu = math.sqrt(sum(count / (m * m) for m, count in atoms.gaussian.items()))
        eps = 0.0 if mu == 0 else gdp_epsilon(mu, delta)
    return EpsilonResult(float(eps), delta, accountant, used, tuple(notes))


def epsilon(event: DpEvent, delta: float, accountant: str = "rdp") -> float:
    """epsilon of `event` at `delta` under `accountant` ("rdp", "prv", "basic", "advanced", "gdp").

    Fallbacks and clamps are emitted as `AccountingFallbackWarning`s; use `compute_epsilon` to get
    them as data (the ledger records them as flags).
    """
    result = compute_epsilon(event, delta, accountant)
    for note in result.warnings:
        warnings.warn(note, AccountingFallbackWarning, stacklevel=2)
    return result.epsilon


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    count: int = 1,
    accountant: str = "rdp",
    sampling_probability: float = 1.0,
    event_factory: Callable[[float], DpEvent] | None = None,
    rtol: float = 1e-4,
) -> float:
    """The smallest noise multiplier (up to `rtol`) whose `count`-fold composition stays within
    (target_epsilon, delta) under `accountant`; the returned value never overshoots the target.

    By default the event is ``SelfComposedEvent(GaussianEvent(s), count)`` (or the Poisson-subsampled
    step when ``sampling_probability < 1``); pass `event_factory(s) -> DpEvent` for any other
    one-parameter family that gets more private as s grows. The search brackets s by doubling and
    bisects in log space, keeping the side that satisfies the target.
    """
    target_epsilon = check_epsilon(target_epsilon, "target_epsilon")
    delta = check_delta(delta)
    count = check_int("count", count, 1)
    check_choice("accountant", accountant, ACCOUNTANTS)
    sampling_probability = check_in_range("sampling_probability", sampling_probability, 0.0, 1.0, low_open=True)
    rtol = check_in_range("rtol", rtol, 0.0, 0.5, low_open=True)
    if event_factory is None:

        def event_factory(s: float) -> DpEvent:
            step = (
                GaussianEvent(s)
                if sampling_probability == 1.0
                else PoissonSampledGaussianEvent(s, sampling_probability)
            )
            return SelfComposedEvent(step, count)

    def ok(s: float) -> bool:
        return compute_epsilon(event_factory(s), delta, accountant).epsilon <= target_epsilon

    hi = 1.0
    while not ok(hi):
        hi *= 2.0
        if hi > 1e9:
            raise ValueError(
                f"target_epsilon={target_epsilon!r} is not reachable at delta={delta!r} with "
                f"accountant {accountant!r} for any noise multiplier up to 1e9"
            )
    lo = hi / 2.0
    while ok(lo):
        hi, lo = lo, lo / 2.0
        if lo < 1e-9:
            return hi
    while hi / lo - 1.0 > rtol:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_sigma(
    sensitivity: float, target_epsilon: float, delta: float, count: int = 1, accountant: str = "rdp", rtol: float = 1e-4
) -> float:
    """sigma for `count` Gaussian releases of l2-sensitivity `sensitivity` to reach (target_epsilon, delta)."""
    sensitivity = check_positive("sensitivity", sensitivity)
    return sensitivity * calibrate_noise_multiplier(target_epsilon, delta, count, accountant, rtol=rtol)


def epsilons(
    event: DpEvent, delta: float, accountants: Sequence[str] = ("basic", "advanced", "rdp", "prv")
) -> dict[str, EpsilonResult]:
    """`compute_epsilon` under several accountants (for reports and the CLI)."""
    return {name: compute_epsilon(event, delta, name) for name in accountants}
