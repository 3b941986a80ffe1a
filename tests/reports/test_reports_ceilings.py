"""The attacks table puts the oracle (ceiling), null (floor) and normalised success beside each
raw attack rate, and says when an attack has no dynamic range."""

from __future__ import annotations

import math

from reports.schema import AttackFinding, MethodResult
from reports.tables import attacks_table, ceiling_cells


def finding(**metrics) -> AttackFinding:
    intervals = {"normalised_top1": (0.2, 0.8), "oracle_top1": (0.6, 1.0)}
    return AttackFinding("knn", "server", "noisy_cluster_centers", metrics={"top1": 0.3, **metrics},
                         intervals=intervals, success_metric="top1")


def test_raw_oracle_null_and_normalised_side_by_side():
    # (0.3 - 0.1) / (0.8 - 0.1) = 2/7, computed here, not by the code under test
    a = finding(oracle_top1=0.8, null_top1=0.1, normalised_top1=(0.3 - 0.1) / (0.8 - 0.1), units=12.0)
    oracle, null, normalised = (str(c) for c in ceiling_cells(a))
    assert oracle == "0.800 [0.600, 1.000]" and null == "0.100"
    assert normalised == f"{2 / 7:.3f} [0.200, 0.800]\n12 units"
    table = attacks_table([MethodResult("m", attacks=[a])])
    assert table.headers[4:8] == ["success (raw)", "oracle (ceiling)", "null (floor)", "normalised [95% CI]"]


def test_no_dynamic_range_is_said_not_hidden():
    a = finding(oracle_top1=0.0, null_top1=0.0, normalised_top1=math.nan, units=3.0)
    assert str(ceiling_cells(a)[2]).startswith("n/a: no dynamic range")


def test_an_attack_without_ceilings_shows_dashes():
    a = AttackFinding("gradient", "server", "backbone_update", metrics={"rank1": 0.25}, success_metric="rank1")
    assert [str(c) for c in ceiling_cells(a)] == ["—", "—", "—"]
