"""Comparisons over seeds: the statistics against hand-worked values, and a three-seed tiny audit
that writes per-seed values, intervals and paired comparisons and marks them not significant."""

from __future__ import annotations

import math

import pytest

import privaudit as pa
from privaudit.comparisons import detectable_difference, holm, paired_comparisons, sign_flip_p, t_interval
from privaudit.scenario import AttackSpec, MethodSpec
from reports.html import write_report
from reports.schema import load_results


def test_t_interval_by_hand():
    # mean 2, sd 1 over n = 3: half width t_{0.975, 2} / sqrt(3) with t_{0.975, 2} = 4.302653
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert high - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert mean - low == pytest.approx(high - mean)


def test_sign_flip_p_enumerates_every_sign():
    # differences (1, 2, 3): |sum| = 6 reached only by all + or all -: p = 2/8
    assert sign_flip_p([1.0, 2.0, 3.0]) == 2 / 8
    # (1, -1): sums 0, 2, -2, 0 -> all four have |sum| >= 0
    assert sign_flip_p([1.0, -1.0]) == 1.0
    assert sign_flip_p([0.5] * 6) == 2 / 64


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3·0.01, max(0.03, 2·0.02), max(0.04, 1·0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])


def test_detectable_difference_by_hand():
    # sd of (1, 2, 3) is 1; (t_{0.975,2} + t_{0.8,2}) / sqrt(3) with t_{0.8,2} = 1.060660
    assert detectable_difference([1.0, 2.0, 3.0]) == pytest.approx((4.302653 + 1.060660) / math.sqrt(3), rel=1e-5)


def test_a_clear_difference_over_three_seeds_is_still_not_significant():
    per_seed = {"base": {"acc": [0.5, 0.6, 0.55]}, "better": {"acc": [0.9, 1.0, 0.95]}}
    (row,) = paired_comparisons(per_seed, "base")
    assert row["differences"] == pytest.approx([0.4, 0.4, 0.4])
    assert row["min_attainable_p"] == 0.25 and row["p_value"] == 0.25
    assert not row["significant"]  # three seeds cannot reach p < 0.05 with an exact sign-flip test
    with pytest.raises(ValueError, match="baseline 'nope' is not among"):
        paired_comparisons(per_seed, "nope")


def test_three_seed_tiny_audit_writes_per_seed_values_and_comparisons(tmp_path):
    scenario = pa.Scenario.tiny(out=str(tmp_path / "out"), methods=[MethodSpec("fedpe"), MethodSpec("fedgc")],
                                attacks=AttackSpec(run=[]), repeats=3)
    result = pa.run_audit(scenario, progress=False)
    again = load_results(tmp_path / "out")
    rep = again.repeats
    assert rep["seeds"] == [0, 1, 2] and rep["baseline"] == "fedpe" and rep["unit"] == "seed"
    for seed in (0, 1, 2):  # each seed's own audit, with its own numbers
        per = load_results(tmp_path / "out" / "seeds" / f"seed-{seed}")
        for m in per.methods:
            assert rep["per_seed"][m.name]["accuracy"][seed] == m.utility["accuracy"]
    acc = rep["per_seed"]["fedpe"]["accuracy"]
    mean, low, high = t_interval(acc)
    assert rep["summary"]["fedpe"]["accuracy"]["mean"] == pytest.approx(mean)
    (row,) = [c for c in rep["comparisons"] if c["metric"] == "accuracy"]
    expected = [g - b for g, b in zip(rep["per_seed"]["fedgc"]["accuracy"], acc)]
    assert row["differences"] == pytest.approx(expected) and row["significant"] is False
    page = write_report(result, tmp_path / "out").read_text()
    assert "Comparisons over 3 seeds (baseline fedpe)" in page and "not significant" in page
    # the claims table: FedGC vs FedPE is the papers' TAR@FAR=1e-3, which the tiny test set (36 images)
    # cannot support: "not run", saying so, never a verdict from another metric
    claims = {row["claim"]: row for row in again.claims}
    assert claims["fedgc>fedpe"]["verdict_text"] == "not run: no 'tar@far=0.001' for fedgc, fedpe"
    assert claims["fedfr>fedavg:generic"]["verdict_text"] == "not run: variant(s) fedfr, fedfr-fedavg not in this audit"
    assert "3 seeds" in claims["fedgc>fedpe"]["setting"] and "Claims of the papers, checked on this audit" in page
