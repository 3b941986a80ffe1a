"""One verdict rule for every method: (class information, backbone, audit, attacks) -> verdict.

The inputs, each read from a `reports.schema.MethodResult`:

* **class information** (``C``): the status of the ``class information`` guarantee — ``absent``
  (no class information leaves a client), ``proven``, ``claimed``, ``refuted`` or ``none`` (no noise);
* **backbone** (``B``): ``absent`` (no backbone leaves a client), ``dp`` (every backbone upload
  carries a proven DP event: DP-SGD) or ``none`` (sent without DP);
* **audit** (``A``): whether a distinguishing game beat a claim (``refuted``) — already folded
  into ``C`` by the pipeline, and read here too so an older document cannot hide it;
* **attacks** (``E``): ``leak`` when some attack's success interval lies above its chance level,
  else ``no evidence`` (which is not evidence of privacy: the attack may be weak).

The table, first matching row wins (`RULES` holds it as data; `verdict_of` applies it):

| rule | C | B | verdict | level |
|---|---|---|---|---|
| R1 | refuted (or A = refuted) | any | claim refuted by audit | bad |
| R2 | none | any | no guarantee: class information leaves without noise | bad |
| R3 | absent | absent | nothing leaves a client | good |
| R4 | any | none | ... ; backbone not DP-protected (no DP-SGD): no bound per person | warn |
| R5 | claimed | dp / absent | claimed, not proven: ... | warn |
| R6 | proven / absent | dp / absent, ε per person finite | DP per person, ε ≤ x (proven) | good |
| R7 | proven | dp / absent, ε per person ∞ | DP per unit of each part, no bound per person | warn |

A ``leak`` (E) is appended to the text of every verdict, and turns ``good`` into ``warn``: a
guarantee at a large ε can coexist with a successful attack, but a reader must see both. A backbone
without DP-SGD downgrades every method the same way (R4), whatever its class information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

RULES: tuple[tuple[str, str], ...] = (
    ("R1", "class-information claim refuted by an audit"),
    ("R2", "class information leaves a client without noise"),
    ("R3", "nothing leaves a client"),
    ("R4", "backbone sent without DP: no bound per person"),
    ("R5", "class-information guarantee claimed, not proven"),
    ("R6", "every upload covered by a proof, finite ε per person"),
    ("R7", "proven per unit of each part, but no conversion to a bound per person"),
)
UNIT_WORDS = {
    "image": "per face image",
    "identity": "per person",
    "class-center": "per class-center record",
    "client": "per client",
}


@dataclass(frozen=True)
class Verdict:
    text: str
    level: str
    rule: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "level": self.level, "rule": self.rule}


def _fmt(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:.3g}"


def _tightest(epsilons: dict[str, Any]) -> float:
    values = [float(v) for v in epsilons.values()]
    return min(values) if values else math.inf


def class_information_status(m: Any) -> str:
    """``absent`` | ``proven`` | ``claimed`` | ``refuted`` | ``none`` (older results: from ε alone,
    and a finite ε can then only be ``claimed``: those documents do not say what proves it)."""
    g = m.privacy.guarantee_of("class information")
    if g is not None:
        return str(g["status"])
    if m.privacy.per_person:  # schema 1.2: no class-information guarantee = none left a client
        return "absent"
    tight = m.privacy.tightest()
    if tight is None or tight[1] == 0:
        return "absent"
    return "none" if math.isinf(tight[1]) else "claimed"


def backbone_status(m: Any) -> str:
    """``absent`` | ``dp`` | ``none``: whether the backbone left a client, and with DP-SGD
    (``privacy.per_person["backbone"]``; older results: from the all-uploads ε)."""
    recorded = m.privacy.per_person.get("backbone") if m.privacy.per_person else None
    if recorded is not None:
        return str(recorded)
    if not any(k.startswith("backbone") for k in m.shares):
        return "absent"
    tight_all = m.privacy.tightest_all()
    return "dp" if tight_all is not None and math.isfinite(tight_all[1]) else "none"


def attack_evidence(m: Any) -> str | None:
    """A short phrase naming the first attack whose success interval lies above its chance level."""
    from reports.schema import COMPARISON_KINDS

    for a in m.attacks:
        metric = a.success_metric
        if a.target_kind in COMPARISON_KINDS:  # a hypothetical release no party observed
            continue
        if metric is None or metric not in a.intervals:
            continue
        chance = a.metrics.get(f"{metric}_chance")
        low = float(a.intervals[metric][0])
        if chance is not None and math.isfinite(float(chance)) and low > float(chance):
            return f"{a.attack} on {a.target_kind} above chance ({metric} ≥ {low:.3f} vs {float(chance):.3f})"
    return None


def verdict_of(m: Any) -> Verdict:
    """The verdict of one method by the rule table of the module docstring."""
    c, b = class_information_status(m), backbone_status(m)
    audited_refutation = any(a.refutes_claim for a in m.privacy.empirical)
    info = m.privacy.guarantee_of("class information")
    legacy = m.privacy.tightest()  # results before schema 1.2 state no unit and no proof
    info_eps = _tightest(info["epsilon"]) if info else (legacy[1] if legacy else math.nan)
    info_unit = UNIT_WORDS.get((info or {}).get("unit") or "", "unit not stated")
    everything = m.privacy.guarantee_of("all uploads")
    all_eps = _tightest(everything["epsilon"]) if everything else (m.privacy.tightest_all() or ("", math.inf))[1]
    person = _tightest(m.privacy.per_person.get("epsilon", {})) if m.privacy.per_person else math.inf
    if c == "refuted" or audited_refutation:
        v = Verdict("claim refuted by audit" + ("; backbone not DP-protected" if b == "none" else ""), "bad", "R1")
    elif c == "none":
        v = Verdict("no guarantee: class information leaves without noise", "bad", "R2")
    elif c == "absent" and b == "absent":
        v = Verdict("nothing leaves a client", "good", "R3")
    elif b == "none":
        head = {
            "absent": "no class information shared",
            "proven": f"class information DP {info_unit} (ε ≤ {_fmt(info_eps)}, proven)",
            "claimed": f"class information: claimed ε ≤ {_fmt(info_eps)} {info_unit}, not proven",
        }[c]
        v = Verdict(f"{head}; backbone not DP-protected (no DP-SGD): no bound per person", "warn", "R4")
    elif c == "claimed":
        v = Verdict(f"claimed, not proven: ε ≤ {_fmt(info_eps)} {info_unit}", "warn", "R5")
    elif math.isfinite(person):
        v = Verdict(f"DP per person, ε ≤ {_fmt(person)} (proven)", "good", "R6")
    elif c == "absent":
        v = Verdict(
            f"no class information shared; backbone DP per face image (ε ≤ {_fmt(all_eps)}); no bound per person",
            "warn",
            "R7",
        )
    else:
        v = Verdict(
            f"proven per part (class information {info_unit}, backbone per face image); no bound per person",
            "warn",
            "R7",
        )
    leak = attack_evidence(m)
    if leak:
        v = Verdict(f"{v.text}; {leak}", "warn" if v.level == "good" else v.level, v.rule)
    return v
