"""The privacy ledger: every noisy release, per party and per round, and its epsilon.

The federated core hands the ledger the DP event of every message it sends
(``ledger.record("client:3", round, event)``); the ledger answers epsilon per party (or for the
worst party) under any accountant and renders a party x round table of cumulative epsilon.
Accountant fallbacks, clamps and claims that the events do not back are collected in
``ledger.flags`` (plain strings, deduplicated, in order of appearance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accountants._validation import check_choice, check_delta, check_epsilon, check_int
from accountants.composition import ACCOUNTANTS, compute_epsilon
from accountants.events import ComposedEvent, DpEvent, event_from_dict, flatten
from accountants.mechanisms import METHODS

LEDGER_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded release."""

    party: str
    round: int
    event: DpEvent
    note: str = ""
    claimed_epsilon: float | None = None
    claimed_delta: float | None = None
    calibration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "round": self.round,
            "event": self.event.to_dict(),
            "note": self.note,
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_delta": self.claimed_delta,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LedgerEntry":
        return cls(
            party=data["party"],
            round=data["round"],
            event=event_from_dict(data["event"]),
            note=data.get("note", ""),
            claimed_epsilon=data.get("claimed_epsilon"),
            claimed_delta=data.get("claimed_delta"),
            calibration=data.get("calibration"),
        )


class PrivacyLedger:
    """Records DP events per party (e.g. ``"client:3"``) and per round; composes them on demand."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []
        self.flags: list[str] = []

    # ------------------------------------------------------------------ recording
    def flag(self, message: str) -> None:
        """Add a flag (a warning worth showing in a report); duplicates are kept once."""
        if not isinstance(message, str) or not message:
            raise ValueError(f"message must be a non-empty string; got {message!r}")
        if message not in self.flags:
            self.flags.append(message)

    def record(
        self,
        party: str,
        round: int,
        event: DpEvent,
        note: str = "",
        claimed_epsilon: float | None = None,
        claimed_delta: float | None = None,
        calibration: str | None = None,
    ) -> None:
        """Record that `party` made a release described by `event` in `round`.

        If the method claims a per-release guarantee (claimed_epsilon, claimed_delta), the ledger
        checks it against the event with the tightest accountant that supports it ("gdp" for plain
        Gaussian events, else "prv") and flags a claim the event does not back. Pass
        ``calibration="classic"`` when sigma came from the classic Gaussian calibration: a claim at
        epsilon >= 1 is then flagged as outside that theorem's range (whether or not the exact
        accounting happens to back it).
        """
        if not isinstance(party, str) or not party:
            raise ValueError(f"party must be a non-empty string such as 'client:3'; got {party!r}")
        round = check_int("round", round, 0)
        if not isinstance(event, DpEvent):
            raise ValueError(f"event must be a DpEvent; got {event!r}")
        if not isinstance(note, str):
            raise ValueError(f"note must be a string; got {note!r}")
        if (claimed_epsilon is None) != (claimed_delta is None):
            raise ValueError(
                "claimed_epsilon and claimed_delta must be given together; got "
                f"claimed_epsilon={claimed_epsilon!r}, claimed_delta={claimed_delta!r}"
            )
        if claimed_epsilon is not None:
            claimed_epsilon = check_epsilon(claimed_epsilon, "claimed_epsilon")
            claimed_delta = check_delta(claimed_delta, "claimed_delta")
        if calibration is not None:
            check_choice("calibration", calibration, METHODS)
        entry = LedgerEntry(party, round, event, note, claimed_epsilon, claimed_delta, calibration)
        self.entries.append(entry)
        if calibration == "classic" and claimed_epsilon is not None and claimed_epsilon >= 1.0:
            self.flag(
                f"{party} round {round}: the classic Gaussian calibration was used at epsilon={claimed_epsilon:.6g}; "
                f"its theorem (Dwork & Roth 2014, Thm A.1) covers only epsilon < 1"
            )
        if claimed_epsilon is not None:
            self._check_claim(entry)

    def _check_claim(self, entry: LedgerEntry) -> None:
        claimed_epsilon, claimed_delta = entry.claimed_epsilon, entry.claimed_delta
        if claimed_epsilon is None or claimed_delta is None:
            raise ValueError(
                f"entry needs a claimed (epsilon, delta) to check; got ({claimed_epsilon!r}, {claimed_delta!r})"
            )
        atoms = flatten(entry.event)
        accountant = "gdp" if not atoms.sampled else "prv"
        result = compute_epsilon(entry.event, claimed_delta, accountant)
        self._absorb(result.warnings)
        if result.epsilon > claimed_epsilon * (1.0 + 1e-9) + 1e-12:
            self.flag(
                f"{entry.party} round {entry.round}: claimed (epsilon={entry.claimed_epsilon:.6g}, "
                f"delta={entry.claimed_delta:.3g}) is not backed by the event; the {accountant} accountant "
                f"gives epsilon={result.epsilon:.6g}" + (f" ({entry.note})" if entry.note else "")
            )

    def _absorb(self, notes: tuple[str, ...]) -> None:
        for note in notes:
            self.flag(note)

    # ------------------------------------------------------------------ queries
    def parties(self) -> list[str]:
        """Parties in order of first appearance."""
        seen: dict[str, None] = {}
        for entry in self.entries:
            seen.setdefault(entry.party, None)
        return list(seen)

    def rounds(self) -> list[int]:
        """Rounds with at least one release, ascending."""
        return sorted({entry.round for entry in self.entries})

    def event(self, party: str | None = None, up_to_round: int | None = None) -> ComposedEvent:
        """The composition of a party's events (all parties' if party is None) up to a round."""
        if party is not None:
            self._check_party(party)
        events = tuple(
            entry.event
            for entry in self.entries
            if (party is None or entry.party == party) and (up_to_round is None or entry.round <= up_to_round)
        )
        return ComposedEvent(events)

    def _check_party(self, party: str) -> None:
        if party not in self.parties():
            raise ValueError(f"party must be one of the recorded parties {self.parties()}; got {party!r}")

    def units(self) -> list[str]:
        """The units of privacy the recorded events are stated for (NonPrivateEvent and unstated
        events excluded), in order of first appearance."""
        seen: dict[str, None] = {}
        for entry in self.entries:
            if entry.event.unit is not None:
                seen.setdefault(entry.event.unit, None)
        return list(seen)

    def epsilon(
        self,
        delta: float,
        party: str | None = None,
        accountant: str = "rdp",
        unit: str | None = None,
        group_size: int | None = None,
    ) -> float:
        """epsilon of `party`'s composed releases at `delta`; party=None gives the worst party.

        With no records epsilon is 0. Accountant fallbacks are added to `flags`. A party's events
        stated for different units are refused (`accountants.events.UnitMismatchError`). With
        ``unit``, ε is given for that unit: the events' own, or converted where a proof exists
        (`accountants.units.epsilon_for_unit`; image -> identity needs ``group_size``).
        """
        from accountants.units import epsilon_for_unit

        delta = check_delta(delta)
        check_choice("accountant", accountant, ACCOUNTANTS)
        parties = [party] if party is not None else self.parties()
        if party is not None:
            self._check_party(party)
        worst = 0.0
        seen: dict[DpEvent, float] = {}  # clients of a run often release identical events
        for name in parties:
            event = self.event(name)
            if event in seen:
                worst = max(worst, seen[event])
                continue
            if unit is None:
                result = compute_epsilon(event, delta, accountant)
                self._absorb(result.warnings)
                seen[event] = result.epsilon
            else:
                converted = epsilon_for_unit(event, delta, unit, accountant, group_size)
                self._absorb(tuple(w for w in converted.warnings if "NonPrivateEvent" not in w))
                seen[event] = converted.epsilon
            worst = max(worst, seen[event])
        return worst

    def table(self, delta: float, accountant: str = "rdp") -> list[dict[str, Any]]:
        """Rows {party, round, releases, epsilon} over party x round: cumulative epsilon at `delta`
        of everything the party released up to and including that round (a party without a release
        in a round keeps its previous value)."""
        delta = check_delta(delta)
        check_choice("accountant", accountant, ACCOUNTANTS)
        rows: list[dict[str, Any]] = []
        for party in self.parties():
            cache: dict[int, float] = {}
            for round in self.rounds():
                event = self.event(party, up_to_round=round)
                releases = len(event.events)
                if releases not in cache:
                    result = compute_epsilon(event, delta, accountant)
                    self._absorb(result.warnings)
                    cache[releases] = result.epsilon
                rows.append(
                    {
                        "party": party,
                        "round": round,
                        "releases": releases,
                        "epsilon": cache[releases],
                        "accountant": accountant,
                        "delta": delta,
                    }
                )
        return rows

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": LEDGER_VERSION,
            "entries": [entry.to_dict() for entry in self.entries],
            "flags": list(self.flags),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PrivacyLedger":
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
            raise ValueError(
                f"ledger version must be {LEDGER_VERSION}; got "
                f"{data.get('version') if isinstance(data, dict) else data!r}"
            )
        ledger = cls()
        ledger.entries = [LedgerEntry.from_dict(item) for item in data["entries"]]
        ledger.flags = list(data.get("flags", []))
        return ledger

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"PrivacyLedger({len(self.entries)} releases, {len(self.parties())} parties, {len(self.flags)} flags)"
