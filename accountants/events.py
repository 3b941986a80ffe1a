"""DP events: immutable descriptions of what a mechanism did (in the style of Google's dp-accounting).

Mechanisms never compute epsilon themselves; they describe the noisy release as an event, the
federated core puts the event into the message it sends, and the ledger / accountants compose
events into an epsilon (`accountants.composition`). Every event is a frozen dataclass with
``to_dict()``; `event_from_dict` restores it.

* `GaussianEvent(noise_multiplier)`: one Gaussian mechanism with sigma = noise_multiplier * Delta.
* `PoissonSampledGaussianEvent(noise_multiplier, sampling_probability)`: one step of DP-SGD
  (opacus): Poisson subsampling with rate q, then the Gaussian mechanism.
* `SelfComposedEvent(event, count)`: `event` run `count` times (adaptively).
* `ComposedEvent(events)`: the (adaptive) composition of different events.
* `NonPrivateEvent()`: a release with no guarantee (e.g. raw class centers). Any composition that
  contains it has epsilon = inf.

Units of privacy. An (ε, δ) guarantee is meaningless without the neighbour relation it is stated
for. Every elementary event may carry ``unit``, one of `PRIVACY_UNITS`:

* ``"image"``: datasets differing in one face image (DP-SGD's per-example clipping);
* ``"identity"``: datasets differing in all images of one person;
* ``"class-center"``: sets of class centers differing in one center (PrivacyFace Thm 2, the naive
  W̃ of its App. A.2.2);
* ``"client"``: federations differing in one client's whole data set.

Compositions inherit the unit of their parts and refuse to mix two units (`UnitMismatchError`):
composing a per-image guarantee with a per-class-center one has no meaning until one of them is
converted with a proof (`accountants.composition.epsilon_for_unit`). ``unit=None`` means "not
stated" and composes only with other unstated events; a `NonPrivateEvent` composes with any unit
(the composition is ε = ∞ whatever the relation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from accountants._validation import check_in_range, check_int, check_positive

PRIVACY_UNITS = ("image", "identity", "class-center", "client")
"""The neighbour relations an event can be stated for (see the module docstring)."""


class UnitMismatchError(ValueError):
    """Events stated for different units of privacy were composed."""


def check_unit(unit: Any, name: str = "unit") -> str | None:
    """``None`` or one of `PRIVACY_UNITS`; anything else is a ValueError naming the value."""
    if unit is not None and unit not in PRIVACY_UNITS:
        raise ValueError(f"{name} must be one of {list(PRIVACY_UNITS)} or None; got {unit!r}")
    return unit


def common_unit(events: Iterable["DpEvent"]) -> str | None:
    """The one unit shared by ``events`` (NonPrivateEvent is neutral); UnitMismatchError if two differ."""
    units: dict[str, None] = {}
    unstated = False
    for event in events:
        if isinstance(event, NonPrivateEvent):
            continue
        if event.unit is None:
            unstated = True
        else:
            units.setdefault(event.unit, None)
    if len(units) > 1 or (units and unstated):
        named = list(units) + (["unstated"] if unstated else [])
        raise UnitMismatchError(
            f"cannot compose events stated for different units of privacy {named}: convert them to one "
            "unit with a proof first (accountants.composition.epsilon_for_unit, e.g. group privacy from "
            "'image' to 'identity')"
        )
    return next(iter(units), None)


class DpEvent:
    """Base class of all events."""

    kind: str = "abstract"

    @property
    def unit(self) -> str | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class GaussianEvent(DpEvent):
    """The Gaussian mechanism with noise standard deviation `noise_multiplier` x l2-sensitivity."""

    noise_multiplier: float
    unit: str | None = None
    kind: str = field(default="gaussian", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", check_positive("noise_multiplier", self.noise_multiplier))
        check_unit(self.unit)

    def to_dict(self) -> dict[str, Any]:
        return _with_unit({"type": self.kind, "noise_multiplier": self.noise_multiplier}, self.unit)


@dataclass(frozen=True)
class PoissonSampledGaussianEvent(DpEvent):
    """One Poisson-subsampled Gaussian step (DP-SGD): sampling rate q, then Gaussian noise."""

    noise_multiplier: float
    sampling_probability: float
    unit: str | None = None
    kind: str = field(default="poisson_sampled_gaussian", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", check_positive("noise_multiplier", self.noise_multiplier))
        object.__setattr__(
            self,
            "sampling_probability",
            check_in_range("sampling_probability", self.sampling_probability, 0.0, 1.0, low_open=True),
        )
        check_unit(self.unit)

    def to_dict(self) -> dict[str, Any]:
        return _with_unit(
            {
                "type": self.kind,
                "noise_multiplier": self.noise_multiplier,
                "sampling_probability": self.sampling_probability,
            },
            self.unit,
        )


@dataclass(frozen=True)
class SelfComposedEvent(DpEvent):
    """`event` composed with itself `count` times (count 0 is the empty composition)."""

    event: DpEvent
    count: int
    kind: str = field(default="self_composed", init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.event, DpEvent):
            raise ValueError(f"event must be a DpEvent; got {self.event!r}")
        object.__setattr__(self, "count", check_int("count", self.count, 0))

    @property
    def unit(self) -> str | None:
        return self.event.unit

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "event": self.event.to_dict(), "count": self.count}


@dataclass(frozen=True)
class ComposedEvent(DpEvent):
    """The adaptive composition of several events (an empty tuple is the empty composition)."""

    events: tuple[DpEvent, ...]
    kind: str = field(default="composed", init=False, repr=False)

    def __post_init__(self) -> None:
        events = tuple(self.events)
        for position, event in enumerate(events):
            if not isinstance(event, DpEvent):
                raise ValueError(f"events[{position}] must be a DpEvent; got {event!r}")
        common_unit(events)  # refuses a mix of units
        object.__setattr__(self, "events", events)

    @property
    def unit(self) -> str | None:
        return common_unit(self.events)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "events": [event.to_dict() for event in self.events]}


@dataclass(frozen=True)
class NonPrivateEvent(DpEvent):
    """A release without any DP guarantee; composing with it gives epsilon = inf."""

    kind: str = field(default="non_private", init=False, repr=False)

    @property
    def unit(self) -> str | None:
        return None  # no guarantee under any relation

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind}


def _with_unit(data: dict[str, Any], unit: str | None) -> dict[str, Any]:
    if unit is not None:
        data["unit"] = unit
    return data


def event_from_dict(data: dict[str, Any]) -> DpEvent:
    """Rebuild an event from its ``to_dict()`` form."""
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError(f"an event dict needs a 'type' key; got {data!r}")
    kind = data["type"]
    if kind == "gaussian":
        return GaussianEvent(data["noise_multiplier"], unit=data.get("unit"))
    if kind == "poisson_sampled_gaussian":
        return PoissonSampledGaussianEvent(
            data["noise_multiplier"], data["sampling_probability"], unit=data.get("unit")
        )
    if kind == "self_composed":
        return SelfComposedEvent(event_from_dict(data["event"]), data["count"])
    if kind == "composed":
        return ComposedEvent(tuple(event_from_dict(item) for item in data["events"]))
    if kind == "non_private":
        return NonPrivateEvent()
    raise ValueError(
        f"event type must be one of ['gaussian', 'poisson_sampled_gaussian', 'self_composed', "
        f"'composed', 'non_private']; got {kind!r}"
    )


# --------------------------------------------------------------------------------------------
# Flattening for the accountants
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Atoms:
    """An event flattened into its elementary mechanisms with multiplicities.

    ``gaussian``: {noise_multiplier: count}; ``sampled``: {(noise_multiplier, q): count};
    ``non_private``: whether a NonPrivateEvent occurs with a positive count.
    """

    gaussian: dict[float, int]
    sampled: dict[tuple[float, float], int]
    non_private: bool

    @property
    def total(self) -> int:
        return sum(self.gaussian.values()) + sum(self.sampled.values())

    def items(self) -> Iterator[tuple[DpEvent, int]]:
        for multiplier, count in self.gaussian.items():
            yield GaussianEvent(multiplier), count
        for (multiplier, q), count in self.sampled.items():
            yield PoissonSampledGaussianEvent(multiplier, q), count


def flatten(event: DpEvent) -> Atoms:
    """Flatten nested compositions into `Atoms` (the order of adaptive composition is irrelevant
    to every accountant here)."""
    if not isinstance(event, DpEvent):
        raise ValueError(f"event must be a DpEvent; got {event!r}")
    gaussian: dict[float, int] = {}
    sampled: dict[tuple[float, float], int] = {}
    non_private = False

    def visit(node: DpEvent, multiplicity: int) -> None:
        nonlocal non_private
        if multiplicity == 0:
            return
        if isinstance(node, GaussianEvent):
            gaussian[node.noise_multiplier] = gaussian.get(node.noise_multiplier, 0) + multiplicity
        elif isinstance(node, PoissonSampledGaussianEvent):
            if node.sampling_probability == 1.0:
                gaussian[node.noise_multiplier] = gaussian.get(node.noise_multiplier, 0) + multiplicity
            else:
                key = (node.noise_multiplier, node.sampling_probability)
                sampled[key] = sampled.get(key, 0) + multiplicity
        elif isinstance(node, SelfComposedEvent):
            visit(node.event, multiplicity * node.count)
        elif isinstance(node, ComposedEvent):
            for child in node.events:
                visit(child, multiplicity)
        elif isinstance(node, NonPrivateEvent):
            non_private = True
        else:
            raise ValueError(f"unsupported event type {type(node).__name__}")

    visit(event, 1)
    return Atoms(gaussian=gaussian, sampled=sampled, non_private=non_private)


def compose(events: Iterable[DpEvent]) -> DpEvent:
    """Convenience: a `ComposedEvent` of the given events (a single event is returned as is)."""
    events = tuple(events)
    if len(events) == 1:
        return events[0]
    return ComposedEvent(events)


def gaussian_mu(event: DpEvent) -> float:
    """The exact GDP parameter of a composition of plain Gaussian events: sqrt(sum count/s^2).

    (Dong, Roth & Su 2022, Cor. 3.3.) Raises ValueError for subsampled events; inf for non-private.
    """
    atoms = flatten(event)
    if atoms.non_private:
        return math.inf
    if atoms.sampled:
        raise ValueError(
            "the exact Gaussian (GDP) composition supports only GaussianEvent; "
            f"the event contains Poisson-subsampled steps {sorted(atoms.sampled)}"
        )
    return math.sqrt(sum(count / (multiplier * multiplier) for multiplier, count in atoms.gaussian.items()))
