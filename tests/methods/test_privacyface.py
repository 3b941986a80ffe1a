"""PrivacyFace (Algorithm 2) and its variants on the in-process engine: tiny 2-round runs, what
crosses the wire, the DP events and meta of each release, and the FedSGD server step."""

from __future__ import annotations

import math

import pytest
import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine import ClientData, FederatedConfig, run_federated
from federated_core.engine.messages import SERVER
from federated_core.methods import get_method

RES, DIM = 16, 16


def _faces(identities: list[int], per_identity: int, seed: int) -> FaceSet:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor(identities, dtype=torch.int64).repeat_interleave(per_identity)
    images = torch.randint(0, 256, (len(labels), 3, RES, RES), generator=gen, dtype=torch.uint8)
    return FaceSet(images, labels)


def _clients(num_clients: int = 3, ids: int = 5, per_identity: int = 2) -> list[ClientData]:
    return [ClientData.from_faces(_faces([100 * k + i for i in range(ids)], per_identity, seed=k)) for k in range(num_clients)]


def _config(method: str, **params) -> FederatedConfig:
    return FederatedConfig(
        method=method, method_params=params, rounds=2, batch_size=5, lr=0.05, progress=False,
        embedding_dim=DIM, resolution=RES, eval_initial=False, eval_every=0, seed=3,
    )


CLIENT_KINDS = {
    "privacyface": {"backbone", "noisy_cluster_centers"},
    "privacyface-nonoise": {"backbone", "cluster_centers"},
    "noisy-centers": {"backbone", "noisy_class_centers"},
    "privacyface-e2e": {"backbone", "noisy_cluster_centers"},
}


@pytest.mark.parametrize("method", sorted(CLIENT_KINDS))
def test_two_round_run_sends_backbone_and_releases_never_w(method: str) -> None:
    from accountants import GaussianEvent, NonPrivateEvent

    clients = _clients()
    q = 2
    result = run_federated(_config(method, max_queries=q, min_cluster_size=1, rho=1.3), clients)
    wire = result.wire
    release_kind = sorted(CLIENT_KINDS[method] - {"backbone"})[0]
    for k, data in enumerate(clients):
        party = f"client:{k}"
        sent = wire.sent_by(party)
        assert {m.kind for m in sent} == CLIENT_KINDS[method]
        assert all(m.receivers == (SERVER,) for m in sent)
        final_w = torch.nn.functional.normalize(result.client_states[k].tensors["centers"], dim=1)
        for m in sent:
            if m.kind == "backbone":
                assert m.phase == "train"
                continue
            assert m.phase == "clusters"
            rows = m.tensors["centers"]
            if method == "noisy-centers":
                assert rows.shape == (data.num_classes, DIM)
                assert isinstance(m.event, GaussianEvent)
                assert m.meta["sensitivity"] == 2.0
            else:
                assert rows.shape[0] <= q  # at most Q clusters per client per round
                rec = m.meta["releases"]
                assert len(rec) == rows.shape[0]
                assert all(r["client"] == k and r["round"] == m.round for r in rec)
                if method == "privacyface-e2e":  # one event for the whole call, all Q queries
                    assert m.event.to_dict()["type"] == "self_composed" and m.event.count == q
                    assert m.meta["end_to_end_private"] is True
                else:
                    assert rows.shape[0] >= 1
                    assert all(r["cluster_size"] >= 1 for r in rec)
            if method == "privacyface-nonoise":
                assert isinstance(m.event, NonPrivateEvent)
            else:
                assert torch.allclose(rows.norm(dim=1), torch.ones(rows.shape[0]), atol=1e-5)
            # W never leaves: no released row is (a rescaling of) one of the client's class centers
            cos = torch.nn.functional.normalize(rows.float(), dim=1) @ final_w.t()
            if method != "privacyface-nonoise" and rows.shape[0]:
                assert float(cos.max()) < 0.999
        # clients hear only from the server
        assert all(m.sender in (SERVER, party) for m in wire.observed_by(party))
    kinds_from_clients = {m.kind for m in wire if m.sender != SERVER}
    assert "class_centers" not in kinds_from_clients
    # each round: the train-phase relay holds every release of the round, owners tagged
    for r in (1, 2):
        relay = [m for m in wire if m.sender == SERVER and m.kind == release_kind and m.round == r]
        ups = [m for m in wire if m.sender != SERVER and m.kind == release_kind and m.round == r]
        if not any(u.tensors["centers"].shape[0] for u in ups):
            assert not relay
            continue
        assert len(relay) == 1 and relay[0].phase == "train"
        assert relay[0].tensors["centers"].shape[0] == sum(u.tensors["centers"].shape[0] for u in ups)
        owners = relay[0].tensors["owners"].tolist()
        assert sorted(set(owners)) == sorted(int(u.sender.split(":")[1]) for u in ups if u.tensors["centers"].shape[0])
    # every client trained against the other clients' releases only
    for k in range(len(clients)):
        last = result.client_states[k].meta["last_update"]
        relay2 = [m for m in wire if m.sender == SERVER and m.kind == release_kind and m.round == 2]
        if relay2:
            own = int((relay2[0].tensors["owners"] == k).sum())
            assert last["clusters_received"] == relay2[0].tensors["centers"].shape[0] - own
        else:
            assert last["clusters_received"] == 0


def test_noisy_release_events_and_meta_match_the_accountants() -> None:
    from accountants import GaussianEvent, SelfComposedEvent, dplc_sensitivity, gaussian_sigma

    clients = _clients()
    eps, delta, rho = 0.7, 1e-3, 1.2
    result = run_federated(
        _config("privacyface", max_queries=3, min_cluster_size=1, epsilon=eps, delta=delta, rho=rho, calibration="classic"),
        clients,
    )
    uploads = [m for m in result.wire if m.kind == "noisy_cluster_centers" and m.sender != SERVER]
    assert len(uploads) == 2 * len(clients)
    for m in uploads:
        recs = m.meta["releases"]
        for r in recs:
            sens = dplc_sensitivity(rho, r["cluster_size"], bound="tight")
            assert r["sensitivity"] == pytest.approx(sens, rel=1e-12)
            assert r["sigma"] == pytest.approx(gaussian_sigma(sens, eps, delta, method="classic"), rel=1e-12)
            assert r["noise_multiplier"] == pytest.approx(math.sqrt(2 * math.log(1.25 / delta)) / eps, rel=1e-9)
        z = recs[0]["noise_multiplier"]
        expected = GaussianEvent(z, unit="class-center") if len(recs) == 1 else SelfComposedEvent(GaussianEvent(z, unit="class-center"), len(recs))
        assert m.event.to_dict() == expected.to_dict()
    # the clients' own state keeps the same records (and the resolved T)
    for k in range(len(clients)):
        meta = result.client_states[k].meta
        assert meta["min_cluster_size"] == 1
        assert meta["delta"] == delta
        assert len(meta["dplc_releases"]) == sum(len(m.meta["releases"]) for m in uploads if m.sender == f"client:{k}")


def test_release_removal_rule_is_a_hyperparameter() -> None:
    clients = _clients(num_clients=2)
    result = run_federated(_config("privacyface", min_cluster_size=1, max_queries=3, dplc_removal="release"), clients)
    ups = [m for m in result.wire if m.kind == "noisy_cluster_centers" and m.sender != SERVER]
    assert ups and all(m.meta["removal"] == "release" for m in ups)
    assert result.metrics["method"]["hyperparameters"]["dplc_removal"] == "release"


def test_threshold_fraction_and_default_delta_are_resolved_per_client() -> None:
    clients = _clients(num_clients=2, ids=10, per_identity=2)
    result = run_federated(_config("privacyface", min_cluster_size=0.3, max_queries=1), clients)
    for k in range(2):
        assert result.client_states[k].meta["min_cluster_size"] == 3  # ceil(0.3 * 10)
        assert result.client_states[k].meta["delta"] == pytest.approx(1 / 20)
    for m in result.wire:
        if m.kind == "noisy_cluster_centers" and m.sender != SERVER:
            assert all(r["cluster_size"] >= 3 for r in m.meta["releases"])
            assert m.meta["min_cluster_size"] == 3
    hp = result.metrics["method"]["hyperparameters"]
    assert hp["min_cluster_size"] == 0.3 and hp["rho"] == 1.3 and hp["max_queries"] == 1


def test_unreachable_threshold_sends_no_release_and_trains_like_fedavg() -> None:
    clients = _clients(num_clients=2)
    result = run_federated(_config("privacyface", min_cluster_size=50), clients)
    assert {m.kind for m in result.wire if m.sender != SERVER} == {"backbone"}
    assert all(not s.meta["dplc_releases"] for s in result.client_states.values())


def test_random_control_releases_data_independent_directions() -> None:
    clients = _clients(num_clients=2)
    a = run_federated(_config("privacyface", release="random-control", max_queries=2), clients)
    other = [ClientData.from_faces(_faces([900 + i for i in range(5)], 2, seed=50 + k)) for k in range(2)]
    b = run_federated(_config("privacyface", release="random-control", max_queries=2), other)
    ups_a = [m for m in a.wire if m.kind == "noisy_cluster_centers" and m.sender != SERVER]
    ups_b = [m for m in b.wire if m.kind == "noisy_cluster_centers" and m.sender != SERVER]
    assert len(ups_a) == 4 and all(m.event is None and m.tensors["centers"].shape == (2, DIM) for m in ups_a)
    for ma, mb in zip(ups_a, ups_b):  # same seed, different data: the same directions
        assert torch.equal(ma.tensors["centers"], mb.tensors["centers"])


def test_release_none_is_the_phi_baseline_and_runs_are_seeded() -> None:
    clients = _clients(num_clients=2)
    a = run_federated(_config("privacyface", release="none"), clients)
    assert {m.kind for m in a.wire if m.sender != SERVER} == {"backbone"}
    b1 = run_federated(_config("privacyface", min_cluster_size=1), clients)
    b2 = run_federated(_config("privacyface", min_cluster_size=1), clients)
    for m1, m2 in zip(b1.wire, b2.wire):
        assert m1.kind == m2.kind
        for name in m1.tensors:
            assert torch.equal(m1.tensors[name], m2.tensors[name])


def test_fedsgd_server_step_is_one_sgd_step_on_the_averaged_gradient() -> None:
    clients = _clients(num_clients=2)
    config = _config("privacyface", aggregation="fedsgd", min_cluster_size=1)
    result = run_federated(config, clients)
    wire = result.wire
    kinds = {m.kind for m in wire if m.sender != SERVER}
    assert kinds == {"backbone_gradient", "noisy_cluster_centers"}
    down1 = [m for m in wire if m.kind == "backbone" and m.round == 1][0]
    down2 = [m for m in wire if m.kind == "backbone" and m.round == 2][0]
    grads = [m for m in wire if m.kind == "backbone_gradient" and m.round == 1]
    n = sum(m.meta["num_samples"] for m in grads)
    for name, g0 in grads[0].tensors.items():
        g = sum(m.tensors[name].double() * m.meta["num_samples"] for m in grads) / n
        theta = down1.tensors[name].double()
        expected = theta - config.lr * (g + config.weight_decay * theta)
        torch.testing.assert_close(down2.tensors[name].double(), expected, rtol=1e-5, atol=1e-6)
    for name, t in down1.tensors.items():  # buffers are not stepped
        if name not in grads[0].tensors:
            assert torch.equal(down2.tensors[name], t)


def test_rejects_bad_hyperparameters() -> None:
    for params, match in [
        ({"rho": 0.0}, "rho"),
        ({"min_cluster_size": 0}, "min_cluster_size"),
        ({"max_queries": 0}, "max_queries"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"delta": 1.5}, "delta"),
        ({"calibration": "gauss"}, "calibration"),
        ({"release": "all"}, "release"),
        ({"aggregation": "fedprox"}, "aggregation"),
        ({"loss": "softmax"}, "loss"),
        ({"public_set": {"images": 3}}, "public_set"),
        ({"dplc_removal": "noisy"}, "dplc_removal"),
    ]:
        with pytest.raises(ValueError, match=match):
            get_method("privacyface", **params)


def test_public_set_fine_tunes_local_models_before_upload() -> None:
    public = {"identities": [0, 4], "images_per_identity": 2, "generator": {"seed": 0, "resolution": RES}, "epochs": 1}
    clients = _clients(num_clients=2)
    plain = run_federated(_config("privacyface", min_cluster_size=1), clients)
    tuned = run_federated(_config("privacyface", min_cluster_size=1, public_set=public), clients)
    # the public set adds no message and no kind: it is public data every party can regenerate
    assert [(m.kind, m.sender, m.round) for m in plain.wire] == [(m.kind, m.sender, m.round) for m in tuned.wire]
    up_plain = [m for m in plain.wire if m.kind == "backbone" and m.sender == "client:0"][0]
    up_tuned = [m for m in tuned.wire if m.kind == "backbone" and m.sender == "client:0"][0]
    assert any(not torch.equal(up_plain.tensors[n], up_tuned.tensors[n]) for n in up_plain.tensors)
    state = tuned.client_states[0]
    assert state.tensors["public_centers"].shape == (4, DIM)
    assert set(get_method("privacyface", public_set=public).private_state(state)) == {"centers"}
    fedsgd = run_federated(_config("privacyface", aggregation="fedsgd", min_cluster_size=1, public_set=public), clients)
    assert {m.kind for m in fedsgd.wire if m.sender != SERVER} == {"backbone_gradient", "noisy_cluster_centers"}


@pytest.mark.parametrize("release", ["noisy", "clean", "noisy-class-centers", "random-control", "private-e2e"])
def test_release_members_are_recorded_in_private_state_only(release: str) -> None:
    """Each release's local classes are kept in the client's state (ground truth for scoring the
    attacks), one record per uploaded release, consistent with the release; never on the wire."""
    import json

    clients = _clients(num_clients=2, ids=6)
    params = dict(max_queries=2, min_cluster_size=1, rho=1.3)
    if release != "noisy":
        params["release"] = release
    result = run_federated(_config("privacyface", **params), clients)
    for k, data in enumerate(clients):
        party = f"client:{k}"
        uploads = [m for m in result.wire.sent_by(party) if m.kind != "backbone"]
        records = result.client_states[k].meta["release_members"]
        assert [r["round"] for r in records] == [m.round for m in uploads]
        for rec, msg in zip(records, uploads):
            assert rec["kind"] == msg.kind
            rows = rec["rows"]
            assert len(rows) == msg.tensors["centers"].shape[0]
            assert all(0 <= j < data.num_classes for r in rows for j in r)
            if release == "noisy-class-centers":
                assert rows == [[j] for j in range(data.num_classes)]
            elif release == "random-control":
                assert rows == [[], []]
            else:
                # sets of distinct local classes, sizes as the meta says; the private variant's
                # noisy count may pass T with an empty cap (a release of noise only)
                assert all(len(r) == len(set(r)) for r in rows)
                assert release == "private-e2e" or all(len(r) >= 1 for r in rows)
                if release in ("noisy", "clean"):
                    assert [len(r) for r in rows] == [x["cluster_size"] for x in msg.meta["releases"]]
    for m in result.wire:
        assert "release_members" not in json.dumps(m.meta, default=str)
