"""Formal accounting of one federated run, read from its wire log.

Every message a client sends is a release. Its DP event (set by the method that made it) goes
into a `accountants.PrivacyLedger` under the sending client and the round. Two ledgers are kept:

* ``centers``: every upload other than the backbone (class centers, cluster centers, their
  noisy versions, FedFR's public-class embeddings trained against private data): the class
  information that FedFace / FedGC / FedFR / PrivacyFace make claims about;
* ``everything``: every upload, including the backbone. A backbone sent without DP-SGD carries no
  event, which means no guarantee: it is recorded as `NonPrivateEvent` so the composition is ∞.
  With DP-SGD (Abadi et al. 2016) each backbone upload carries the event of the DP-SGD steps
  behind it, so ε over everything is finite when the class information is private too. (A
  method that uploads class embeddings trained by the same DP-SGD steps sends two messages with
  the same event; they are composed as two releases, a valid but loose bound.)

δ is the scenario's, or 1/|D| (PrivacyFace §4: δ = 1/|D| with |D| the client's images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

BACKBONE_KINDS = ("backbone", "backbone_gradient")
NON_PRIVATE_NOTE = "contains a NonPrivateEvent"


@dataclass
class RunPrivacy:
    """Formal ε of one run per accountant, for the center-like releases and for everything."""

    delta: float
    centers_epsilon: dict[str, float] = field(default_factory=dict)
    everything_epsilon: dict[str, float] = field(default_factory=dict)
    centers_per_round: dict[str, list[float]] = field(default_factory=dict)
    per_party: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    released_kinds: list[str] = field(default_factory=list)
    backbone_private: bool | None = None  # None: no backbone left a client; True: every one carried a DP event
    guarantee: str = ""


def _client_uploads(messages: Iterable[Any]) -> list[Any]:
    return [m for m in messages if m.sender.startswith("client:")]


def account_run(messages: Iterable[Any], delta: float, accountants: Iterable[str], rounds: int) -> RunPrivacy:
    """Compose the DP events of every client upload in ``messages`` (a `WireLog`)."""
    from accountants import NonPrivateEvent, PrivacyLedger

    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    accountants = list(accountants)
    uploads = _client_uploads(messages)
    centers, everything = PrivacyLedger(), PrivacyLedger()
    released = sorted({m.kind for m in uploads})
    for m in uploads:
        event = m.event if m.event is not None else NonPrivateEvent()
        everything.record(m.sender, m.round, event, note=m.kind)
        if m.kind not in BACKBONE_KINDS:
            centers.record(m.sender, m.round, event, note=m.kind)
    backbones = [m for m in uploads if m.kind in BACKBONE_KINDS]
    result = RunPrivacy(delta=delta, released_kinds=released,
                        backbone_private=all(m.event is not None and not isinstance(m.event, NonPrivateEvent)
                                             for m in backbones) if backbones else None)
    for acc in accountants:
        result.everything_epsilon[acc] = everything.epsilon(delta, accountant=acc) if len(everything) else 0.0
        if len(centers) == 0:
            result.centers_epsilon[acc] = 0.0
            result.centers_per_round[acc] = [0.0] * rounds
            continue
        result.centers_epsilon[acc] = centers.epsilon(delta, accountant=acc)
        table = centers.table(delta, accountant=acc)
        per_round: list[float] = []
        for r in range(1, rounds + 1):
            worst = [float(row["epsilon"]) for row in table if row["round"] == r]
            per_round.append(max(worst) if worst else (per_round[-1] if per_round else 0.0))
        result.centers_per_round[acc] = per_round
    primary = "rdp" if "rdp" in accountants else accountants[0]
    if len(centers):
        for row in centers.table(delta, accountant=primary):
            result.per_party.append({"party": row["party"], "round": int(row["round"]), "epsilon": float(row["epsilon"]),
                                     "accountant": primary, "delta": delta})
    # "no DP guarantee" for a release without noise is what the guarantee line already says: a
    # flag is kept for what the line does not show (e.g. the classic calibration used at ε >= 1)
    result.flags = [f for f in dict.fromkeys([*centers.flags, *everything.flags]) if NON_PRIVATE_NOTE not in f]
    result.guarantee = _guarantee(result, primary)
    return result


def _guarantee(p: RunPrivacy, accountant: str) -> str:
    center_kinds = [k for k in p.released_kinds if k not in BACKBONE_KINDS]
    eps_c = p.centers_epsilon.get(accountant, math.nan)
    eps_all = p.everything_epsilon.get(accountant, math.nan)
    if not center_kinds:
        part = "no class information leaves a client"
    elif math.isinf(eps_c):
        part = f"none for {', '.join(center_kinds)}: it reaches the server without noise"
    else:
        part = f"({eps_c:.3g}, {p.delta:.2g})-DP per client for {', '.join(center_kinds)} ({accountant})"
    if p.backbone_private is False:
        part += "; backbone updates carry no DP guarantee (no DP-SGD)"
    elif p.backbone_private:
        if math.isfinite(eps_all):
            part += (f"; ({eps_all:.3g}, {p.delta:.2g})-DP per client for all uploads incl. the backbone "
                     f"(DP-SGD, {accountant})")
        else:
            part += "; the backbone is trained with DP-SGD, but all uploads together carry no guarantee"
    return part
