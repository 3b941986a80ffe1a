"""`run_attacks` end to end on a tiny run folder, and the `privaudit attack` command."""

from __future__ import annotations

import json

import numpy as np

import pytest

from attacks.evaluator import Evaluator
from attacks.run import AttackRunConfig, run_attacks


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, faces_factory):
    """A 2-round FedPE run on toy faces, plus each client's class centers uploaded in the last
    round (what a method sharing W would have sent), written to the run's wire log."""
    from attacks.views import load_ground_truth
    from federated_core.engine import ClientData, FederatedConfig, run_federated
    from federated_core.engine.messages import make_message
    from federated_core.engine.wire import WireLog

    run = tmp_path_factory.mktemp("attack_run") / "run"
    toy_faces = faces_factory
    clients = [ClientData.from_faces(toy_faces([0, 1, 2], 3, 16)), ClientData.from_faces(toy_faces([3], 3, 16)),
               ClientData.from_faces(toy_faces([4, 5], 3, 16))]
    cfg = FederatedConfig(method="fedpe", rounds=2, batch_size=4, embedding_dim=16, resolution=16, progress=False,
                          eval_initial=False, eval_every=0, seed=1)
    run_federated(cfg, clients, out_dir=run)
    gt = load_ground_truth(run)
    log = WireLog.load(run)
    for party in sorted(gt.private):
        log.append(make_message("class_centers", party, ("server",), 2, "train", {"centers": gt.private[party]["centers"]}))
    log.save(run)
    return run, toy_faces


def _source(toy_faces):
    return lambda ids, per, start: toy_faces(ids, per, 16, seed=start)


def _evaluator(backbone_factory):
    return Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator (untrained)")


def test_server_attacks_every_kind(tiny_run, backbone_factory, tmp_path):
    run, toy_faces = tiny_run
    cfg = AttackRunConfig(observer="server", gallery_distractors=30, gallery_member_fraction=1.0, n_bootstrap=20,
                          public_identities=12, public_images_per_identity=3, decoder_epochs=2, decoder_base_channels=16,
                          decoder_batch_size=16, gradient_clients=2, gradient_images=2, gradient_iterations=5,
                          gradient_logged_iterations=3,
                          gradient_local_steps=(1, 2), evaluator_architecture=None, progress=False, seed=3)
    report = run_attacks(run, cfg, out_dir=tmp_path / "out", faces=_source(toy_faces), evaluator=_evaluator(backbone_factory))
    kinds = [r.kind for r in report.knn]
    assert kinds == ["class_centers", "dp_kmeans_centers"]
    w = report.knn[0]
    assert w.num_observations == 6 and w.num_identifiable == 6  # every client identity is in the gallery
    assert w.num_gallery_identities == 36 and w.num_member_identities_in_gallery == 6
    assert [r.kind for r in report.inversion] == kinds
    assert report.inversion[0].identity_similarity.shape == (6,)
    # gradient probes: the one-identity client first; 2 clients x (2 model states x 2 step counts + 1 DP-SGD)
    assert len(report.gradient) == 10 and report.gradient[0].config["client"] == "client:1"
    assert [r.config["dp_noise_multiplier"] for r in report.gradient[:5]] == [None] * 4 + [0.5]
    assert {r.config["model_state"] for r in report.gradient} == {"initial", "trained"}
    assert report.evaluator == "test evaluator (untrained)"
    # the logged updates: the worst-case clients' first and last uploads, from the wire log
    logged = [(r.config["client"], r.round) for r in report.gradient_logged]
    assert logged == [("client:1", 1), ("client:1", 2), ("client:2", 1), ("client:2", 2)]
    assert all(r.granted_classes == n for r, n in zip(report.gradient_logged, (1, 1, 2, 2)))
    assert all(r.rank1 is not None and r.identity_similarity.shape == (3,) for r in report.gradient_logged[:2])
    # chance of rank-1: client:1's one identity among the 6 members + 30 distractors of the scoring gallery
    assert report.gradient_logged[0].rank1_chance == pytest.approx(1 / 36)
    assert np.isfinite(report.gradient_logged[2].impostor_identity_similarity).all()
    assert (tmp_path / "out" / "gradient_logged_client-1_round2.png").is_file()
    saved = json.loads((tmp_path / "out" / "attacks.json").read_text())
    assert [g["round"] for g in saved["gradient_logged"]] == [1, 2, 1, 2]
    assert saved["observer"] == "server" and len(saved["knn"]) == 2 and "tpr@fpr=0.001" in saved["knn"][0]
    assert (tmp_path / "out" / "inversion_server_class_centers.png").is_file()
    assert "class_centers" in report.table()


def test_client_and_outsider_views_are_limited(tiny_run, backbone_factory):
    run, toy_faces = tiny_run
    for observer, needle in (("client:0", "observes only aggregated backbones"), ("outsider", "observes no update")):
        cfg = AttackRunConfig(observer=observer, attacks=("knn", "gradient"), gallery_distractors=10, n_bootstrap=10,
                              progress=False)
        report = run_attacks(run, cfg, faces=_source(toy_faces), evaluator=_evaluator(backbone_factory))
        assert report.gradient == [] and report.gradient_logged == []
        assert any(needle in n for n in report.notes)
        # neither observed anyone's class centers: only the hypothetical DP k-means release is attacked
        assert [r.kind for r in report.knn] == ["dp_kmeans_centers"]


def test_config_validation():
    with pytest.raises(ValueError, match="attacks must be"):
        AttackRunConfig(attacks=("knn", "magic"))
    with pytest.raises(ValueError, match="dp_kmeans_epsilon"):
        AttackRunConfig(dp_kmeans_epsilon=0.0)


def test_attack_command_errors(tmp_path, capsys):
    from privaudit.cli import main

    assert main(["attack", str(tmp_path), "--quiet"]) == 2
    assert "holds no wire log" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", str(tmp_path), "--observer", "client:x"])
    with pytest.raises(SystemExit):
        main(["attack", str(tmp_path), "--attacks", "knn,nope"])


def test_attack_command_options_reach_the_config():
    from privaudit.cli import build_parser
    from privaudit.commands.attack import config_from_args

    args = build_parser().parse_args(["attack", "run", "--attacks", "gradient", "--gradient-iterations", "7",
                                      "--gradient-dummies", "3", "--gradient-rounds", "last", "--no-simulated-probes",
                                      "--quiet"])
    cfg = config_from_args(args)
    assert cfg.attacks == ("gradient",) and not cfg.gradient_simulated and not cfg.progress
    assert (cfg.gradient_iterations, cfg.gradient_logged_iterations, cfg.gradient_logged_dummies) == (7, 7, 3)
    assert cfg.gradient_logged_rounds == ("last",)
    default = config_from_args(build_parser().parse_args(["attack", "run"]))
    assert default.gradient_simulated and default.gradient_logged_rounds == ("first", "last")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attack", "run", "--gradient-rounds", "middle"])


def test_attack_command_inherits_the_runs_scale_unless_given_a_budget(tmp_path):
    """`privaudit attack` runs the budgets of the audit at the scale the run was trained at
    (its config.json), `--budget` overrides, single options override single budgets."""
    from privaudit.attack_stage import attack_config
    from privaudit.cli import build_parser
    from privaudit.commands.attack import budget_of, config_from_args
    from privaudit.scenario import Scenario

    run = tmp_path / "run"
    run.mkdir()

    def cfg(*extra):
        return config_from_args(build_parser().parse_args(["attack", str(run), "--quiet", *extra]))

    assert budget_of(build_parser().parse_args(["attack", str(run)]))[0] == "demo"  # no config.json: demo, said
    assert "names no scale" in budget_of(build_parser().parse_args(["attack", str(run)]))[1]
    (run / "config.json").write_text(json.dumps({"scale": "tiny"}))
    tiny = attack_config(Scenario.tiny(), ("knn", "inversion", "gradient"))
    got = cfg()
    assert (got.whitebox_iterations, got.decoder_epochs, got.gradient_iterations) == (
        tiny.whitebox_iterations, tiny.decoder_epochs, tiny.gradient_iterations)
    demo = cfg("--budget", "demo")
    assert demo.gradient_iterations == Scenario.demo().attacks.gradient_iterations != got.gradient_iterations
    assert cfg("--whitebox-iterations", "3").whitebox_iterations == 3
    assert cfg("--epoch-prior", "dimitrov").gradient_logged_epoch_prior == "dimitrov"
    (run / "config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="config.json' is not a JSON object"):
        cfg()


def test_logged_update_attack_unrolls_epochs_when_asked(tiny_run, backbone_factory, tmp_path):
    """The epoch prior reaches the logged-update attack: its reconstructions are then one per
    training image of the client (N), not the one-step attack's dummies."""
    run, toy_faces = tiny_run
    common = dict(observer="server", attacks=("gradient",), gradient_simulated=False, gradient_clients=1,
                  gradient_logged_rounds=("last",), gradient_logged_iterations=2, gradient_logged_restarts=1,
                  gradient_logged_dummies=2, gradient_logged_null=False, evaluator_architecture=None,
                  gallery_distractors=10, n_bootstrap=10, progress=False, seed=3)
    one = run_attacks(run, AttackRunConfig(**common), faces=_source(toy_faces), evaluator=_evaluator(backbone_factory))
    shared = run_attacks(run, AttackRunConfig(**common, gradient_logged_epoch_prior="shared"),
                         faces=_source(toy_faces), evaluator=_evaluator(backbone_factory))
    assert not shared.failures, shared.failures
    a, b = one.gradient_logged[0], shared.gradient_logged[0]
    assert a.config["client"] == b.config["client"] == "client:1"
    assert a.reconstructions.shape[0] == 2 and b.reconstructions.shape[0] == 3  # client:1 trained on 3 images
    assert b.config["epoch_prior"] == "shared"
