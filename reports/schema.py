"""The audit's results as plain dataclasses, and their versioned JSON form (``results.json``).

An `AuditResult` holds, for every method, what it shares, who observes what, its utility, its
privacy accounting (formal epsilon per accountant, empirical lower bounds from distinguishing
games) and the attacks each observer ran, plus the analyses of PrivacyFace (occupancy ratio,
Thm. 1 / Fig. 3; cos(p, p_hat), Fig. 4) and epsilon versus rounds. Numbers, not prose.

JSON has no Infinity or NaN. In typed numeric fields (utility, metrics, epsilons, ...) the
non-finite values are written as the strings ``"inf"``, ``"-inf"``, ``"nan"`` and decoded back;
inside the free-form objects (``scenario``, ``params``, ``analyses.extra``), where a string must stay
a string, a non-finite float is written as ``{"$float": "inf"}``. Numpy scalars and arrays are
accepted everywhere and written as plain numbers and lists.

The document is checked against ``reports/results.schema.json`` (draft 2020-12, validated by
`reports.validator` without third-party packages) when it is written and when it is read; a
``schema_version`` this code does not know is refused with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from reports.validator import format_path, validate_results

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "RESULTS_FILENAME",
    "AuditFinding",
    "AttackFinding",
    "PrivacySummary",
    "MethodResult",
    "Analyses",
    "AuditResult",
    "save_results",
    "load_results",
    "software_versions",
    "utc_now_iso",
]

# 1.1: PrivacySummary.formal_epsilon_all (ε over every upload, backbone included), optional, so
# 1.0 documents (which never have it) still load and round-trip unchanged.
# 1.2: guarantees per scope with unit and status, ε per person, the verdict and its rule, audits'
# unit / scope / deployed parameters, a method's flags and fidelity preset (all optional to read).
# 1.3: the claims table (`privaudit.claims`) and a method's utility intervals over test identities, optional.
SCHEMA_VERSION = "1.3"
SUPPORTED_SCHEMA_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
RESULTS_FILENAME = "results.json"
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


# --------------------------------------------------------------------------- encoding helpers


def _num(x: Any, where: str) -> float | int | str:
    """A typed numeric field -> JSON: finite numbers as numbers, non-finite as "inf"/"-inf"/"nan"."""
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{where} must be a number, got the boolean {x!r}")
    if isinstance(x, str) and x in _NONFINITE:
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)) or (isinstance(x, np.ndarray) and x.ndim == 0):
        v = float(x)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    raise ValueError(f"{where} must be a number, got {type(x).__name__} {x!r}")


def _unnum(x: Any) -> float:
    """JSON -> float (the inverse of `_num`); integers stay integers' float value."""
    return _NONFINITE[x] if isinstance(x, str) else float(x)


def _nums(xs: Any, where: str) -> list[float | int | str]:
    if isinstance(xs, np.ndarray):
        xs = xs.reshape(-1).tolist()
    return [_num(v, f"{where}[{i}]") for i, v in enumerate(xs)]


def _num_map(d: dict[str, Any], where: str) -> dict[str, float | int | str]:
    return {_key(k, where): _num(v, f"{where}.{k}") for k, v in d.items()}


def _key(k: Any, where: str) -> str:
    if not isinstance(k, str):
        raise ValueError(f"{where}: keys must be strings, got {type(k).__name__} {k!r}")
    return k


def _free(obj: Any, path: tuple[str | int, ...]) -> Any:
    """Free-form JSON (scenario, params, extra): dicts with string keys, lists, str, bool, None,
    finite numbers; non-finite floats as {"$float": "inf"}; numpy values as plain ones."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else {"$float": _num(v, format_path(path))}
    if isinstance(obj, np.ndarray):
        return _free(obj.tolist(), path)
    if isinstance(obj, dict):
        if "$float" in obj and len(obj) == 1:
            raise ValueError(f"{format_path(path)}: the key '$float' is reserved for non-finite numbers")
        return {_key(k, format_path(path)): _free(v, path + (k,)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_free(v, path + (i,)) for i, v in enumerate(obj)]
    raise ValueError(
        f"{format_path(path)}: a value of type {type(obj).__name__} is not JSON-able "
        "(use str, int, float, bool, None, list or dict)"
    )


def _unfree(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and "$float" in obj and obj["$float"] in _NONFINITE:
            return _NONFINITE[obj["$float"]]
        return {k: _unfree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unfree(v) for v in obj]
    return obj


def _strings(xs: Any, where: str) -> list[str]:
    out = list(xs)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise ValueError(f"{where}[{i}] must be a string, got {type(s).__name__} {s!r}")
    return out


def _check_epsilon(value: float, where: str) -> None:
    v = float(value)
    if math.isnan(v) or v < 0:
        raise ValueError(f"{where} must be >= 0 or math.inf (no guarantee), got {value!r}")


def _check_delta(value: float | None, where: str) -> None:
    if value is not None and not (isinstance(value, (int, float, np.floating)) and 0 < float(value) < 1):
        raise ValueError(f"{where} must be None or in the open interval (0, 1), got {value!r}")


# --------------------------------------------------------------------------- dataclasses


@dataclass
class AuditFinding:
    """An empirical privacy audit: a distinguishing game on neighbouring datasets.

    ``epsilon_lower_bound`` is the epsilon that the observed true/false positive rates of the
    distinguisher prove with probability ``confidence`` over ``trials`` runs (e.g. the
    Clopper-Pearson bound ``ln((TPR_lo - delta) / FPR_hi)``); ``refutes_claim`` is True when that
    bound exceeds ``claimed_epsilon``. ``statistic`` names the distinguishing statistic.
    """

    name: str
    claimed_epsilon: float
    epsilon_lower_bound: float
    confidence: float
    trials: int
    statistic: str = ""
    refutes_claim: bool = False
    delta: float | None = None
    notes: str = ""
    unit: str | None = None
    scope: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_epsilon(self.claimed_epsilon, f"AuditFinding({self.name!r}).claimed_epsilon")
        _check_epsilon(self.epsilon_lower_bound, f"AuditFinding({self.name!r}).epsilon_lower_bound")
        if not 0 < float(self.confidence) < 1:
            raise ValueError(f"AuditFinding({self.name!r}).confidence must be in (0, 1), got {self.confidence!r}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, (int, np.integer)) or self.trials < 1:
            raise ValueError(f"AuditFinding({self.name!r}).trials must be an integer >= 1, got {self.trials!r}")
        _check_delta(self.delta, f"AuditFinding({self.name!r}).delta")

    def to_dict(self) -> dict[str, Any]:
        w = f"audit {self.name!r}"
        return {
            "name": self.name,
            "claimed_epsilon": _num(self.claimed_epsilon, f"{w}.claimed_epsilon"),
            "epsilon_lower_bound": _num(self.epsilon_lower_bound, f"{w}.epsilon_lower_bound"),
            "confidence": float(self.confidence),
            "trials": int(self.trials),
            "statistic": self.statistic,
            "refutes_claim": bool(self.refutes_claim),
            "delta": None if self.delta is None else float(self.delta),
            "notes": self.notes,
            **(
                {"unit": self.unit, "scope": self.scope, "parameters": _free(self.parameters, ("parameters",))}
                if self.unit is not None or self.scope
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditFinding:
        return cls(
            name=d["name"],
            claimed_epsilon=_unnum(d["claimed_epsilon"]),
            epsilon_lower_bound=_unnum(d["epsilon_lower_bound"]),
            confidence=float(d["confidence"]),
            trials=int(d["trials"]),
            statistic=d["statistic"],
            refutes_claim=bool(d["refutes_claim"]),
            delta=None if d["delta"] is None else float(d["delta"]),
            notes=d["notes"],
            unit=d.get("unit"),
            scope=d.get("scope", ""),
            parameters=_unfree(d.get("parameters", {})),
        )


@dataclass
class AttackFinding:
    """One attack by one observer on one message kind it saw.

    ``attack``: "knn" | "inversion" | "gradient" | ...; ``observer``: "server", "client:3",
    "outsider"; ``target_kind``: the message kind attacked ("class_centers", ...).
    ``metrics``: scalar scores (NaN = not measurable); ``intervals``: metric -> [lo, hi]
    confidence interval; ``roc``: the membership view's ROC curve {"fpr": [...], "tpr": [...]} or
    None; ``image_grid``: path of a PNG (real | reconstruction), relative to the results folder;
    ``success_metric``: the key of ``metrics`` that is this attack's success rate in [0, 1] (the
    x axis of the privacy-utility frontier), or None.
    """

    attack: str
    observer: str
    target_kind: str
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    roc: dict[str, list[float]] | None = None
    image_grid: str | None = None
    success_metric: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        who = f"AttackFinding({self.attack!r}, {self.observer!r}, {self.target_kind!r})"
        if self.roc is not None:
            if set(self.roc) != {"fpr", "tpr"}:
                raise ValueError(f"{who}.roc must have exactly the keys 'fpr' and 'tpr', got {sorted(self.roc)}")
            if len(self.roc["fpr"]) != len(self.roc["tpr"]):
                raise ValueError(
                    f"{who}.roc: fpr and tpr must have the same length, got "
                    f"{len(self.roc['fpr'])} and {len(self.roc['tpr'])}"
                )
        if self.success_metric is not None and self.success_metric not in self.metrics:
            raise ValueError(
                f"{who}.success_metric {self.success_metric!r} is not a key of metrics ({sorted(self.metrics)})"
            )
        for name, pair in self.intervals.items():
            if len(pair) != 2:
                raise ValueError(f"{who}.intervals[{name!r}] must be a pair [lo, hi], got {pair!r}")

    @property
    def success(self) -> float:
        """The success rate named by ``success_metric`` (NaN when there is none)."""
        return math.nan if self.success_metric is None else float(self.metrics[self.success_metric])

    @property
    def label(self) -> str:
        return f"{self.attack} by {self.observer} on {self.target_kind}"

    def to_dict(self) -> dict[str, Any]:
        w = f"attack {self.label!r}"
        roc = None
        if self.roc is not None:
            roc = {k: [float(v) for v in np.asarray(self.roc[k], dtype=float).reshape(-1)] for k in ("fpr", "tpr")}
        return {
            "attack": self.attack,
            "observer": self.observer,
            "target_kind": self.target_kind,
            "metrics": _num_map(self.metrics, f"{w}.metrics"),
            "intervals": {_key(k, w): _nums(list(v), f"{w}.intervals.{k}") for k, v in self.intervals.items()},
            "roc": roc,
            "image_grid": None if self.image_grid is None else str(self.image_grid),
            "success_metric": self.success_metric,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackFinding:
        roc = (
            None
            if d["roc"] is None
            else {"fpr": [float(v) for v in d["roc"]["fpr"]], "tpr": [float(v) for v in d["roc"]["tpr"]]}
        )
        return cls(
            attack=d["attack"],
            observer=d["observer"],
            target_kind=d["target_kind"],
            metrics={k: _unnum(v) for k, v in d["metrics"].items()},
            intervals={k: (_unnum(v[0]), _unnum(v[1])) for k, v in d["intervals"].items()},
            roc=roc,
            image_grid=d["image_grid"],
            success_metric=d["success_metric"],
            notes=d["notes"],
        )


def _tightest(epsilons: dict[str, float]) -> tuple[str, float] | None:
    if not epsilons:
        return None
    name = min(epsilons, key=lambda k: (float(epsilons[k]), k))
    return name, float(epsilons[name])


@dataclass
class PrivacySummary:
    """What the mathematics promises for one method, and what the audits prove.

    ``formal_epsilon``: accountant name ("rdp", "prv", "basic", "advanced", ...) -> epsilon at
    ``delta`` over the whole run of the class information a client uploads (every upload but the
    backbone; ``math.inf`` = no guarantee; 0 = no class information leaves a client).
    ``formal_epsilon_all``: accountant -> epsilon at ``delta`` over *everything* a client uploads,
    the backbone included (``math.inf`` as soon as a backbone goes out without DP-SGD; finite
    with DP-SGD, Abadi et al. 2016, when the class information is private too); empty = not
    computed (results written before schema 1.1).
    ``epsilon_per_round``: accountant -> cumulative epsilon after rounds 1, 2, ...
    ``per_party``: rows {"party", "round", "epsilon"[, "accountant", "delta"]} from the ledger.
    ``empirical``: the distinguishing-game audits. ``guarantee``: one line, e.g.
    "none: raw class centers reach the server" or "(eps, delta)-DP per client".
    """

    delta: float | None = None
    formal_epsilon: dict[str, float] = field(default_factory=dict)
    formal_epsilon_all: dict[str, float] = field(default_factory=dict)
    epsilon_per_round: dict[str, list[float]] = field(default_factory=dict)
    per_party: list[dict[str, Any]] = field(default_factory=list)
    empirical: list[AuditFinding] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    guarantee: str = ""
    guarantees: list[dict[str, Any]] = field(default_factory=list)
    per_person: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_delta(self.delta, "PrivacySummary.delta")
        for name, eps in self.formal_epsilon.items():
            _check_epsilon(eps, f"PrivacySummary.formal_epsilon[{name!r}]")
        for name, eps in self.formal_epsilon_all.items():
            _check_epsilon(eps, f"PrivacySummary.formal_epsilon_all[{name!r}]")

    def tightest(self) -> tuple[str, float] | None:
        """(accountant, epsilon) of the smallest formal epsilon of the class information, or None
        when none was computed."""
        return _tightest(self.formal_epsilon)

    def tightest_all(self) -> tuple[str, float] | None:
        """(accountant, epsilon) of the smallest formal epsilon over all uploads (backbone
        included), or None when it was not computed."""
        return _tightest(self.formal_epsilon_all)

    def max_lower_bound(self) -> AuditFinding | None:
        """The audit with the largest empirical lower bound, or None."""
        if not self.empirical:
            return None
        return max(self.empirical, key=lambda a: float(a.epsilon_lower_bound))

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for i, row in enumerate(self.per_party):
            out: dict[str, Any] = {}
            for k, v in row.items():
                if k == "epsilon":
                    out[k] = _num(v, f"per_party[{i}].epsilon")
                elif k == "round" and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                    out[k] = int(v)
                elif k == "delta" and v is not None and isinstance(v, (float, np.floating)):
                    out[k] = float(v)
                else:
                    out[k] = v
            rows.append(out)
        doc: dict[str, Any] = {
            "delta": None if self.delta is None else float(self.delta),
            "formal_epsilon": _num_map(self.formal_epsilon, "formal_epsilon"),
        }
        if self.formal_epsilon_all:  # absent = not computed: a 1.0 document round-trips unchanged
            doc["formal_epsilon_all"] = _num_map(self.formal_epsilon_all, "formal_epsilon_all")
        doc.update(
            {
                "epsilon_per_round": {
                    _key(k, "epsilon_per_round"): _nums(v, f"epsilon_per_round.{k}")
                    for k, v in self.epsilon_per_round.items()
                },
                "per_party": rows,
                "empirical": [a.to_dict() for a in self.empirical],
                "flags": _strings(self.flags, "privacy.flags"),
                "guarantee": self.guarantee,
            }
        )
        if self.guarantees:
            doc["guarantees"] = [_encode_epsilons(g, f"privacy.guarantees[{i}]") for i, g in enumerate(self.guarantees)]
        if self.per_person:
            doc["per_person"] = _encode_epsilons(self.per_person, "privacy.per_person")
        if self.verdict:
            doc["verdict"] = dict(self.verdict)
        return doc

    def guarantee_of(self, scope: str) -> dict[str, Any] | None:
        """The guarantee of ``scope`` ("class information" | "all uploads"), or None."""
        return next((g for g in self.guarantees if g.get("scope") == scope), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrivacySummary:
        rows = [{k: (_unnum(v) if k == "epsilon" else v) for k, v in row.items()} for row in d["per_party"]]
        return cls(
            delta=d["delta"],
            formal_epsilon={k: _unnum(v) for k, v in d["formal_epsilon"].items()},
            formal_epsilon_all={k: _unnum(v) for k, v in d.get("formal_epsilon_all", {}).items()},
            epsilon_per_round={k: [_unnum(x) for x in v] for k, v in d["epsilon_per_round"].items()},
            per_party=rows,
            empirical=[AuditFinding.from_dict(a) for a in d["empirical"]],
            flags=list(d["flags"]),
            guarantee=d["guarantee"],
            guarantees=[_decode_epsilons(g) for g in d.get("guarantees", [])],
            per_person=_decode_epsilons(d["per_person"]) if "per_person" in d else {},
            verdict=dict(d.get("verdict", {})),
        )


_EPSILON_MAPS = ("epsilon", "epsilon_at_reference_delta")
COMPARISON_KINDS = ("dp_kmeans_centers",)  # attacked for comparison; no party observed them


def _encode_epsilons(d: dict[str, Any], where: str) -> dict[str, Any]:
    """A guarantee dict -> JSON: its ε maps typed (inf as "inf"), the rest as given."""
    out: dict[str, Any] = {k: (_num_map(v, f"{where}.{k}") if k in _EPSILON_MAPS else v) for k, v in d.items()}
    for key in ("delta", "reference_delta"):
        if key in out:
            out[key] = float(out[key])
    return out


def _decode_epsilons(d: dict[str, Any]) -> dict[str, Any]:
    return {k: ({a: _unnum(x) for a, x in v.items()} if k in _EPSILON_MAPS else v) for k, v in d.items()}


@dataclass
class MethodResult:
    """One method (or variant) of the audit: what leaves a client, who sees it, utility, privacy.

    ``shares``: message kinds that leave a client; ``observers``: party -> kinds it observed;
    ``utility``: generic protocol metrics ("accuracy", "auroc", "tar@far=1e-3", ...; NaN =
    unsupported at this pair count); ``personalised_utility``: the personalised protocols' metrics;
    ``utility_per_round``: one metrics dict per round; ``bytes_per_round``: "client_upload",
    "server_broadcast" (mean bytes per round); ``params``: hyper-parameters that tell variants
    apart (free-form JSON, e.g. {"epsilon": 1, "rho": 1.3}).
    """

    name: str
    description: str = ""
    shares: list[str] = field(default_factory=list)
    observers: dict[str, list[str]] = field(default_factory=dict)
    utility: dict[str, float] = field(default_factory=dict)
    personalised_utility: dict[str, float] = field(default_factory=dict)
    utility_per_round: list[dict[str, float]] = field(default_factory=list)
    bytes_per_round: dict[str, float] = field(default_factory=dict)
    privacy: PrivacySummary = field(default_factory=PrivacySummary)
    attacks: list[AttackFinding] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    fidelity: dict[str, Any] = field(default_factory=dict)
    # 95% intervals of generic utility metrics over test identities (schema 1.3): metric -> [lo, hi],
    # plus "unit", "replicates" (the identity cluster bootstrap of federated_core.evaluation.bootstrap)
    utility_intervals: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"MethodResult.name must be a non-empty string, got {self.name!r}")

    def best_attack(self) -> AttackFinding | None:
        """The attack with the highest finite success rate on something a party observed, or None.
        Attacks on a hypothetical release (`COMPARISON_KINDS`: DP k-means of the true centers, which
        no party saw) are comparisons, never the method's leak."""
        scored = [a for a in self.attacks if math.isfinite(a.success) and a.target_kind not in COMPARISON_KINDS]
        return max(scored, key=lambda a: a.success) if scored else None

    def attack_success(self) -> float:
        """Highest success rate over this method's attacks (NaN when none has a success metric)."""
        best = self.best_attack()
        return math.nan if best is None else best.success

    def to_dict(self) -> dict[str, Any]:
        w = f"methods[{self.name!r}]"
        return {
            "name": self.name,
            "description": self.description,
            "params": _free(self.params, ("params",)),
            "shares": _strings(self.shares, f"{w}.shares"),
            "observers": {
                _key(k, f"{w}.observers"): _strings(v, f"{w}.observers.{k}") for k, v in self.observers.items()
            },
            "utility": _num_map(self.utility, f"{w}.utility"),
            "personalised_utility": _num_map(self.personalised_utility, f"{w}.personalised_utility"),
            "utility_per_round": [
                _num_map(r, f"{w}.utility_per_round[{i}]") for i, r in enumerate(self.utility_per_round)
            ],
            "bytes_per_round": _num_map(self.bytes_per_round, f"{w}.bytes_per_round"),
            "privacy": self.privacy.to_dict(),
            "attacks": [a.to_dict() for a in self.attacks],
            **({"flags": _strings(self.flags, f"{w}.flags")} if self.flags else {}),
            **({"fidelity": _free(self.fidelity, ("fidelity",))} if self.fidelity else {}),
            **(
                {"utility_intervals": _free(self.utility_intervals, ("utility_intervals",))}
                if self.utility_intervals
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodResult:
        def nm(m: dict[str, Any]) -> dict[str, float]:
            return {k: _unnum(v) for k, v in m.items()}

        return cls(
            name=d["name"],
            description=d["description"],
            params=_unfree(d["params"]),
            shares=list(d["shares"]),
            observers={k: list(v) for k, v in d["observers"].items()},
            utility=nm(d["utility"]),
            personalised_utility=nm(d["personalised_utility"]),
            utility_per_round=[nm(r) for r in d["utility_per_round"]],
            bytes_per_round=nm(d["bytes_per_round"]),
            privacy=PrivacySummary.from_dict(d["privacy"]),
            attacks=[AttackFinding.from_dict(a) for a in d["attacks"]],
            flags=list(d.get("flags", [])),
            fidelity=_unfree(d.get("fidelity", {})),
            utility_intervals=_unfree(d.get("utility_intervals", {})),
        )


@dataclass
class Analyses:
    """Method-independent analyses.

    ``occupancy``: str(d) -> {"rho": [...], "ratio": [...]}, the occupancy ratio of a cap of
    margin rho on the unit sphere in R^d (PrivacyFace Thm. 1, Fig. 3).
    ``cos_p_phat``: records {"epsilon", "rho", "queries", "values": [...]} (optionally
    "calibration", "label"): cos(p, p_hat) over noise draws (PrivacyFace Fig. 4).
    ``epsilon_vs_rounds``: accountant -> {"rounds": [...], "epsilon": [...]}.
    ``extra``: anything else (free-form JSON).
    """

    occupancy: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    cos_p_phat: list[dict[str, Any]] = field(default_factory=list)
    epsilon_vs_rounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def arr(x: Any) -> list[Any]:
            return np.asarray(x).reshape(-1).tolist()

        occ = {
            _key(str(k) if isinstance(k, (int, np.integer)) else k, "occupancy"): {
                "rho": [float(v) for v in arr(c["rho"])],
                "ratio": [float(v) for v in arr(c["ratio"])],
            }
            for k, c in self.occupancy.items()
        }
        cos = []
        for r in self.cos_p_phat:
            rec: dict[str, Any] = {
                "epsilon": float(r["epsilon"]),
                "rho": float(r["rho"]),
                "queries": int(r["queries"]),
                "values": [float(v) for v in arr(r["values"])],
            }
            for k, v in r.items():
                if k not in rec:
                    rec[k] = v
            cos.append(rec)
        evr = {
            _key(k, "epsilon_vs_rounds"): {
                "rounds": [int(v) for v in arr(c["rounds"])],
                "epsilon": _nums(arr(c["epsilon"]), f"epsilon_vs_rounds.{k}"),
            }
            for k, c in self.epsilon_vs_rounds.items()
        }
        return {
            "occupancy": occ,
            "cos_p_phat": cos,
            "epsilon_vs_rounds": evr,
            "extra": _free(self.extra, ("analyses", "extra")),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Analyses:
        return cls(
            occupancy={k: {"rho": list(c["rho"]), "ratio": list(c["ratio"])} for k, c in d["occupancy"].items()},
            cos_p_phat=[dict(r) for r in d["cos_p_phat"]],
            epsilon_vs_rounds={
                k: {"rounds": list(c["rounds"]), "epsilon": [_unnum(x) for x in c["epsilon"]]}
                for k, c in d["epsilon_vs_rounds"].items()
            },
            extra=_unfree(d["extra"]),
        )

    def is_empty(self) -> bool:
        return not (self.occupancy or self.cos_p_phat or self.epsilon_vs_rounds or self.extra)


def utc_now_iso() -> str:
    """The current time as ISO 8601 in UTC, to the second (``2025-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def software_versions(
    packages: tuple[str, ...] = (
        "privaudit",
        "torch",
        "torchvision",
        "numpy",
        "scipy",
        "scikit-learn",
        "opacus",
        "diffprivlib",
        "matplotlib",
        "facenet-pytorch",
    ),
) -> dict[str, str]:
    """Python, platform and the installed versions of ``packages`` (absent ones are left out).

    Reads package metadata only; imports none of them.
    """
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        version = _installed_version(name)
        if version is not None:
            out[name] = version
    return out


def _check_created(created: str) -> None:
    try:
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise ValueError(f"AuditResult.created must be an ISO 8601 date-time in UTC, got {created!r}") from None
    offset = moment.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise ValueError(f"AuditResult.created must be in UTC (suffix Z or +00:00), got {created!r}")


@dataclass
class AuditResult:
    """Everything an audit produced (``results.json``).

    ``scenario``: the user's configuration (free-form JSON; rendered escaped); ``software``:
    package -> version; ``timings``: stage -> seconds; ``flags``: warnings raised by the
    accountants and the auditor for the whole audit (per-method ones live in
    ``MethodResult.privacy.flags``).
    """

    methods: list[MethodResult] = field(default_factory=list)
    scenario: dict[str, Any] = field(default_factory=dict)
    analyses: Analyses = field(default_factory=Analyses)
    flags: list[str] = field(default_factory=list)
    software: dict[str, str] = field(default_factory=software_versions)
    timings: dict[str, float] = field(default_factory=dict)
    title: str = "privaudit audit"
    privaudit_version: str = field(default_factory=lambda: _installed_version("privaudit") or "unknown")
    created: str = field(default_factory=utc_now_iso)
    schema_version: str = SCHEMA_VERSION
    # several seeds (schema 1.2): per-seed values, means with intervals, paired comparisons
    repeats: dict[str, Any] = field(default_factory=dict)
    # the papers' claims checked on this audit (schema 1.3): one free-form row per claim
    claims: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(_version_message(self.schema_version))
        _check_created(self.created)
        names = [m.name for m in self.methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"AuditResult.methods: method names must be unique, repeated: {dupes}")
        for stage, seconds in self.timings.items():
            if not (math.isfinite(float(seconds)) and float(seconds) >= 0):
                raise ValueError(
                    f"AuditResult.timings[{stage!r}] must be a finite number of seconds >= 0, got {seconds!r}"
                )

    def method(self, name: str) -> MethodResult:
        """The method called ``name`` (``KeyError`` listing the names otherwise)."""
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"no method {name!r} in this result (methods: {[m.name for m in self.methods]})")

    def all_flags(self) -> list[str]:
        """The audit's flags, each method's flags (its own, its privacy accounting's and its
        guarantees', prefixed by its name), and one flag per audit whose lower bound refutes the
        claimed epsilon; duplicates removed, order kept."""
        out = list(self.flags)
        for m in self.methods:
            out += [f"{m.name}: {f}" for f in m.flags]
            out += [f"{m.name}: {f}" for f in m.privacy.flags]
            out += [f"{m.name}: {g['scope']}: {f}" for g in m.privacy.guarantees for f in g.get("flags", [])]
            for a in m.privacy.empirical:
                if a.refutes_claim:
                    out.append(
                        f"{m.name}: audit {a.name!r} refutes the claimed epsilon {_fmt(a.claimed_epsilon)}: "
                        f"empirical lower bound {_fmt(a.epsilon_lower_bound)} at confidence {a.confidence:g} "
                        f"over {a.trials} trials"
                    )
        return list(dict.fromkeys(out))

    # ---- JSON

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (validated against the shipped schema; ``ValueError`` if invalid)."""
        doc = {
            "schema_version": self.schema_version,
            "privaudit_version": self.privaudit_version,
            "created": self.created,
            "title": self.title,
            "scenario": _free(self.scenario, ("scenario",)),
            "software": {_key(k, "software"): str(v) for k, v in self.software.items()},
            "timings": {_key(k, "timings"): float(v) for k, v in self.timings.items()},
            "methods": [m.to_dict() for m in self.methods],
            "analyses": self.analyses.to_dict(),
            "flags": _strings(self.flags, "flags"),
        }
        if self.repeats:
            doc["repeats"] = _free(self.repeats, ("repeats",))
        if self.claims:
            doc["claims"] = [_free(row, ("claims", i)) for i, row in enumerate(self.claims)]
        validate_results(doc)
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> AuditResult:
        """Build from a loaded ``results.json`` dict (checks the version, then the schema)."""
        if not isinstance(doc, dict):
            raise ValueError(f"a results document must be a JSON object, got {type(doc).__name__}")
        if "schema_version" not in doc:
            raise ValueError("the document has no 'schema_version': it is not a privaudit results.json")
        if doc["schema_version"] not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(_version_message(doc["schema_version"]))
        validate_results(doc)
        return cls(
            schema_version=doc["schema_version"],
            privaudit_version=doc["privaudit_version"],
            created=doc["created"],
            title=doc["title"],
            scenario=_unfree(doc["scenario"]),
            software=dict(doc["software"]),
            timings={k: float(v) for k, v in doc["timings"].items()},
            methods=[MethodResult.from_dict(m) for m in doc["methods"]],
            analyses=Analyses.from_dict(doc["analyses"]),
            flags=list(doc["flags"]),
            repeats=_unfree(doc.get("repeats", {})),
            claims=[_unfree(row) for row in doc.get("claims", [])],
        )

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the validated document to ``path`` (UTF-8, indented; atomic replace)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> AuditResult:
        """Read and validate a ``results.json``."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(doc)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name} (privaudit writes non-finite numbers as strings)")


def _version_message(version: Any) -> str:
    return (
        f"results schema_version {version!r} is not supported: this privaudit reads "
        f"{', '.join(repr(v) for v in SUPPORTED_SCHEMA_VERSIONS)}. Re-run the audit with this version, "
        "or read the file with the privaudit that wrote it."
    )


def _fmt(x: float) -> str:
    x = float(x)
    return "inf" if math.isinf(x) else f"{x:.3g}"


def save_results(result: AuditResult, folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/results.json`` (the folder is created) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return result.to_json(folder / RESULTS_FILENAME)


def load_results(path: str | os.PathLike[str]) -> AuditResult:
    """Read a ``results.json`` file, or the one inside a results folder."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILENAME
    return AuditResult.from_json(path)
