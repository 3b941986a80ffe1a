"""Formal accounting of one federated run, read from its wire log, stated per unit of privacy.

Every message a client sends is a release, and its DP event (set by the code that made it) is
stated for a neighbour relation (`accountants.events.PRIVACY_UNITS`). The stage gives, per method:

* ``class information``: every upload but the backbone (class centers, cluster centers, their
  noisy versions, FedFR's public-class embeddings), composed over the run per client, in the unit
  its events are stated for (``class-center`` for DPLC and W̃, ``image`` for embeddings trained
  by DP-SGD);
* ``all uploads``: every upload, backbone included, in the events' common unit; when the units
  differ (a DP-SGD backbone per image beside DPLC clusters per class center) there is no common
  unit and the scope is stated per person instead (below);
* ``per_person``: ε for one person (``identity``) over everything that left the client. Events
  per ``image`` convert by group privacy over k = the largest number of images one identity has
  on a client (`accountants.units`); events per ``class-center`` do not convert (a class center is
  trained on all of a client's data: no proof bounds one person's influence on the others), so
  their presence makes ``per_person`` ∞, as does a backbone sent without DP-SGD.

Each guarantee has a status: ``proven`` where a theorem covers the mechanism as deployed end to
end (`PROOFS`), ``claimed`` where the sender states an event no proof here covers (PrivacyFace's
Algorithm 1: Thm 2 holds for a fixed cluster S, the algorithm picks S from the data), ``none``
for ε = ∞; the pipeline turns ``claimed`` into ``refuted`` when an audit beats the claim.

Claims are checked: each release's claimed (ε, δ) and calibration (from its message's meta) go to
a claims ledger, which flags classic-Gaussian calibration at ε ≥ 1 and claims the event does not
back. δ ≥ 1/n (n = the fewest privacy units a client holds under the guarantee's unit) is flagged
on the guarantee when the scenario allows it (`check_delta_against_units` refuses it otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

BACKBONE_KINDS = ("backbone", "backbone_gradient")
REFERENCE_DELTA = 1e-5
SCOPE_UNITS = {"class information": "class-center", "all uploads": "identity"}  # when no event states one
PER_PERSON_ACCOUNTANT = "rdp"
NON_PRIVATE_NOTE = "contains a NonPrivateEvent"
UNIT_PHRASES = {
    "image": "per face image",
    "identity": "per person",
    "class-center": "per class-center record",
    "client": "per client",
}

PROOFS = {
    "dp-sgd": "DP-SGD: per-example clipping and Poisson-subsampled Gaussian noise (Abadi et al. 2016; RDP of the "
    "sampled Gaussian, Mironov et al. 2019)",
    "noisy_class_centers": "Gaussian mechanism with l2 sensitivity 2 for one replaced unit class center "
    "(PrivacyFace App. A.2.2)",
    "private-dplc": "end-to-end private DPLC (accountants.private_dplc): noisy selection, threshold and "
    "normalisation, one event for all queries",
}
CLAIMED_ALGORITHM1 = (
    "PrivacyFace Thm 2 bounds the sensitivity of a cluster mean for a fixed cluster S; Algorithm 1 "
    "chooses S (the densest neighbourhood) and releases only if |S| >= T, from the data, which no "
    "theorem covers: the per-release (ε, δ) is the paper's claim"
)
CLAIMED_OTHER = "the sender states this DP event; no proof in privaudit covers the mechanism that produced it"


@dataclass
class Guarantee:
    """One formal statement: ``scope`` ("class information" | "all uploads"), ``unit``, ``delta``,
    ε per accountant at ``delta`` and at `REFERENCE_DELTA`, ``status`` (proven | claimed | refuted |
    none), ``basis`` (the proof or the claim), the message kinds it covers, and flags."""

    scope: str
    unit: str | None
    delta: float
    epsilon: dict[str, float]
    epsilon_at_reference_delta: dict[str, float]
    status: str
    basis: str
    kinds: list[str]
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "unit": self.unit,
            "delta": self.delta,
            "epsilon": dict(self.epsilon),
            "epsilon_at_reference_delta": dict(self.epsilon_at_reference_delta),
            "reference_delta": REFERENCE_DELTA,
            "status": self.status,
            "basis": self.basis,
            "kinds": list(self.kinds),
            "flags": list(self.flags),
        }


@dataclass
class RunPrivacy:
    """Formal ε of one run: the guarantees, ε per person, per-round and per-party tables, flags."""

    delta: float
    guarantees: list[Guarantee] = field(default_factory=list)
    per_person: dict[str, Any] = field(default_factory=dict)
    centers_epsilon: dict[str, float] = field(default_factory=dict)
    everything_epsilon: dict[str, float] = field(default_factory=dict)
    centers_per_round: dict[str, list[float]] = field(default_factory=dict)
    per_party: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    released_kinds: list[str] = field(default_factory=list)
    backbone_private: bool | None = None  # None: no backbone left a client
    guarantee: str = ""

    def scope(self, name: str) -> Guarantee | None:
        return next((g for g in self.guarantees if g.scope == name), None)


@dataclass(frozen=True)
class UnitCounts:
    """The fewest privacy units any client holds (n of the δ < 1/n rule), and k of group privacy:
    the most images one identity has on a client."""

    images: int
    identities: int
    max_images_per_identity: int

    def smallest(self, unit: str | None) -> int:
        return {"image": self.images, "identity": self.identities, "class-center": self.identities, "client": 1}.get(
            unit or "", 1
        )


def proof_of(message: Any) -> tuple[str, str]:
    """(status, basis) of one upload's DP event: ``none`` without noise, ``proven`` for the
    mechanisms of `PROOFS`, else ``claimed``."""
    from accountants import NonPrivateEvent
    from accountants.events import flatten

    event = message.event
    if event is None or flatten(event).non_private or isinstance(event, NonPrivateEvent):
        return "none", "no noise: the upload reaches its receivers as computed"
    atoms = flatten(event)
    if atoms.sampled and not atoms.gaussian and event.unit == "image":
        return "proven", PROOFS["dp-sgd"]
    if message.kind == "noisy_class_centers":
        return "proven", PROOFS["noisy_class_centers"]
    if message.kind == "noisy_cluster_centers":
        if message.meta.get("end_to_end_private"):
            return "proven", PROOFS["private-dplc"]
        return "claimed", CLAIMED_ALGORITHM1
    return "claimed", CLAIMED_OTHER


def _combine_status(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    if not statuses or "none" in statuses:
        return "none"
    return "claimed" if "claimed" in statuses else "proven"


def _event_of(message: Any) -> Any:
    from accountants import NonPrivateEvent

    return message.event if message.event is not None else NonPrivateEvent()


def _ledger(uploads: list[Any]) -> Any:
    from accountants import PrivacyLedger

    ledger = PrivacyLedger()
    for m in uploads:
        ledger.record(m.sender, m.round, _event_of(m), note=m.kind)
    return ledger


def check_claims(uploads: list[Any], ledger: Any) -> None:
    """Each release's claimed (ε, δ) and calibration from its message meta into ``ledger`` (a
    `PrivacyLedger` used only for the checks): per elementary release for Algorithm 1 and W̃
    (their claims are per release), for the whole event of the end-to-end variant."""
    from accountants import GaussianEvent
    from accountants.events import flatten

    for m in uploads:
        eps, delta, calibration = m.meta.get("epsilon"), m.meta.get("delta"), m.meta.get("calibration")
        if m.event is None or eps is None or delta is None:
            continue
        if m.meta.get("end_to_end_private"):
            ledger.record(
                m.sender,
                m.round,
                m.event,
                note=m.kind,
                claimed_epsilon=float(eps),
                claimed_delta=float(delta),
                calibration=calibration,
            )
            continue
        for multiplier in sorted(flatten(m.event).gaussian):
            ledger.record(
                m.sender,
                m.round,
                GaussianEvent(multiplier, unit=m.event.unit),
                note=m.kind,
                claimed_epsilon=float(eps),
                claimed_delta=float(delta),
                calibration=calibration,
            )


def _epsilons(
    ledger: Any, delta: float, accountants: list[str], unit: str | None = None, group_size: int | None = None
) -> dict[str, float]:
    if not len(ledger):
        return {acc: 0.0 for acc in accountants}
    return {acc: ledger.epsilon(delta, accountant=acc, unit=unit, group_size=group_size) for acc in accountants}


def _large_delta_flag(unit: str | None, delta: float, counts: UnitCounts) -> list[str]:
    n = counts.smallest(unit)
    if unit is None or delta < 1.0 / n:
        return []
    return [
        f"δ = {delta:.3g} ≥ 1/n = 1/{n} ({UNIT_PHRASES.get(unit, unit)}: the fewest a client holds): releasing "
        "one such record in the clear satisfies this δ; the guarantee is vacuous as stated"
    ]


def _guarantee(scope: str, uploads: list[Any], delta: float, accountants: list[str], counts: UnitCounts) -> Guarantee:
    """One scope's guarantee in its events' common unit (raises UnitMismatchError when mixed)."""
    from accountants.events import common_unit

    ledger = _ledger(uploads)
    # releases without noise state no unit; their (absent) guarantee is about the record they carry
    unit = common_unit(_event_of(m) for m in uploads) or SCOPE_UNITS[scope]
    proofs = [proof_of(m) for m in uploads]
    epsilon = _epsilons(ledger, delta, accountants)
    at_reference = epsilon if math.isclose(delta, REFERENCE_DELTA) else _epsilons(ledger, REFERENCE_DELTA, accountants)
    status = "none" if any(math.isinf(v) for v in epsilon.values()) else _combine_status(s for s, _ in proofs)
    basis = "; ".join(dict.fromkeys(b for s, b in proofs if s != "none" or status == "none"))
    return Guarantee(
        scope,
        unit,
        delta,
        epsilon,
        at_reference,
        status,
        basis,
        sorted({m.kind for m in uploads}),
        _large_delta_flag(unit, delta, counts),
    )


def per_person(uploads: list[Any], delta: float, accountants: list[str], counts: UnitCounts) -> dict[str, Any]:
    """ε per identity over every upload: each unit's releases composed and converted (image ->
    identity by group privacy with k = ``counts.max_images_per_identity``), then summed over units
    by basic composition with δ split equally; ∞ where a part has no proof of conversion.

    Group privacy searches the per-image δ' over many values, so ε per person is given by the RDP
    accountant only (its curve is computed once per event); `PER_PERSON_ACCOUNTANT`."""
    from accountants import UnitConversionError
    from accountants.events import common_unit

    accountants = [PER_PERSON_ACCOUNTANT]

    by_unit: dict[str | None, list[Any]] = {}
    for m in uploads:
        by_unit.setdefault(common_unit([_event_of(m)]), []).append(m)
    k = counts.max_images_per_identity
    share = delta / max(1, len(by_unit))
    epsilon = {acc: 0.0 for acc in accountants}
    reasons: list[str] = []
    for unit, group in by_unit.items():
        kinds = ", ".join(sorted({m.kind for m in group}))
        part = {acc: math.inf for acc in accountants}
        if unit is None:  # NonPrivateEvent (or no event), or an event that states no unit
            private = [m for m in group if proof_of(m)[0] != "none"]
            reasons.append(
                f"{kinds}: "
                + ("the DP event states no unit of privacy" if private else "leaves the client without noise")
            )
        else:
            try:
                part = _epsilons(_ledger(group), share, accountants, unit="identity", group_size=k)
            except UnitConversionError as exc:
                reasons.append(f"{kinds}: {exc}")
        epsilon = {acc: epsilon[acc] + part[acc] for acc in accountants}
    if "image" in by_unit and any(math.isinf(v) for v in epsilon.values()) and not reasons:
        reasons.append(f"group privacy over k = {k} images per identity gives no finite bound at δ = {delta:.3g}")
    finite = all(math.isfinite(v) for v in epsilon.values())
    proofs = [proof_of(m)[0] for m in uploads]
    return {
        "unit": "identity",
        "delta": delta,
        "epsilon": epsilon,
        "group_size": k,
        "status": _combine_status(proofs) if finite else "none",
        "basis": (
            f"events per image converted by group privacy over k = {k} images per identity"
            if "image" in by_unit
            else "events stated per identity"
        ),
        "unbounded_because": reasons,
    }


def account_run(
    messages: Iterable[Any], delta: float, accountants: Iterable[str], rounds: int, counts: UnitCounts
) -> RunPrivacy:
    """Compose the DP events of every client upload in ``messages`` (a `WireLog`)."""
    from accountants import PrivacyLedger, UnitMismatchError

    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    accountants = list(accountants)
    uploads = [m for m in messages if m.sender.startswith("client:")]
    centers = [m for m in uploads if m.kind not in BACKBONE_KINDS]
    backbones = [m for m in uploads if m.kind in BACKBONE_KINDS]
    result = RunPrivacy(
        delta=delta,
        released_kinds=sorted({m.kind for m in uploads}),
        backbone_private=all(proof_of(m)[0] != "none" for m in backbones) if backbones else None,
    )
    if centers:
        info = _guarantee("class information", centers, delta, accountants, counts)
        result.guarantees.append(info)
        result.centers_epsilon = dict(info.epsilon)
        _per_round(result, _ledger(centers), delta, accountants, rounds)
    else:
        result.centers_epsilon = {acc: 0.0 for acc in accountants}
        result.centers_per_round = {acc: [0.0] * rounds for acc in accountants}
    result.per_person = (
        per_person(uploads, delta, accountants, counts)
        if uploads
        else {
            "unit": "identity",
            "delta": delta,
            "epsilon": {acc: 0.0 for acc in accountants},
            "status": "proven",
            "basis": "nothing leaves a client",
            "group_size": counts.max_images_per_identity,
            "unbounded_because": [],
        }
    )
    result.per_person["backbone"] = {None: "absent", True: "dp", False: "none"}[result.backbone_private]
    result.per_person["epsilon_at_reference_delta"] = (
        dict(result.per_person["epsilon"])
        if math.isclose(delta, REFERENCE_DELTA) or not uploads
        else per_person(uploads, REFERENCE_DELTA, accountants, counts)["epsilon"]
    )
    if uploads:
        try:
            everything = _guarantee("all uploads", uploads, delta, accountants, counts)
        except UnitMismatchError:  # no common unit: the per-person statement is the all-uploads one
            pp = result.per_person
            everything = Guarantee(
                "all uploads",
                "identity",
                delta,
                dict(pp["epsilon"]),
                dict(pp["epsilon_at_reference_delta"]),
                pp["status"],
                pp["basis"],
                result.released_kinds,
                list(pp["unbounded_because"]),
            )
        result.guarantees.append(everything)
        result.everything_epsilon = dict(everything.epsilon)
    claims = PrivacyLedger()
    check_claims(uploads, claims)
    result.flags = [f for f in dict.fromkeys(claims.flags) if NON_PRIVATE_NOTE not in f]
    result.guarantee = guarantee_sentence(result)
    return result


def _per_round(result: RunPrivacy, ledger: Any, delta: float, accountants: list[str], rounds: int) -> None:
    primary = "rdp" if "rdp" in accountants else accountants[0]
    for acc in accountants:
        table = ledger.table(delta, accountant=acc)
        per_round: list[float] = []
        for r in range(1, rounds + 1):
            worst = [float(row["epsilon"]) for row in table if row["round"] == r]
            per_round.append(max(worst) if worst else (per_round[-1] if per_round else 0.0))
        result.centers_per_round[acc] = per_round
        if acc == primary:
            unit = ledger.units()[0] if ledger.units() else None
            result.per_party = [
                {
                    "party": row["party"],
                    "round": int(row["round"]),
                    "epsilon": float(row["epsilon"]),
                    "accountant": acc,
                    "delta": delta,
                    "unit": unit,
                }
                for row in table
            ]


def _phrase(g: Guarantee, accountant: str) -> str:
    eps = g.epsilon.get(accountant, math.nan)
    unit = UNIT_PHRASES.get(g.unit or "", "unit not stated")
    if g.status == "none" or math.isinf(eps):
        return f"no guarantee for {g.scope} ({', '.join(g.kinds)})"
    word = {"proven": "", "claimed": "claimed ", "refuted": "refuted claim: "}[g.status]
    return f"{word}({eps:.3g}, {g.delta:.2g})-DP {unit} for {g.scope} ({accountant})"


def guarantee_sentence(p: RunPrivacy, accountant: str | None = None) -> str:
    """One line naming scope, unit, δ and status of each guarantee, and ε per person."""
    accountant = accountant or ("rdp" if "rdp" in p.centers_epsilon else next(iter(p.centers_epsilon), "rdp"))
    parts = [_phrase(g, accountant) for g in p.guarantees]
    if p.scope("class information") is None:
        parts.insert(0, "no class information leaves a client")
    eps = p.per_person.get("epsilon", {}).get(accountant, math.inf)
    if math.isfinite(eps):
        parts.append(f"per person ({eps:.3g}, {p.delta:.2g})")
    else:
        parts.append("per person: no finite bound")
    return "; ".join(parts)


def mark_refuted(p: RunPrivacy, refuted_by: list[str]) -> None:
    """An audit beat the class information's claim: its status (and the all-uploads and per-person
    ones resting on it) becomes ``refuted``, and the sentence says so."""
    if not refuted_by:
        return
    for g in p.guarantees:
        if g.status == "claimed":
            g.status = "refuted"
            g.flags.append("refuted by " + "; ".join(refuted_by))
        elif g.status == "proven":
            p.flags.append(
                f"an audit ({'; '.join(refuted_by)}) beats a proven guarantee of {g.scope}: "
                "a bug in the mechanism or in the audit"
            )
    if p.per_person.get("status") == "claimed":
        p.per_person["status"] = "refuted"
    p.guarantee = guarantee_sentence(p)
