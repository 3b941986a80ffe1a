"""Observer views of the wire log and the ground truth kept aside for scoring."""

from __future__ import annotations

import pytest
import torch

from attacks.views import CenterVectors, load_ground_truth, observer_view
from federated_core.engine.messages import make_message
from federated_core.engine.wire import WireLog


def _state(seed: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed * 10))
    return {"w": torch.randn(3, 2, generator=g), "steps": torch.tensor(int(seed))}


def _log() -> tuple[WireLog, dict[str, torch.Tensor]]:
    log = WireLog()
    b1, b2 = _state(1), _state(2)
    u0, u1 = _state(3), _state(4)
    w0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    w1 = torch.randn(2, 4, generator=torch.Generator().manual_seed(6))
    both = ("client:0", "client:1")
    log.append(make_message("backbone", "server", both, 1, "train", b1))
    log.append(make_message("backbone", "client:0", ("server",), 1, "train", u0, meta={"num_samples": 9}))
    log.append(make_message("class_centers", "client:0", ("server",), 1, "train", {"centers": w0}))
    log.append(make_message("backbone", "client:1", ("server",), 1, "train", u1, meta={"num_samples": 4}))
    log.append(make_message("class_centers", "client:1", ("server",), 1, "train", {"centers": w1}))
    log.append(make_message("global_class_embeddings", "server", both, 1, "train",
                            {"centers": torch.cat([w0, w1]), "owners": torch.tensor([0, 0, 0, 1, 1])}))
    log.append(make_message("backbone", "server", both, 2, "train", b2))
    return log, {"b1": b1, "b2": b2, "u0": u0, "u1": u1, "w0": w0, "w1": w1}


def test_server_view_groups_by_kind_and_round_and_diffs_backbones():
    log, t = _log()
    view = observer_view(log, "server")
    assert view.kinds() == ["backbone", "backbone_update", "class_centers", "global_class_embeddings"]
    assert view.rounds("backbone") == [1, 2]
    assert len(view.by_kind["backbone"][1]) == 3
    ups = {(u.round, u.sender): u for u in view.backbone_updates()}
    assert set(ups) == {(1, "client:0"), (1, "client:1"), (2, "server")}
    torch.testing.assert_close(ups[(1, "client:0")].delta["w"], t["u0"]["w"] - t["b1"]["w"])
    assert "steps" not in ups[(1, "client:0")].delta  # integer buffers are not differenced
    assert ups[(1, "client:0")].num_samples == 9
    torch.testing.assert_close(ups[(2, "server")].delta["w"], t["b2"]["w"] - t["b1"]["w"])
    cv = view.center_vectors("class_centers")
    torch.testing.assert_close(cv.vectors, torch.cat([t["w0"], t["w1"]]))
    assert cv.sources == ["client:0"] * 3 + ["client:1"] * 2 and cv.rows.tolist() == [0, 1, 2, 0, 1]


def test_client_view_sees_broadcasts_not_other_uploads():
    log, t = _log()
    view = observer_view(log, "client:0")
    assert view.kinds() == ["backbone", "backbone_update", "class_centers", "global_class_embeddings"]
    assert all(m.sender in ("server", "client:0") for m in view.messages)
    ups = {(u.round, u.sender) for u in view.backbone_updates()}
    assert ups == {(1, "client:0"), (2, "server")}  # its own update, and the aggregate's
    cv = view.center_vectors("global_class_embeddings")  # its own rows dropped
    torch.testing.assert_close(cv.vectors, t["w1"])
    assert cv.sources == ["client:1", "client:1"] and cv.rows.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"observer 'client:0' observed no tensor of kind 'class_centers' about another"):
        view.center_vectors("class_centers")
    own = view.center_vectors("class_centers", include_own=True)
    torch.testing.assert_close(own.vectors, t["w0"])
    state, _ = view.latest_backbone()
    torch.testing.assert_close(state["w"], t["b2"]["w"])


def test_missing_kinds_and_bad_observers_are_named():
    log, _ = _log()
    with pytest.raises(ValueError, match="observer 'server' observed no tensor of kind 'noisy_cluster_centers'"):
        observer_view(log, "server").center_vectors("noisy_cluster_centers")
    with pytest.raises(ValueError, match="observer 'client:7' observed no tensor of kind 'backbone_update'"):
        observer_view(log, "client:7").backbone_updates()
    outsider = observer_view(log, "outsider")
    with pytest.raises(ValueError, match="observer 'outsider' observed no tensor of kind 'class_centers'"):
        outsider.center_vectors("class_centers")
    with pytest.raises(ValueError, match="observer must be"):
        observer_view(log, "client:x")
    with pytest.raises(ValueError, match="kind must be one of"):
        observer_view(log, "server").center_vectors("backbone")


def test_run_folder_views_and_ground_truth(tmp_path, faces_factory):
    from federated_core.engine import ClientData, FederatedConfig, run_federated

    clients = [ClientData.from_faces(faces_factory([10, 11, 12], 2, 16)), ClientData.from_faces(faces_factory([20, 21], 2, 16))]
    cfg = FederatedConfig(method="fedpe", rounds=2, batch_size=4, embedding_dim=8, resolution=16, progress=False,
                          eval_initial=False, eval_every=0, seed=3)
    run_federated(cfg, clients, out_dir=tmp_path / "run")
    run = tmp_path / "run"
    server = observer_view(run, "server")
    assert server.rounds() == [1, 2]
    u = server.backbone_updates(round=2, sender="client:1")[0]
    up = server.of_kind("backbone", round=2, sender="client:1")[0]
    base = server.of_kind("backbone", round=2, sender="server")[0]
    for k, d in u.delta.items():
        torch.testing.assert_close(d, up.tensors[k].float() - base.tensors[k].float())
    # the outsider sees only the released final model, equal to the last aggregate
    outsider = observer_view(run, "outsider")
    assert outsider.kinds() == ["backbone"] and outsider.rounds() == [2]
    model = outsider.build_latest_backbone()
    assert model.embedding_dim == 8
    gt = load_ground_truth(run)
    assert gt.identities == {"client:0": [10, 11, 12], "client:1": [20, 21]}
    assert gt.member_ids().tolist() == [10, 11, 12, 20, 21]
    w, ids = gt.true_centers("client:1")
    assert w.shape == (2, 8) and ids == [20, 21]
    cv = CenterVectors("server", "class_centers", 2, w, ["client:1", "client:1"], torch.tensor([1, 0]), [None, None])
    assert gt.observation_ids(cv) == [frozenset({21}), frozenset({20})]
    with pytest.raises(FileNotFoundError):
        load_ground_truth(tmp_path)


def test_cluster_ground_truth_recomputes_dplc_coverage():
    from attacks.views import GroundTruth

    g = torch.Generator().manual_seed(0)
    a, b = torch.nn.functional.normalize(torch.randn(2, 16, generator=g), dim=1)
    w = torch.nn.functional.normalize(torch.stack([a + 0.05 * torch.randn(16, generator=g) for _ in range(4)]
                                                  + [b + 0.05 * torch.randn(16, generator=g) for _ in range(2)]), dim=1)
    ids = [40, 41, 42, 43, 50, 51]
    gt = GroundTruth({"client:2": ids}, {"client:2": 12}, {"client:2": {"centers": w}}, {"client:2": ids}, {},
                     hyperparameters={"rho": 0.5, "max_queries": 2}, client_meta={"client:2": {"min_cluster_size": 2}})
    vecs = torch.stack([a, b])
    cv = CenterVectors("server", "noisy_cluster_centers", 1, vecs, ["client:2"] * 2, torch.tensor([0, 1]), [None] * 2,
                       [{"rho": 0.5, "min_cluster_size": 2, "max_queries": 2}] * 2)
    assert gt.observation_ids(cv) == [frozenset({40, 41, 42, 43}), frozenset({50, 51})]
    assert gt.dplc_parameters("client:2") == (0.5, 2, 2)  # from the client meta and hyper-parameters
    # only one query recomputed (Q = 1): the second row falls back to the centers within rho of it
    cv1 = CenterVectors("server", "cluster_centers", 1, vecs, ["client:2"] * 2, torch.tensor([0, 1]), [None] * 2,
                        [{"rho": 0.5, "min_cluster_size": 2, "max_queries": 1}] * 2)
    assert gt.observation_ids(cv1) == [frozenset({40, 41, 42, 43}), frozenset({50, 51})]


def test_relayed_releases_are_not_counted_twice():
    log = WireLog()
    p0, p1 = torch.randn(1, 4), torch.randn(2, 4)
    log.append(make_message("noisy_cluster_centers", "client:0", ("server",), 1, "clusters", {"centers": p0},
                            meta={"rho": 1.3}))
    log.append(make_message("noisy_cluster_centers", "client:1", ("server",), 1, "clusters", {"centers": p1}))
    log.append(make_message("noisy_cluster_centers", "server", ("client:0", "client:1"), 1, "train",
                            {"centers": torch.cat([p0, p1]), "owners": torch.tensor([0, 1, 1])}))
    server = observer_view(log, "server").center_vectors("noisy_cluster_centers")
    torch.testing.assert_close(server.vectors, torch.cat([p0, p1]))
    assert server.sources == ["client:0", "client:1", "client:1"] and server.rows.tolist() == [0, 0, 1]
    assert server.metas[0] == {"rho": 1.3}  # the upload's own meta, not the relay's
    client = observer_view(log, "client:0").center_vectors("noisy_cluster_centers")
    torch.testing.assert_close(client.vectors, p1)


def test_cluster_ground_truth_uses_the_recorded_release_members():
    from attacks.views import GroundTruth

    ids = [40, 41, 42, 43, 50, 51]
    w = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    records = [{"round": 1, "kind": "noisy_cluster_centers", "rows": [[0, 2], [5]]},
               {"round": 2, "kind": "noisy_cluster_centers", "rows": [[1, 3, 4]]}]
    gt = GroundTruth({"client:0": ids}, {"client:0": 12}, {"client:0": {"centers": w}}, {"client:0": ids}, {},
                     hyperparameters={"rho": 0.5, "max_queries": 2}, client_meta={"client:0": {"release_members": records}})
    vecs = torch.randn(3, 8)
    cv = CenterVectors("server", "noisy_cluster_centers", -1, vecs, ["client:0"] * 3, torch.tensor([0, 1, 0]),
                       [None] * 3, [{}] * 3, [1, 1, 2])
    assert gt.observation_ids(cv) == [frozenset({40, 42}), frozenset({51}), frozenset({41, 43, 50})]
    assert gt.notes == []  # exact: nothing recomputed
    bad = CenterVectors("server", "noisy_cluster_centers", 3, vecs[:1], ["client:0"], torch.tensor([0]), [None], [{}], [3])
    with pytest.raises(ValueError, match="0 noisy_cluster_centers release records for round 3"):
        gt.observation_ids(bad)
    # a run without records falls back to the recomputed approximation, and says so
    old = GroundTruth({"client:0": ids}, {"client:0": 12}, {"client:0": {"centers": w}}, {"client:0": ids}, {},
                      hyperparameters={"rho": 0.5, "max_queries": 2}, client_meta={"client:0": {"min_cluster_size": 1}})
    old.observation_ids(cv)
    assert old.notes and "approximate" in old.notes[0]


def test_run_folder_center_vectors_carry_their_rounds():
    log = WireLog()
    log.append(make_message("noisy_cluster_centers", "client:0", ("server",), 1, "clusters", {"centers": torch.randn(2, 4)}))
    log.append(make_message("noisy_cluster_centers", "client:0", ("server",), 2, "clusters", {"centers": torch.randn(1, 4)}))
    cv = observer_view(log, "server").center_vectors("noisy_cluster_centers", round="all")
    assert cv.row_rounds == [1, 1, 2] and cv.rows.tolist() == [0, 1, 0]
