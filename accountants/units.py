"""ε in a chosen unit of privacy: the event's own unit, or a conversion that a proof backs.

An event is stated for a neighbour relation (`accountants.events.PRIVACY_UNITS`). A reader asks
for another one, most often the person: "what does this release reveal about one identity, all of
whose images the client holds?". The only conversion implemented is the one with a textbook
proof:

* ``image`` -> ``identity`` by **group privacy** (Dwork & Roth 2014, Thm 2.2 for pure DP; Vadhan
  2017, Lemma 2.2 for approximate DP): an (ε, δ)-DP mechanism under one-image neighbours is
  (kε, k·e^((k-1)ε)·δ)-DP for datasets that differ in k images. With k = the largest number of
  images one identity has on a client, that is a per-person guarantee. The per-image δ' is searched
  so that k·e^((k-1)ε(δ'))·δ' <= δ and kε(δ') is smallest.

Every other conversion (``class-center`` -> ``identity``: a class center is trained on all of a
client's data, so one person changes every center; ``client`` -> anything finer without the
relation's details) is refused with `UnitConversionError`: no proof, no number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from accountants._validation import check_delta, check_int
from accountants.composition import compute_epsilon
from accountants.events import DpEvent, check_unit, flatten


class UnitConversionError(ValueError):
    """No proof converts a guarantee stated for one unit of privacy into another."""


@dataclass(frozen=True)
class UnitEpsilon:
    """ε at total δ for ``unit``, converted from the event's own unit ``from_unit``.

    ``group_size`` is the k of group privacy (1 when no conversion was needed) and
    ``inner_delta`` the δ' the event's own guarantee is evaluated at.
    """

    epsilon: float
    delta: float
    unit: str
    from_unit: str | None
    accountant: str
    group_size: int
    inner_delta: float
    warnings: tuple[str, ...] = ()

    @property
    def proof(self) -> str:
        if self.group_size == 1 or self.from_unit == self.unit:
            return "the event's own guarantee"
        return (
            f"group privacy (Vadhan 2017, Lemma 2.2) over k = {self.group_size} {self.from_unit}s per "
            f"{self.unit}: ({self.group_size}·ε', {self.group_size}·e^(({self.group_size}-1)ε')·δ')"
        )


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(ε, δ)-DP for single records implies (kε, k·e^((k-1)ε)·δ)-DP for groups of k records."""
    k = check_int("k", k, 1)
    if math.isinf(epsilon):
        return math.inf, delta
    exponent = (k - 1) * epsilon
    return k * epsilon, (k * math.exp(exponent) * delta if exponent < 700 else math.inf)


def epsilon_for_unit(
    event: DpEvent, delta: float, unit: str, accountant: str = "rdp", group_size: int | None = None
) -> UnitEpsilon:
    """ε at total ``delta`` of ``event`` for the neighbour relation ``unit``.

    Same unit: the accountant's answer. ``image`` -> ``identity``: group privacy over
    ``group_size`` images per identity (required). A `NonPrivateEvent` anywhere gives ε = ∞ for
    every unit. Any other pair raises `UnitConversionError`; an event without a stated unit too.
    """
    delta = check_delta(delta)
    check_unit(unit)
    if unit is None:
        raise ValueError("unit must be one of the privacy units, not None")
    if flatten(event).non_private:
        return UnitEpsilon(
            math.inf,
            delta,
            unit,
            event.unit,
            accountant,
            1,
            delta,
            ("the event contains a NonPrivateEvent: no DP guarantee",),
        )
    source = event.unit
    if source is None:
        raise UnitConversionError(f"the event states no unit of privacy; cannot give ε per {unit}")
    if source == unit:
        result = compute_epsilon(event, delta, accountant)
        return UnitEpsilon(result.epsilon, delta, unit, source, accountant, 1, delta, result.warnings)
    if (source, unit) != ("image", "identity"):
        raise UnitConversionError(
            f"no proof converts a guarantee per {source} into one per {unit}; the only conversion offered is "
            "image -> identity by group privacy"
        )
    if group_size is None:
        raise ValueError(
            "group_size (the largest number of images one identity has on a client) is needed "
            "to convert 'image' to 'identity'"
        )
    k = check_int("group_size", group_size, 1)
    if k == 1:
        result = compute_epsilon(event, delta, accountant)
        return UnitEpsilon(result.epsilon, delta, unit, source, accountant, 1, delta, result.warnings)
    return _search_group_delta(event, delta, unit, source, accountant, k)


def _search_group_delta(event: DpEvent, delta: float, unit: str, source: str, accountant: str, k: int) -> UnitEpsilon:
    """The largest per-image δ' on a geometric grid (then bisection) with k·e^((k-1)ε(δ'))·δ' <= δ;
    ε(δ') falls as δ' grows, so the largest feasible δ' gives the smallest kε(δ')."""
    notes: list[str] = []

    def evaluate(inner: float) -> tuple[float, bool]:
        result = compute_epsilon(event, inner, accountant)
        notes.extend(w for w in result.warnings if w not in notes)
        eps_group, delta_group = group_privacy(result.epsilon, inner, k)
        return eps_group, delta_group <= delta

    previous_infeasible = None
    feasible_at, best = None, math.inf
    for step in range(0, 61):  # δ/k down to δ/k · 1e-15 in quarter decades
        inner = delta / k * 10.0 ** (-step / 4.0)
        eps_group, ok = evaluate(inner)
        if math.isinf(eps_group):
            break
        if ok:
            feasible_at, best = inner, eps_group
            break
        previous_infeasible = inner
    if feasible_at is None:
        return UnitEpsilon(
            math.inf,
            delta,
            unit,
            source,
            accountant,
            k,
            0.0,
            tuple(notes)
            + (
                f"group privacy over k = {k}: no per-image δ' down to "
                f"{delta / k * 1e-15:.3g} satisfies k·e^((k-1)ε)·δ' <= δ",
            ),
        )
    if previous_infeasible is not None:
        lo, hi = math.log(feasible_at), math.log(previous_infeasible)
        for _ in range(12):
            mid = math.exp((lo + hi) / 2.0)
            eps_group, ok = evaluate(mid)
            if ok:
                lo, feasible_at, best = math.log(mid), mid, eps_group
            else:
                hi = math.log(mid)
    return UnitEpsilon(best, delta, unit, source, accountant, k, feasible_at, tuple(notes))
