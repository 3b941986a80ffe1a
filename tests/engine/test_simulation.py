"""End-to-end behaviour of the in-process engine on tiny random-image clients."""

import json

import pytest
import torch
from safetensors.torch import load_file

from federated_core.engine import FederatedConfig, WireLog, run_federated
from federated_core.engine.messages import SERVER, make_message, register_message_kind
from federated_core.engine.simulation import generator, offline_clients, sample_participants
from federated_core.methods import GlobalModel
from federated_core.methods.fedpe import FedPE

from engine_helpers import make_clients, tiny_config

# DESIGN.md §3: what leaves each client, and what the server sends.
CLIENT_KINDS = {
    "fedpe": ["backbone"],
    "fedpe-fixed": ["backbone"],
    "shared-centers": ["backbone", "class_centers"],
    "fedface": ["backbone", "class_centers"],
    "fedgc": ["backbone", "class_centers"],
    "fedgc-cos": ["backbone", "class_centers"],
}
SERVER_KINDS = {
    "fedpe": ["backbone"],
    "fedpe-fixed": ["backbone"],
    "shared-centers": ["backbone", "global_class_embeddings"],
    "fedface": ["backbone", "class_centers"],
    "fedgc": ["backbone", "class_centers"],
    "fedgc-cos": ["backbone", "class_centers"],
}


def _sklearn_auroc(backbone, faces, config) -> float:
    """AUROC of ``backbone`` on the evaluation protocol's pairs: plain torch cosine, scikit-learn."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from federated_core.engine.evaluate import GenericEvaluator
    from federated_core.models import embed

    i, j, same = (torch.as_tensor(np.asarray(a)) for a in GenericEvaluator(faces, config.evaluation).pairs)
    emb = torch.nn.functional.normalize(embed(backbone, faces).double(), dim=1)
    return float(roc_auc_score(same.numpy().astype(bool), (emb[i] * emb[j]).sum(dim=1).numpy()))


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", sorted(CLIENT_KINDS))
def test_two_round_run_sends_exactly_the_designed_kinds(method, clients, test_faces, tmp_path):
    config = tiny_config(method=method, eval_initial=True, eval_every=1)
    result = run_federated(config, clients, out_dir=tmp_path, eval_faces=test_faces)
    wire = WireLog.load(tmp_path)
    assert len(wire) == len(result.wire) > 0
    for k, data in enumerate(clients):
        party = f"client:{k}"
        assert wire.kinds_sent_by(party) == CLIENT_KINDS[method]
        for m in wire.sent_by(party):
            assert m.receivers == (SERVER,)
        for m in wire.observed_by(party):
            assert m.sender in (SERVER, party)  # clients never hear from each other directly
            if m.kind == "class_centers" and m.sender == SERVER:
                assert m.receivers == (party,)  # a client gets back only its own W_k
                assert m.tensors["centers"].shape == (data.num_classes, 16)
        uploads = [m for m in wire.sent_by(party) if m.kind == "backbone"]
        assert [m.round for m in uploads] == [1, 2]
        assert all(m.meta["num_samples"] == len(data) for m in uploads)
    assert wire.kinds_sent_by(SERVER) == SERVER_KINDS[method]
    assert wire.rounds() == [1, 2]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["evaluation"]) == {"0", "1", "2"}
    assert all("rank1" in record["identification"] for record in metrics["evaluation"].values())
    # the final round's AUROC, recomputed outside our evaluation code from the returned backbone
    assert metrics["evaluation"]["2"]["verification"]["auroc"] == pytest.approx(
        _sklearn_auroc(result.backbone, test_faces, config), abs=1e-9
    )
    assert all(r["client_loss"] is not None for r in metrics["rounds"])
    assert metrics["bytes_per_round"]["1"]["clients_sent"] == sum(m.nbytes for m in wire if m.round == 1 and m.sender != SERVER)
    # checkpoint = the returned global model
    from federated_core.models import load_backbone

    saved, _ = load_backbone(tmp_path / "checkpoint" / "backbone.safetensors")
    assert _same_state(saved.state_dict(), result.backbone.state_dict())
    # ground truth: partition and the true private class embeddings, apart from the wire
    partition = json.loads((tmp_path / "ground_truth" / "partition.json").read_text())
    assert partition["client:2"]["identities"] == clients[2].identities
    truth = load_file(str(tmp_path / "ground_truth" / "client_states.safetensors"))
    index = json.loads((tmp_path / "ground_truth" / "client_states.json").read_text())
    assert torch.equal(truth["client:1/centers"], result.client_states[1].tensors["centers"])
    assert index["client:1"]["row_identities"] == clients[1].identities


def test_same_seed_same_numbers_other_seed_other_numbers(clients):
    a = run_federated(tiny_config(seed=3), clients)
    b = run_federated(tiny_config(seed=3), clients)
    c = run_federated(tiny_config(seed=4), clients)
    assert _same_state(a.backbone.state_dict(), b.backbone.state_dict())
    assert [r["client_losses"] for r in a.metrics["rounds"]] == [r["client_losses"] for r in b.metrics["rounds"]]
    assert all(torch.equal(x.tensors[n], y.tensors[n]) for x, y in zip(a.wire, b.wire) for n in x.tensors)
    assert not _same_state(a.backbone.state_dict(), c.backbone.state_dict())


register_message_kind("test_note", "test only: a note the server sends back to an uploader")


class NotingFedPE(FedPE):
    """FedPE whose server_step sends each uploader a note, delivered at its next update (tests the
    engine's delivery of server_step broadcasts across rounds and checkpoints)."""

    def server_step(self, phase, server_state, uploads):
        state, _ = super().server_step(phase, server_state, uploads)
        notes = [
            make_message("test_note", SERVER, (m.sender,), m.round, phase, {"value": torch.tensor([float(m.round)])})
            for m in uploads if m.kind == "backbone"
        ]
        return state, notes

    def client_update(self, phase, client_state, broadcast, data, rng):
        notes = [m for m in broadcast if m.kind == "test_note"]
        new_state, uploads = super().client_update(phase, client_state, [m for m in broadcast if m.kind != "test_note"], data, rng)
        if notes:
            new_state.tensors["last_note"] = notes[-1].tensors["value"].clone()
        return new_state, uploads


def _noting():
    method = NotingFedPE()
    method.name = "fedpe-noting"
    return method


@pytest.mark.parametrize("method", ["fedpe", "fedgc"])
def test_resume_gives_the_uninterrupted_result(method, clients, test_faces, tmp_path):
    kwargs = dict(method=method, rounds=3, participation=0.5, eval_every=1)
    full = run_federated(tiny_config(**kwargs), clients, tmp_path / "full", eval_faces=test_faces)
    part = run_federated(tiny_config(**kwargs), clients, tmp_path / "split", eval_faces=test_faces, stop_after=1)
    assert part.completed_rounds == 1
    resumed = run_federated(tiny_config(**kwargs), clients, tmp_path / "split", eval_faces=test_faces, resume=True)
    assert resumed.completed_rounds == 3
    assert _same_state(full.backbone.state_dict(), resumed.backbone.state_dict())
    for k in full.client_states:
        assert _same_state(full.client_states[k].tensors, resumed.client_states[k].tensors)
    w_full, w_resumed = WireLog.load(tmp_path / "full"), WireLog.load(tmp_path / "split")
    assert len(w_full) == len(w_resumed)
    for x, y in zip(w_full, w_resumed):
        assert (x.kind, x.sender, x.receivers, x.round) == (y.kind, y.sender, y.receivers, y.round)
        assert _same_state(dict(x.tensors), dict(y.tensors))
    strip = lambda ms: [{k: v for k, v in r.items() if k != "seconds"} for r in ms["rounds"]]  # noqa: E731
    assert strip(full.metrics) == strip(resumed.metrics)
    with pytest.raises(ValueError, match="different config"):
        run_federated(tiny_config(**{**kwargs, "lr": 0.01}), clients, tmp_path / "split", resume=True)


def test_resume_delivers_pending_server_messages(clients, tmp_path):
    config = tiny_config(rounds=4, participation=0.5)
    full = run_federated(config, clients, tmp_path / "full", method=_noting())
    run_federated(config, clients, tmp_path / "split", method=_noting(), stop_after=2)
    resumed = run_federated(config, clients, tmp_path / "split", method=_noting(), resume=True)
    notes = {k: s.tensors.get("last_note") for k, s in full.client_states.items()}
    assert any(v is not None for v in notes.values())
    for k, s in resumed.client_states.items():
        assert _same_state(full.client_states[k].tensors, s.tensors)


class FailingFedPE(FedPE):
    def __init__(self, fail: set[tuple[int, int]]):
        super().__init__()
        self.fail = fail
        self.name = "fedpe-failing"

    def client_update(self, phase, client_state, broadcast, data, rng):
        if (client_state.meta["client_id"], client_state.meta["round"]) in self.fail:
            client_state.tensors["centers"].add_(100.0)  # corrupt, then crash: must be rolled back
            raise RuntimeError("disk full")
        return super().client_update(phase, client_state, broadcast, data, rng)


def test_failing_client_is_dropped_and_the_round_goes_on(clients, caplog):
    config = tiny_config(rounds=2, tolerate_client_failures=True)
    result = run_federated(config, clients, method=FailingFedPE({(1, 1)}))
    first, second = result.metrics["rounds"]
    assert first["failed"] == [{"client": 1, "phase": "train", "error": "RuntimeError: disk full"}]
    assert first["participants"] == [0, 2, 3] and second["participants"] == [0, 1, 2, 3]
    assert sorted(m.sender for m in result.wire if m.round == 1 and m.sender != SERVER) == ["client:0", "client:2", "client:3"]
    assert "client:1 failed" in caplog.text
    # client 1's state stayed as initialised (its crash changed nothing) until round 2
    from federated_core.models import build_backbone

    model = build_backbone("tiny", 16, 16)
    fresh = FedPE().client_init(1, clients[1], GlobalModel(model, model.build_config), config, generator(config.seed, "client_init", 1))
    part = run_federated(config, clients, method=FailingFedPE({(1, 1)}), stop_after=1)
    assert torch.equal(part.client_states[1].tensors["centers"], fresh.tensors["centers"])
    with pytest.raises(RuntimeError, match="no client survived"):
        run_federated(config, clients, method=FailingFedPE({(k, 1) for k in range(4)}))


def test_offline_clients_one_client_policy(clients):
    result = run_federated(tiny_config(rounds=3, offline_probability=1.0), clients)
    for record in result.metrics["rounds"]:
        assert len(record["offline"]) == 1 and record["sampled"] == [0, 1, 2, 3]
        gone = f"client:{record['offline'][0]}"
        senders = {m.sender for m in result.wire if m.round == record["round"] and m.sender != SERVER}
        assert gone not in senders and len(senders) == 3
        receivers = {r for m in result.wire if m.round == record["round"] and m.sender == SERVER for r in m.receivers}
        assert gone not in receivers
    with pytest.raises(RuntimeError, match="no client survived"):
        run_federated(tiny_config(offline_probability=1.0, offline_policy="independent"), clients)


def test_offline_and_sampling_helpers():
    assert offline_clients([1, 2, 3], 0.0, "one-client", 0, 1) == []
    drawn = [tuple(offline_clients(list(range(10)), 0.5, "independent", 0, r)) for r in range(1, 200)]
    rate = sum(len(d) for d in drawn) / (10 * len(drawn))
    assert 0.4 < rate < 0.6
    counts = {c: 0 for c in range(8)}
    for r in range(1, 401):
        chosen = sample_participants(list(range(8)), 0.25, seed=1, round=r)
        assert len(chosen) == 2 and chosen == sorted(set(chosen))
        for c in chosen:
            counts[c] += 1
    assert all(60 < n < 140 for n in counts.values())  # uniform: 100 expected each


def test_participation_fraction(clients):
    result = run_federated(tiny_config(rounds=3, participation=0.5), clients)
    for record in result.metrics["rounds"]:
        assert len(record["participants"]) == 2
        senders = sorted({m.sender for m in result.wire if m.round == record["round"] and m.sender != SERVER})
        assert senders == [f"client:{c}" for c in record["participants"]]
    single = run_federated(tiny_config(rounds=1, participation=0.1), clients)
    assert len(single.metrics["rounds"][0]["participants"]) == 1


def test_unbalanced_clients_and_fedavg_weights(tmp_path):
    clients = make_clients(3, ids_per_client=2, per_identity=2)
    clients[2] = make_clients(3, ids_per_client=5, per_identity=4)[2]
    result = run_federated(tiny_config(rounds=1), clients)
    weights = {m.sender: m.meta["num_samples"] for m in result.wire if m.kind == "backbone" and m.sender != SERVER}
    assert weights == {"client:0": 4, "client:1": 4, "client:2": 20}
    # the global backbone is the n_k-weighted average of the uploads (FedGC Alg. 1 line 11)
    uploads = [m for m in result.wire if m.kind == "backbone" and m.sender != SERVER]
    for name, value in result.backbone.state_dict().items():
        expected = sum(m.tensors[name].double() * m.meta["num_samples"] for m in uploads) / 28
        assert torch.allclose(value.double(), expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rounds=0), "rounds"),
        (dict(participation=0.0), "participation"),
        (dict(participation=1.5), "participation"),
        (dict(offline_probability=-0.1), "offline_probability"),
        (dict(offline_policy="sometimes"), "offline_policy"),
        (dict(lr=0.0), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(device="gpu7"), "device"),
        (dict(dp_sgd=dict(max_grad_norm=1.0)), "noise_multiplier"),
        (dict(dp_sgd=dict(noise_multiplier=-1.0)), "noise_multiplier"),
        (dict(dp_sgd=dict(target_epsilon=1.0)), "delta"),
        (dict(dp_sgd=dict(target_epsilon=1.0, delta=1.5)), "delta"),
        (dict(dp_sgd=dict(target_epsilon=0.0, delta=1e-5)), "target_epsilon"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FederatedConfig(**kwargs)


def test_config_roundtrip_and_run_argument_checks(clients):
    config = tiny_config(dp_sgd=dict(noise_multiplier=1.0, max_grad_norm=0.5), method_params={"s": 16.0})
    assert FederatedConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown FederatedConfig"):
        FederatedConfig.from_dict({"round": 3})
    with pytest.raises(ValueError, match="resume"):
        run_federated(tiny_config(), clients, resume=True)
    with pytest.raises(ValueError, match="stop_after"):
        run_federated(tiny_config(), clients, stop_after=5)
    with pytest.raises(ValueError, match="method must be one of"):
        run_federated(tiny_config(method="fedavg-of-everything"), clients)
    with pytest.raises(ValueError, match="takes no hyper-parameter"):
        run_federated(tiny_config(method_params={"lambda": 3}), clients)


def test_dp_sgd_run_tags_uploads_with_events(clients):
    from accountants import PoissonSampledGaussianEvent, SelfComposedEvent

    result = run_federated(tiny_config(method="fedgc", dp_sgd=dict(noise_multiplier=1.1, max_grad_norm=1.0)), clients)
    for m in result.wire:
        if m.sender == SERVER:
            continue
        assert isinstance(m.event, SelfComposedEvent) and isinstance(m.event.event, PoissonSampledGaussianEvent)
        assert m.event.event.noise_multiplier == 1.1
        assert m.event.event.sampling_probability == pytest.approx(min(1.0, 4 / 9))
        assert m.event.count == 2  # round(9 / 4) steps per epoch, one epoch
    plain = run_federated(tiny_config(method="fedgc"), clients)
    from accountants import NonPrivateEvent

    assert all(m.event is None for m in plain.wire if m.kind == "backbone")
    assert all(isinstance(m.event, NonPrivateEvent) for m in plain.wire if m.kind == "class_centers")  # both directions
    with pytest.raises(ValueError, match="mean-feature"):
        run_federated(tiny_config(method="fedgc", method_params={"center_init": "mean-feature"},
                                  dp_sgd=dict(noise_multiplier=1.0)), clients)


class DivergingFedPE(FedPE):
    """FedPE whose server step leaves a NaN in the global backbone in round 2 (as a diverged
    server-side update would; a client's NaN upload is rejected before aggregation instead)."""

    def server_step(self, phase, server_state, uploads):
        state, out = super().server_step(phase, server_state, uploads)
        if uploads[0].round == 2:
            name = next(k for k, v in state.tensors.items() if k.startswith("backbone.") and v.is_floating_point())
            state.tensors[name] = state.tensors[name].clone()
            state.tensors[name].view(-1)[0] = float("nan")
        return state, out


def test_divergence_is_an_error_that_says_so(clients, tmp_path):
    method = DivergingFedPE()
    method.name = "fedpe-diverging"
    with pytest.raises(RuntimeError, match="round 2: the global backbone has non-finite weights"):
        run_federated(tiny_config(rounds=3), clients, tmp_path, method=method)
    assert json.loads((tmp_path / "state" / "progress.json").read_text())["completed_rounds"] == 1
