"""The #14 components wired into `run_attacks` (tiny run folder): the GAN decoder's curve, the
white-box inversion beside it, a second evaluator's agreement, and the probe's recovered labels
with the granted-labels row. Each value is checked independently of the code that produced it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attacks.evaluator import Evaluator
from attacks.run import AttackRunConfig, evaluator_architecture_for, run_attacks


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, faces_factory):
    """A 2-round FedPE run on toy faces plus each client's class centers uploaded in the last round
    (what a method sharing W would have sent), as in test_run.py."""
    from attacks.views import load_ground_truth
    from federated_core.engine import ClientData, FederatedConfig, run_federated
    from federated_core.engine.messages import make_message
    from federated_core.engine.wire import WireLog

    run = tmp_path_factory.mktemp("wiring_run") / "run"
    clients = [ClientData.from_faces(faces_factory([0, 1, 2], 3, 16)), ClientData.from_faces(faces_factory([3], 3, 16)),
               ClientData.from_faces(faces_factory([4, 5], 3, 16))]
    cfg = FederatedConfig(method="fedpe", rounds=2, batch_size=4, embedding_dim=16, resolution=16, progress=False,
                          eval_initial=False, eval_every=0, seed=1)
    run_federated(cfg, clients, out_dir=run)
    gt = load_ground_truth(run)
    log = WireLog.load(run)
    for party in sorted(gt.private):
        log.append(make_message("class_centers", party, ("server",), 2, "train", {"centers": gt.private[party]["centers"]}))
    log.save(run)
    return run, faces_factory


def _source(toy_faces):
    return lambda ids, per, start: toy_faces(ids, per, 16, seed=start)


def _config(**changes):
    base = dict(observer="server", gallery_distractors=30, gallery_member_fraction=1.0, n_bootstrap=20,
                public_identities=12, public_images_per_identity=3, decoder_epochs=3, decoder_base_channels=16,
                decoder_batch_size=16, decoder_holdout_fraction=0.2, decoder_patience=1, whitebox_iterations=6,
                whitebox_restarts=2, gradient_clients=2, gradient_images=2, gradient_iterations=3,
                gradient_logged_rounds=("last",), gradient_logged_iterations=2, gradient_local_steps=(1,),
                gradient_dp_noise_multipliers=(), calibration_identities=20, progress=False, seed=3)
    return AttackRunConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def wired(tiny_run, backbone_factory, tmp_path_factory):
    """One run of knn, inversion and gradient with the evaluator given twice (the second evaluator
    is the first: their agreement must be perfect), with every reference the run builds captured."""
    import attacks.evaluator as evaluator_module

    run, toy_faces = tiny_run
    out = tmp_path_factory.mktemp("wired") / "out"
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator (untrained)",
                   eval_identities=(5_000_300, 5_000_400))
    built = []
    original = evaluator_module.build_reference

    def capture(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    evaluator_module.build_reference = capture
    try:
        report = run_attacks(run, _config(attacks=("knn", "inversion", "gradient")), out_dir=out,
                             faces=_source(toy_faces), evaluator=ev, second_evaluator=ev)
    finally:
        evaluator_module.build_reference = original
    return report, built, out, run


def test_gan_decoder_records_its_curve_and_stops_on_held_out_identities(wired):
    from attacks.inversion import decoder_record

    report, _built, out, _run = wired
    d = report.decoder
    assert d["objective"] == "gan" and d["epoch_budget"] == 3 and 1 <= d["epochs_done"] <= 3
    assert d["heldout_identities"] == round(0.2 * 12)  # held-out public identities, not images
    curve = d["curve"]
    assert [row["epoch"] for row in curve] == list(range(1, d["epochs_done"] + 1))
    for row in curve:
        assert -1 <= row["heldout_feature_cosine"] <= 1 and row["heldout_l1"] > 0
        assert row["d_loss"] is not None and row["g_adv_loss"] is not None and row["feature_loss"] is not None
    best = max(range(len(curve)), key=lambda i: curve[i]["heldout_feature_cosine"])
    assert d["best_heldout_feature_cosine"] == pytest.approx(curve[d["best_epoch"] - 1]["heldout_feature_cosine"])
    assert curve[best]["heldout_feature_cosine"] <= d["best_heldout_feature_cosine"] + 1e-3  # min_delta
    # the checkpoint on disk says the same (an independent reader of the record)
    record = decoder_record(out / "decoder.safetensors")
    assert record["curve"] == curve and record["config"]["objective"] == "gan"
    saved = json.loads((out / "attacks.json").read_text())
    assert saved["decoder"]["curve"] == json.loads(json.dumps(curve))
    row = saved["inversion"][0]
    assert row["decoder_objective"] == "gan" and row["decoder_epochs_done"] == d["epochs_done"]


def _ids_of(run, kind):
    from attacks.views import load_ground_truth, observer_view

    gt = load_ground_truth(run)
    return [frozenset(s) for s in gt.observation_ids(observer_view(run, "server").center_vectors(kind)) if s]


def test_whitebox_inverts_the_same_vectors_and_its_stored_images_reproduce_its_scores(wired):
    report, built, out, run = wired
    assert [r.kind for r in report.whitebox] == [r.kind for r in report.inversion]
    wb, dec = report.whitebox[0], report.inversion[0]
    assert wb.kind == "class_centers" and wb.num_observations == dec.num_observations == 6
    # the first reference built is the (first) evaluator's with its scoring gallery
    reference, ids = built[0], _ids_of(run, "class_centers")
    again = reference.score(torch.from_numpy(wb.reconstructions), ids)
    np.testing.assert_array_equal(again.identity_similarity, wb.identity_similarity)
    np.testing.assert_array_equal(again.rank1, wb.rank1)
    # its ceilings: the same null seed and the true-center oracle as the decoder, units = identities
    s = wb.summary()
    assert {"null_rank1", "oracle_rank1", "normalised_rank1"} <= set(s) and s["unit_name"] == "identity"
    assert s["units"] == 6
    assert (out / "inversion_whitebox_server_class_centers.png").is_file()


def test_comparison_pairs_the_two_attacks_on_the_same_targets(wired):
    report, _built, _out, _run = wired
    row = next(c for c in report.inversion_comparison if c["kind"] == "class_centers")
    wb, dec = report.whitebox[0], report.inversion[0]
    c = row["comparison"]
    assert c["means"]["whitebox"] == pytest.approx(float(np.mean(wb.identity_similarity)))
    assert c["means"]["decoder"] == pytest.approx(float(np.mean(dec.identity_similarity)))
    assert c["signed_difference"] == pytest.approx(c["means"]["whitebox"] - c["means"]["decoder"])
    lo, hi = c["signed_interval"]
    assert lo <= c["signed_difference"] <= hi or math.isclose(lo, hi)
    assert c["resolved"] == (lo > 0 or hi < 0)  # resolved only when the interval excludes 0
    assert c["stronger"] == (None if not c["resolved"] else ("whitebox" if lo > 0 else "decoder"))
    assert c["unit"] == "identity" and c["num_units"] == 6
    w = row["whitebox"]
    assert (w["iterations"], w["restarts"], w["init"]) == (6, 2, "mean_face")
    assert -1 <= w["mean_cosine"] <= 1 and "lower bound" in w["bound"]
    assert "white-box inversion of the same vectors" in report.table()


def test_an_evaluator_agrees_with_itself(wired):
    report, _built, out, _run = wired
    assert report.second_evaluator == "test evaluator (untrained)" and report.second_calibration is not None
    kinds = {(a["kind"], a["attack"]) for a in report.evaluator_agreement}
    assert kinds == {(k, a) for k in ("class_centers", "dp_kmeans_centers") for a in ("decoder", "whitebox")}
    for a in report.evaluator_agreement:
        assert a["identity_similarity"][0] == a["identity_similarity"][1]
        for p in a["at_far"]:
            assert p["agreement"] == 1.0 and p["counts"]["a_only"] == p["counts"]["b_only"] == 0
            assert p["kappa"] == 1.0 or math.isnan(p["kappa"])  # NaN: every verdict the same, kappa undefined
        assert a["spearman"] == pytest.approx(1.0) or math.isnan(a["spearman"])
    saved = json.loads((out / "attacks.json").read_text())
    row = saved["inversion"][0]
    assert row["evaluator_agreement@far=0.01"] == 1.0 and row["evaluator_reconstructions"] == 6
    gar = [t["genuine_accept_rate"] for t in saved["evaluator_calibration"]["thresholds"]]
    assert [row["evaluator_genuine_accept@far=0.001"], row["evaluator_genuine_accept@far=0.01"]] == gar
    assert row["second_evaluator_genuine_accept@far=0.01"] == row["evaluator_genuine_accept@far=0.01"]  # itself
    assert "agreement of the two evaluators" in report.table()


def test_probe_uses_recovered_labels_with_the_granted_row_beside(wired):
    from attacks.gradient import GRANTED_LABELS_ROW

    report, _built, _out, _run = wired
    # two clients x (initial, trained model), one local step
    assert [(r.config["client"], r.config["model_state"]) for r in report.gradient] == [
        (c, s) for c in ("client:1", "client:2") for s in ("initial", "trained")]
    for r in report.gradient:  # the head (class centers) is observed: two images -> LLG's counts
        assert r.config["label_source"] == "llg" and "labels recovered by llg" in r.threat_model
        g = r.granted
        assert g is not None and g.row == GRANTED_LABELS_ROW and g.config["label_source"] == "known"
        assert g.label_accuracy == 1.0 and "upper bound" in g.threat_model
        assert g.config["client"] == r.config["client"] and g.config["model_state"] == r.config["model_state"]
    # a one-identity client: LLG's counts are exact (one class gets all images)
    assert report.gradient[0].label_accuracy == report.gradient[1].label_accuracy == 1.0
    assert "labels granted: upper bound on this attacker" in report.table()


def test_single_image_probe_uses_idlg_and_bn_prior_needs_batchnorm(tiny_run, backbone_factory):
    run, toy_faces = tiny_run
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator (untrained)")
    cfg = _config(attacks=("gradient",), gradient_images=1, gradient_clients=1, gradient_logged_rounds=(),
                  evaluator_architecture=None)
    report = run_attacks(run, cfg, faces=_source(toy_faces), evaluator=ev)
    assert len(report.gradient) == 2  # the initial and the trained model
    for r in report.gradient:  # one image: iDLG, whose count (one label) the attacker knows
        assert r.config["label_source"] == "idlg" and r.label_accuracy == 1.0 and r.granted is not None
    bn = run_attacks(run, _config(attacks=("gradient",), gradient_clients=1, gradient_logged_rounds=(),
                                  gradient_bn_prior_weight=0.1, evaluator_architecture=None),
                     faces=_source(toy_faces), evaluator=ev)
    assert bn.gradient == [] and any("BatchNorm" in f for f in bn.failures)


def test_second_evaluator_failure_is_flagged_not_silent(tiny_run, backbone_factory):
    run, toy_faces = tiny_run
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator (untrained)")
    # the run folder holds no φ0 config to derive a MobileFaceNet evaluator from
    report = run_attacks(run, _config(attacks=("inversion",), whitebox=False, decoder_objective="l1",
                                      decoder_patience=0, evaluator_architecture="auto"),
                         faces=_source(toy_faces), evaluator=ev)
    assert report.inversion and report.whitebox == [] and report.evaluator_agreement == []
    assert any(f.startswith("second evaluator (φ0's architecture, beside the auto one)") and "pre-training config" in f
               for f in report.failures)
    assert report.decoder["objective"] == "l1" and report.decoder["best_epoch"] is None


def test_findings_carry_the_new_rows(wired):
    from privaudit.attack_stage import findings_from_report
    from reports.schema import AttackFinding, MethodResult
    from reports.tables import decoder_curve_of, is_upper_bound, is_whitebox, strongest_per_family

    report, _built, out, _run = wired
    found = [AttackFinding(**f) for f in findings_from_report(report.to_dict(), out)]
    inv = [a for a in found if a.attack == "inversion" and not is_whitebox(a)]
    wbs = [a for a in found if is_whitebox(a)]
    assert [a.target_kind for a in inv] == [a.target_kind for a in wbs] == ["class_centers", "dp_kmeans_centers"]
    curve = decoder_curve_of(inv[0])
    assert [e for e, _v in curve["heldout_feature_cosine"]] == list(range(1, report.decoder["epochs_done"] + 1))
    assert [v for _e, v in curve["heldout_feature_cosine"]] == pytest.approx(
        [row["heldout_feature_cosine"] for row in report.decoder["curve"]])
    w = wbs[0]
    assert w.success_metric == "mean_rank1" and {"null_rank1", "oracle_rank1"} <= set(w.metrics)
    assert "whitebox_minus_decoder_identity_similarity" in w.intervals and "lower bound" in w.notes
    assert inv[0].metrics["evaluator_agreement@far=0.01"] == 1.0
    probes = [a for a in found if a.target_kind == "backbone"]
    assert [is_upper_bound(a) for a in probes] == [False, True] * 4
    assert probes[1].metrics["label_accuracy"] == 1.0 and "upper bound" in probes[1].notes
    best = strongest_per_family(MethodResult("m", attacks=found))
    assert not is_upper_bound(best["gradient"])


def test_evaluator_architecture_for_rule():
    assert evaluator_architecture_for("auto", "tiny") == "mobilefacenet"
    assert evaluator_architecture_for("auto", "mobilefacenet") == "iresnet18"  # never φ0's own
    assert evaluator_architecture_for("same", "tiny") is None and evaluator_architecture_for(None, "x") is None
    assert evaluator_architecture_for("iresnet34", "tiny") == "iresnet34"


@pytest.mark.parametrize("changes, needle", [
    ({"decoder_objective": "wgan"}, "decoder_objective must be one of"),
    ({"decoder_holdout_fraction": 1.0}, "decoder_holdout_fraction must be"),
    ({"decoder_patience": 2, "decoder_holdout_fraction": 0.0}, "decoder_patience=2 stops on held-out"),
    ({"decoder_patience": -1}, "decoder_patience must be"),
    ({"whitebox_iterations": 0}, "whitebox_iterations must be an integer >= 1, got 0"),
    ({"whitebox_init": "noise"}, "whitebox_init must be one of"),
    ({"whitebox": "yes"}, "whitebox must be True or False"),
    ({"evaluator_architecture": "resnet50"}, "evaluator_architecture must be None, 'same', 'auto'"),
    ({"second_evaluator_identity_offset": 5_000_000}, "must differ from evaluator_identity_offset"),
    ({"gradient_bn_prior_weight": -1.0}, "gradient_bn_prior_weight must be a finite number >= 0, got -1.0"),
    ({"gradient_granted_labels_row": 1}, "gradient_granted_labels_row must be True or False"),
    ({"gradient_logged_epoch_prior": "ordered"}, "gradient_logged_epoch_prior must be one of"),
    ({"gradient_logged_epoch_prior_weight": -0.5}, "gradient_logged_epoch_prior_weight must be a finite number >= 0"),
    ({"gradient_logged_aggregate": "sometimes"}, "gradient_logged_aggregate must be one of ['auto', 'always', 'never']"),
    ({"gradient_logged_null_groups": 0}, "gradient_logged_null_groups must be an integer >= 1, got 0"),
])
def test_config_refuses_bad_values_by_name(changes, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        AttackRunConfig(**changes)


@pytest.mark.parametrize("changes, needle", [
    ({"decoder_objective": "vae"}, "attacks.decoder_objective must be 'gan' or 'l1', got 'vae'"),
    ({"evaluator_architecture": "vgg"}, "attacks.evaluator_architecture must be 'auto', 'same' or one of"),
    ({"decoder_patience": 3, "decoder_holdout_fraction": 0}, "attacks.decoder_patience = 3 stops on held-out"),
    ({"whitebox_restarts": 0}, "attacks.whitebox_restarts must be an integer >= 1"),
    ({"gradient_bn_prior_weight": float("nan")}, "attacks.gradient_bn_prior_weight must be a finite number"),
    ({"gradient_logged_epoch_prior": "ordered"}, "attacks.gradient_logged_epoch_prior must be one of"),
    ({"gradient_logged_epoch_prior_weight": float("inf")}, "attacks.gradient_logged_epoch_prior_weight must be"),
    ({"gradient_logged_aggregate": "yes"}, "attacks.gradient_logged_aggregate must be 'auto', 'always' or 'never'"),
])
def test_scenario_refuses_bad_attack_options_by_name(changes, needle):
    from privaudit.scenario import AttackSpec

    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        AttackSpec(**changes)


def test_scale_defaults_and_their_run_config():
    from privaudit.attack_stage import attack_config
    from privaudit.scenario import Scenario

    demo, tiny = (attack_config(Scenario.preset(s), ("knn", "inversion", "gradient")) for s in ("demo", "tiny"))
    assert (demo.decoder_objective, demo.evaluator_architecture, demo.whitebox) == ("gan", "auto", True)
    assert demo.decoder_epochs == 12 and demo.decoder_patience == 3 and demo.decoder_holdout_fraction == 0.1
    assert (demo.whitebox_iterations, demo.whitebox_restarts) == (100, 2)
    assert demo.gradient_granted_labels_row and demo.gradient_bn_prior_weight == 0.0
    assert tiny.evaluator_architecture is None and (tiny.whitebox_iterations, tiny.whitebox_restarts) == (10, 1)
    assert tiny.decoder_objective == "gan" and tiny.decoder_epochs == 3
    assert Scenario.preset("paper").attacks.evaluator_architecture == "auto"  # IResNet-18 beside its MobileFaceNet φ0


def test_attack_command_options_reach_the_config():
    from privaudit.cli import build_parser
    from privaudit.commands.attack import config_from_args

    args = build_parser().parse_args(["attack", "run", "--decoder-objective", "l1", "--evaluator-architecture", "same",
                                      "--whitebox-iterations", "7", "--whitebox-restarts", "3", "--bn-prior-weight",
                                      "0.5", "--no-granted-labels-row", "--quiet"])
    cfg = config_from_args(args)
    assert (cfg.decoder_objective, cfg.evaluator_architecture) == ("l1", "same")
    assert (cfg.whitebox_iterations, cfg.whitebox_restarts, cfg.whitebox) == (7, 3, True)
    assert cfg.gradient_bn_prior_weight == 0.5 and not cfg.gradient_granted_labels_row
    off = config_from_args(build_parser().parse_args(["attack", "run", "--no-whitebox"]))
    assert not off.whitebox and off.decoder_objective == "gan" and off.evaluator_architecture == "auto"
    assert off.gradient_logged_aggregate == "auto"
    always = config_from_args(build_parser().parse_args(["attack", "run", "--gradient-aggregate", "always"]))
    assert always.gradient_logged_aggregate == "always"
    for bad in (["--decoder-objective", "vae"], ["--evaluator-architecture", "vgg"], ["--whitebox-iterations", "0"],
                ["--bn-prior-weight", "-1"], ["--gradient-aggregate", "sometimes"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["attack", "run", *bad])


def test_aggregate_beside_the_clients_updates_in_process(tiny_run, backbone_factory, tmp_path):
    """An in-process run (every client's update observed): "auto" leaves the aggregate alone,
    "always" inverts round 1's aggregate (broadcast 2 minus broadcast 1) over all three clients'
    27 images beside the clients' updates, with its null over groups of distractor identities, and
    the audit's finding names it as the aggregate, ranked among groups, not among clients."""
    from privaudit.attack_stage import findings_from_report

    run, toy_faces = tiny_run
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator (untrained)")
    kw = dict(attacks=("gradient",), gradient_simulated=False, gradient_clients=1, evaluator_architecture=None,
              gradient_logged_rounds=("first",), gradient_logged_null_groups=4)
    auto = run_attacks(run, _config(**kw), faces=_source(toy_faces), evaluator=ev)
    assert [r.config["client"] for r in auto.gradient_logged] == ["client:1"] and auto.failures == []
    always = run_attacks(run, _config(gradient_logged_aggregate="always", **kw), out_dir=tmp_path,
                         faces=_source(toy_faces), evaluator=ev)
    assert [r.config["client"] for r in always.gradient_logged] == ["client:1", "aggregate"]
    assert always.failures == []
    agg = always.gradient_logged[1].summary()
    assert agg["round"] == 1 and agg["participants"] == ["client:0", "client:1", "client:2"]
    assert agg["num_samples"] == 18 and agg["granted_classes"] == 6 and agg["units"] == 5  # 30 distractors // 6
    assert agg["null_clients"] == 4 and agg["permutation_statistic"] == "identity_similarity"
    assert "aggregate:" in always.table()
    (finding,) = [f for f in findings_from_report(always.to_dict(), tmp_path) if "aggregate" in f["notes"]]
    assert "the aggregate of round 1's updates of client:0, client:1, client:2" in finding["notes"]
    assert "ranked" in finding["notes"] and "of 5 groups" in finding["notes"]
    never = run_attacks(run, _config(gradient_logged_aggregate="never", **kw), faces=_source(toy_faces), evaluator=ev)
    assert [r.config["client"] for r in never.gradient_logged] == ["client:1"]
    # an epoch prior models one client's schedule: the aggregate keeps the one-step model, said in a note
    prior = run_attacks(run, _config(gradient_logged_aggregate="always", gradient_logged_epoch_prior="shared", **kw),
                        faces=_source(toy_faces), evaluator=ev)
    assert [(r.config["client"], r.config["epoch_prior"]) for r in prior.gradient_logged] == [
        ("client:1", "shared"), ("aggregate", "none")]
    assert prior.failures == [] and any("aggregate: one-step model" in n for n in prior.notes)
    # a null group with fewer images per identity than the participants is said (its p is optimistic)
    def short_distractors(ids, per, start):
        return toy_faces(ids, per if int(torch.as_tensor(ids).max()) < 1_000_000 else 1, 16, seed=start)

    short = run_attacks(run, _config(gradient_logged_aggregate="always", **kw), faces=short_distractors, evaluator=ev)
    assert any("4 null group(s) hold fewer than 18 images (non-members:0: 6" in n for n in short.notes)
    assert not any("null group(s) hold fewer" in n for n in always.notes)
