"""Scale presets, the federated data they build, and `privaudit train` end to end (tiny scale)."""

import json

import pytest
import torch

from federated_core.engine import WireLog
from federated_core.scales import FederatedScale, federated_config, federated_scale





def test_scale_presets_and_validation():
    tiny = federated_scale("tiny")
    assert tiny.client_identities == tiny.num_clients * tiny.identities_per_client
    assert federated_scale("demo", rounds=3).rounds == 3
    config = federated_config(tiny, "fedgc", seed=2, participation=0.5)
    assert config.method == "fedgc" and config.rounds == tiny.rounds and config.participation == 0.5
    with pytest.raises(ValueError, match="scale"):
        federated_scale("huge")
    with pytest.raises(ValueError, match="partition"):
        federated_scale("tiny", partition="random")
    with pytest.raises(ValueError, match="one-identity"):
        federated_scale("tiny", partition="one-identity")
    with pytest.raises(ValueError, match="test_images_per_identity"):
        FederatedScale("x", 2, 2, 2, 4, 1, 1, 1, 4, 0.1)


@pytest.mark.parametrize("partition, clients, per_client", [("balanced", 3, 4), ("lognormal", 3, 4), ("one-identity", 5, 1)])
def test_federated_data_is_identity_disjoint(partition, clients, per_client):
    from federated_core.pretrain import SyntheticSpec
    from federated_core.scales import build_federated_data

    scale = federated_scale("tiny", partition=partition, num_clients=clients, identities_per_client=per_client,
                            images_per_identity=2, test_identities=4, test_images_per_identity=2)
    data = build_federated_data(scale, SyntheticSpec(seed=0, resolution=16), seed=1)
    held = [set(c.identities) for c in data.clients]
    assert sum(len(h) for h in held) == len(set().union(*held)) == clients * per_client  # clients disjoint
    assert not set().union(*held) & set(data.test.labels.tolist())  # test identities unseen
    assert min(set().union(*held)) >= scale.identity_pool_start  # far from phi0's public ids
    if partition == "one-identity":
        assert all(len(h) == 1 for h in held)
    spec = data.data_spec["clients"]["client:1"]
    assert spec["identities"] == data.clients[1].identities
    from federated_core.data import SyntheticFaces

    again = SyntheticFaces(**{k: v for k, v in data.data_spec["generator"].items() if v is not None}).make_set(
        torch.tensor(spec["identities"]), spec["images_per_identity"], start_index=spec["start_index"])
    assert torch.equal(again.images, data.clients[1].faces.images)  # the spec regenerates the images


def test_train_command_end_to_end(tmp_path, capsys):
    from privaudit.cli import main

    out = tmp_path / "fedgc"
    rc = main(["train", "--method", "fedgc", "--scale", "tiny", "--rounds", "2", "--seed", "0", "--out", str(out),
               "--quiet", "--from-scratch", "--param", "lam=5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "fedgc" in printed and "rounds" in printed
    wire = WireLog.load(out)
    seen = wire.observed_by("client:0")
    assert {m.kind for m in seen} == {"backbone", "class_centers"}
    assert all(m.sender in ("server", "client:0") and m.round in (1, 2) for m in seen)
    metrics = json.loads((out / "metrics.json").read_text())
    hp = metrics["method"]["hyperparameters"]
    assert hp["lam"] == 5  # the --param reached the method, recorded beside the resolved preset
    assert hp["fidelity"] == "default" and hp["fidelity_deviations"] == {}
    assert (out / "checkpoint" / "backbone.safetensors").is_file()
    assert (out / "ground_truth" / "client_states.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["phi0"]["from_scratch"] is True
    assert main(["train", "--method", "no-such-method", "--scale", "tiny", "--out", str(tmp_path / "x"), "--quiet",
                 "--from-scratch"]) == 2


def test_train_command_from_phi0(tmp_path):
    from privaudit.cli import main

    out = tmp_path / "runs" / "fedpe"
    assert main(["train", "--method", "fedpe", "--scale", "tiny", "--rounds", "1", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["phi0"]["from_scratch"] is False
    assert (tmp_path / "runs" / "cache").is_dir()  # phi0 cached beside the run
    metrics = json.loads((out / "metrics.json").read_text())
    from federated_core.integrity import file_sha256

    # the run's artifacts name φ0 by its bytes, never by an absolute path
    assert metrics["config"]["initial_backbone"] == {"sha256": file_sha256(config["phi0"]["checkpoint"])}
    assert set(metrics["evaluation"]) == {"0", "1"}
