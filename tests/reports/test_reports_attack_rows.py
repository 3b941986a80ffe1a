"""The report's lines for the wired #14 attack rows: the decoder's training curve (figure and
table), the white-box inversion row, the granted-labels upper-bound row, and the second
evaluator's agreement sentence (pooled from the 2×2 counts, checked by hand)."""

from __future__ import annotations

import math

import pytest

from reports import figures as F
from reports.schema import AttackFinding, MethodResult
from reports.tables import (
    attack_label,
    attacks_table,
    decoder_curve_key,
    decoder_curve_of,
    is_upper_bound,
    is_whitebox,
    strongest_per_family,
)


def _decoder(kind="class_centers", epochs=3, gan=True, rank1=0.2, counts=None):
    metrics = {"mean_rank1": rank1, "oracle_rank1": 0.9, "null_rank1": 0.0, "normalised_rank1": rank1 / 0.9}
    for e in range(1, epochs + 1):
        metrics[decoder_curve_key("heldout_feature_cosine", e)] = 0.1 * e
        metrics[decoder_curve_key("heldout_l1", e)] = 0.2 - 0.01 * e
        metrics[decoder_curve_key("l1", e)] = 0.21 - 0.01 * e
        if gan:
            metrics[decoder_curve_key("d_loss", e)] = 1.0 / e
            metrics[decoder_curve_key("g_adv_loss", e)] = 2.0 + e
    for far, (both, a_only, b_only, neither) in (counts or {}).items():
        metrics.update({f"evaluator_both_pass@far={far}": both, f"evaluator_a_only@far={far}": a_only,
                        f"evaluator_b_only@far={far}": b_only, f"evaluator_neither@far={far}": neither})
        metrics["evaluator_spearman"] = 0.5
    return AttackFinding("inversion", "server", kind, metrics=metrics, success_metric="mean_rank1", notes="decoder")


def _whitebox(kind="class_centers", rank1=0.5):
    return AttackFinding("inversion", "server", kind, success_metric="mean_rank1", notes="white-box: a lower bound",
                         metrics={"mean_rank1": rank1, "oracle_rank1": 0.9, "null_rank1": 0.0,
                                  "normalised_rank1": rank1 / 0.9, "whitebox_iterations": 100.0,
                                  "whitebox_minus_decoder_identity_similarity": 0.1},
                         intervals={"whitebox_minus_decoder_identity_similarity": (0.02, 0.2)})


def _probe(rank1, upper=False):
    metrics = {"rank1": rank1, "label_accuracy": 1.0 if upper else 0.5, **({"upper_bound": 1.0} if upper else {})}
    return AttackFinding("gradient", "server", "backbone", metrics=metrics, success_metric="rank1")


def test_curve_round_trips_through_its_keys():
    a = _decoder(epochs=4)
    curve = decoder_curve_of(a)
    assert curve["heldout_feature_cosine"] == [(e, pytest.approx(0.1 * e)) for e in range(1, 5)]
    assert set(curve) == {"heldout_feature_cosine", "heldout_l1", "l1", "d_loss", "g_adv_loss"}
    assert decoder_curve_of(_whitebox()) == {}


def test_decoder_curve_figure_draws_one_line_per_method_and_skips_unmeasured_panels():
    methods = [MethodResult("a", attacks=[_decoder(), _whitebox()]), MethodResult("b", attacks=[_decoder(epochs=5)]),
               MethodResult("c", attacks=[_whitebox()])]
    fig = F.decoder_curve_figure(methods)
    assert [ax.get_title() for ax in fig.axes] == [t for t, _f in F._CURVE_PANELS]
    cosine = fig.axes[0]
    assert len(cosine.lines) == 2 and [len(line.get_xdata()) for line in cosine.lines] == [3, 5]
    assert len(fig.axes[1].lines) == 4  # held-out and (dashed) training L1 per method
    l1_only = F.decoder_curve_figure([MethodResult("a", attacks=[_decoder(gan=False)])])
    assert len(l1_only.axes) == 2  # no adversarial losses measured: no empty panel
    assert F.decoder_curve_figure([MethodResult("c", attacks=[_whitebox()])]) is None
    assert "held out" in F.FIGURE_CAPTIONS["decoder_curve"] and "lower bound" in F.FIGURE_CAPTIONS["decoder_curve"]


def test_rows_are_labelled_and_the_curve_is_summarised_not_listed():
    m = MethodResult("m", attacks=[_decoder(), _whitebox(), _probe(0.2), _probe(0.9, upper=True)])
    table = attacks_table([m])
    assert [str(r[1]) for r in table.rows] == ["inversion", "inversion (white-box)", "gradient",
                                               "gradient (labels granted: upper bound)"]
    metrics_cell = str(table.rows[0][8])
    assert "decoder training curve: 3 epoch(s) (figure decoder_curve)" in metrics_cell
    assert "decoder_curve." not in metrics_cell
    assert "[0.020, 0.200]" in str(table.rows[1][8])  # white-box − decoder with its interval
    assert "upper bound" in table.note and "lower bound" in table.note
    assert is_whitebox(m.attacks[1]) and not is_whitebox(m.attacks[0]) and attack_label(m.attacks[0]) == "inversion"


def test_strongest_per_family_never_picks_the_upper_bound_row():
    m = MethodResult("m", attacks=[_decoder(rank1=0.2), _whitebox(rank1=0.5), _probe(0.2), _probe(0.9, upper=True)])
    best = strongest_per_family(m)
    assert best["gradient"].metrics["rank1"] == 0.2 and not is_upper_bound(best["gradient"])
    assert is_whitebox(best["inversion"])  # same family, same chance level: the stronger inversion
    from reports.tables import attack_families_cell

    cell = str(attack_families_cell(m))
    assert "inversion (white-box): 0.500 mean_rank1" in cell and "gradient: 0.200 rank1" in cell


def test_agreement_sentence_pools_the_counts():
    # two findings: (both, a_only, b_only, neither) = (3, 1, 0, 6) and (2, 0, 1, 7) at FAR 0.01
    first = _decoder(counts={"0.01": (3, 1, 0, 6)})
    first.metrics.update({"evaluator_genuine_accept@far=0.01": 0.33, "second_evaluator_genuine_accept@far=0.01": 0.16})
    m = MethodResult("m", attacks=[first, _decoder("dp_kmeans_centers", counts={"0.01": (2, 0, 1, 7)})])
    note = attacks_table([m]).note
    both, a_only, b_only, neither = 5, 1, 1, 13
    n = both + a_only + b_only + neither
    p_o, p_a, p_b = (both + neither) / n, (both + a_only) / n, (both + b_only) / n
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
    kappa = (p_o - p_e) / (1 - p_e)
    assert f"on {n} reconstructions of 2 inversion findings" in note
    assert f"FAR 0.01: agreement {p_o:.3f}, κ {kappa:.3f} (real genuine pairs accepted: first 0.330, second 0.160)" in note
    assert "Spearman of their identity similarities 0.500–0.500" in note
    assert "Second evaluator" not in attacks_table([MethodResult("x", attacks=[_decoder()])]).note
    assert math.isclose(p_o, 0.9)
