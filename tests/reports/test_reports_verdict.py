"""The one verdict rule, case by case (reports.verdict's table), on hand-built method results."""

from __future__ import annotations

import math

import pytest

from reports.schema import AttackFinding, AuditFinding, MethodResult, PrivacySummary
from reports.verdict import verdict_of

INF = math.inf


def method(info: str | None, backbone: str, person: float = INF, shares: tuple[str, ...] = ("backbone",),
           refuted_audit: bool = False, attacks: tuple[AttackFinding, ...] = ()) -> MethodResult:
    guarantees = []
    if info is not None:
        eps = INF if info == "none" else 1.5
        guarantees.append({"scope": "class information", "unit": "class-center", "delta": 1e-5,
                           "epsilon": {"rdp": eps}, "status": info, "basis": "", "kinds": ["noisy_cluster_centers"]})
    audits = [AuditFinding("Algorithm 1", 1.0, 7.2, 0.95, 1000, refutes_claim=True)] if refuted_audit else []
    privacy = PrivacySummary(delta=1e-5, formal_epsilon={"rdp": 1.5}, guarantees=guarantees, empirical=audits,
                             per_person={"unit": "identity", "delta": 1e-5, "epsilon": {"rdp": person},
                                         "status": "proven" if math.isfinite(person) else "none",
                                         "backbone": backbone})
    return MethodResult("m", shares=list(shares), privacy=privacy, attacks=list(attacks))


@pytest.mark.parametrize("case, rule, level, words", [
    (dict(info="refuted", backbone="none"), "R1", "bad", "claim refuted by audit; backbone not DP-protected"),
    (dict(info="claimed", backbone="dp", refuted_audit=True), "R1", "bad", "claim refuted by audit"),
    (dict(info="none", backbone="none"), "R2", "bad", "no guarantee: class information leaves without noise"),
    (dict(info=None, backbone="absent", person=0.0, shares=()), "R3", "good", "nothing leaves a client"),
    (dict(info=None, backbone="none"), "R4", "warn", "no class information shared; backbone not DP-protected"),
    (dict(info="proven", backbone="none"), "R4", "warn", "class information DP per class-center record (ε ≤ 1.5, proven)"),
    (dict(info="claimed", backbone="none"), "R4", "warn", "claimed ε ≤ 1.5 per class-center record, not proven"),
    (dict(info="claimed", backbone="dp", person=3.0), "R5", "warn", "claimed, not proven"),
    (dict(info=None, backbone="dp", person=3.0), "R6", "good", "DP per person, ε ≤ 3 (proven)"),
    (dict(info="proven", backbone="dp", person=INF), "R7", "warn", "no bound per person"),
])
def test_each_rule_of_the_table(case, rule, level, words):
    v = verdict_of(method(**case))
    assert (v.rule, v.level) == (rule, level)
    assert words in v.text


def test_a_backbone_without_dp_downgrades_every_method_the_same_way():
    levels = {verdict_of(method(info, "none")).level for info in (None, "proven", "claimed")}
    assert levels == {"warn"}


def test_an_attack_above_chance_turns_good_into_warn_and_is_named():
    leak = AttackFinding("knn", "server", "backbone", metrics={"top1": 0.4, "top1_chance": 0.05},
                         intervals={"top1": (0.2, 0.6)}, success_metric="top1")
    v = verdict_of(method(info=None, backbone="dp", person=3.0, attacks=(leak,)))
    assert (v.rule, v.level) == ("R6", "warn")
    assert "knn on backbone above chance (top1 ≥ 0.200 vs 0.050)" in v.text
    at_chance = AttackFinding("knn", "server", "backbone", metrics={"top1": 0.06, "top1_chance": 0.05},
                              intervals={"top1": (0.01, 0.12)}, success_metric="top1")
    assert verdict_of(method(info=None, backbone="dp", person=3.0, attacks=(at_chance,))).level == "good"
