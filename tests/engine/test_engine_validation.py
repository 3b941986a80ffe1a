"""The server's upload checks (`federated_core.engine.validation`) in `run_federated`: bad
clients are injected by subclassing FedPE, and the aggregate of the honest clients is derived
independently (FedAvg by hand, and a run in which the bad client uploads nothing)."""

import json
import math

import pytest
import torch

from federated_core.engine import (
    AllUploadsRejectedError,
    FederatedConfig,
    UploadExpectation,
    WireLog,
    make_message,
    run_federated,
    validate_upload,
)
from federated_core.engine.messages import SERVER, Message
from federated_core.methods import get_method
from federated_core.methods.fedpe import FedPE

from engine_helpers import tiny_config

BAD = 1  # the injected client


def _first_float(tensors):
    return next(k for k, v in tensors.items() if v.is_floating_point())


def _nan(ups):
    t = dict(ups[0].tensors)
    name = _first_float(t)
    t[name] = t[name].clone()
    t[name].view(-1)[0] = float("nan")
    return [_with(ups[0], t)]


def _inf(ups):
    t = dict(ups[0].tensors)
    name = "embedding.bias"
    t[name] = t[name].clone()
    t[name][3] = -float("inf")
    return [_with(ups[0], t)]


def _shape(ups):
    t = dict(ups[0].tensors)
    t["embedding.bias"] = torch.zeros(17)
    return [_with(ups[0], t)]


def _missing(ups):
    t = {k: v for k, v in ups[0].tensors.items() if k != "features.1.bias"}
    return [_with(ups[0], t)]


def _extra_kind(ups):
    extra = make_message("class_centers", ups[0].sender, (SERVER,), ups[0].round, ups[0].phase,
                         {"centers": torch.ones(3, 16)})
    return ups + [extra]


def _huge(ups):
    t = dict(ups[0].tensors)
    t["embedding.weight"] = t["embedding.weight"].clone()
    t["embedding.weight"][0, 0] += 1e6
    return [_with(ups[0], t)]


def _silent(ups):
    return []


def _with(message: Message, tensors) -> Message:
    return make_message(message.kind, message.sender, message.receivers, message.round, message.phase,
                        tensors, event=message.event, meta=message.meta)


class BadClientFedPE(FedPE):
    """Real FedPE; the uploads of client ``BAD`` (every round) pass through ``corrupt``."""

    def __init__(self, corrupt, bad=(BAD,)):
        super().__init__()
        self.corrupt, self.bad = corrupt, set(bad)
        self.name = "fedpe-bad-client"

    def client_update(self, phase, client_state, broadcast, data, rng):
        state, uploads = super().client_update(phase, client_state, broadcast, data, rng)
        if client_state.meta["client_id"] in self.bad:
            uploads = self.corrupt(uploads)
        return state, uploads


def _fedavg_by_hand(uploads: list[Message]) -> dict[str, torch.Tensor]:
    total = sum(m.meta["num_samples"] for m in uploads)
    out = {}
    for name, ref in uploads[0].tensors.items():
        if ref.is_floating_point():
            out[name] = sum(m.tensors[name].double() * m.meta["num_samples"] for m in uploads) / total
        else:
            out[name] = torch.stack([m.tensors[name] for m in uploads]).max(0).values
    return out


@pytest.fixture(scope="module")
def module_clients():
    from engine_helpers import make_clients

    return make_clients()


@pytest.fixture(scope="module")
def without_bad_client(module_clients):
    """The run in which client BAD takes part but uploads nothing."""
    return run_federated(tiny_config(rounds=1), module_clients, method=BadClientFedPE(_silent))


CASES = [
    (_nan, {}, ["non_finite: tensor 'features.0.weight' holds 1 NaN and 0 Inf"]),
    (_inf, {}, ["non_finite: tensor 'embedding.bias' holds 0 NaN and 1 Inf"]),
    (_shape, {}, ["shape: tensor 'embedding.bias' has shape (17,), expected (16,)"]),
    (_missing, {}, ["missing_tensor: 1 expected tensor(s) absent, e.g. ['features.1.bias']"]),
    (_extra_kind, {}, ["companion: client:1's 'class_centers' upload was rejected (unexpected_kind",
                       "unexpected_kind: kind 'class_centers' is not accepted from clients in phase 'train' (accepted: backbone)"]),
    (_huge, {"max_update_norm": 1e3}, ["update_norm: the 'backbone' update has l2 norm 1e+06 > max_update_norm 1000"]),
]


@pytest.mark.parametrize("corrupt, config_kwargs, reasons", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_upload_is_rejected_and_the_honest_aggregate_stands(
    corrupt, config_kwargs, reasons, module_clients, without_bad_client, tmp_path
):
    result = run_federated(tiny_config(rounds=1, **config_kwargs), module_clients, tmp_path, method=BadClientFedPE(corrupt))
    (record,) = result.metrics["rounds"]
    assert [(e["client"], e["phase"]) for e in record["rejected"]] == [(BAD, "train")] * len(reasons)
    for entry, expected in zip(record["rejected"], reasons):
        assert entry["reason"].startswith(expected), entry["reason"]
    assert record["participants"] == [0, 1, 2, 3] and record["failed"] == []
    # the wire log keeps the rejected uploads, marked, observed by the server; in memory and on disk
    for wire in (result.wire, WireLog.load(tmp_path)):
        rejected = wire.rejections()
        assert [wire[i].sender for i in rejected] == ["client:1"] * len(reasons)
        assert [wire[i].kind for i in rejected] == [e["kind"] for e in record["rejected"]]
        assert [rejected[i] for i in rejected] == [e["reason"] for e in record["rejected"]]
        assert all(any(m is wire[i] for m in wire.observed_by("server")) for i in rejected)
    index = json.loads((tmp_path / "wire" / "index.json").read_text())
    assert sum(r["rejected"] is not None for r in index["messages"]) == len(reasons)
    # the honest clients' FedAvg, by hand, and exactly the run where client 1 sent nothing
    honest = [m for i, m in enumerate(result.wire) if m.sender not in (SERVER, "client:1")]
    assert sorted(m.sender for m in honest) == ["client:0", "client:2", "client:3"]
    assert all(result.wire.rejection(i) is None for i, m in enumerate(result.wire) if m.sender != "client:1")
    expected = _fedavg_by_hand(honest)
    for name, value in result.backbone.state_dict().items():
        assert torch.allclose(value.double(), expected[name].double(), rtol=0, atol=1e-6), name
        assert torch.equal(value, without_bad_client.backbone.state_dict()[name]), name


def test_honest_updates_pass_the_norm_bound(module_clients, without_bad_client):
    """The bound used above (1e3) rejects only the injected update: the honest ones are far below."""
    start = run_federated(tiny_config(rounds=1), module_clients, method=BadClientFedPE(_silent), stop_after=1)
    broadcast = next(m for m in start.wire if m.sender == SERVER and m.kind == "backbone")
    for m in start.wire:
        if m.sender != SERVER:
            norm = math.sqrt(sum(float((m.tensors[k].double() - broadcast.tensors[k].double()).pow(2).sum())
                                 for k in m.tensors if m.tensors[k].is_floating_point()))
            assert 0 < norm < 1e3


def test_every_upload_rejected_is_an_error(module_clients):
    method = BadClientFedPE(_nan, bad=(0, 1, 2, 3))
    with pytest.raises(AllUploadsRejectedError, match=r"round 1 phase 'train': every upload was rejected.*non_finite"):
        run_federated(tiny_config(rounds=1), module_clients, method=method)


def test_validate_upload_unit_reasons():
    ref = {"w": torch.zeros(2, 3), "n": torch.tensor(1)}
    expected = UploadExpectation(phase="train", kinds=frozenset({"backbone"}), references={"backbone": ref},
                                 max_update_norm=5.0)

    def up(kind="backbone", **tensors):
        return make_message(kind, "client:0", (SERVER,), 1, "train", tensors)

    assert validate_upload(up(w=torch.full((2, 3), 2.0), n=torch.tensor(4)), expected) is None  # norm sqrt(24) < 5
    assert validate_upload(up(w=torch.full((2, 3), 3.0), n=torch.tensor(4)), expected).startswith(
        "update_norm: the 'backbone' update has l2 norm 7.34847 > max_update_norm 5")
    assert validate_upload(up(w=torch.zeros(2, 3, dtype=torch.float64), n=torch.tensor(1)), expected).startswith(
        "dtype: tensor 'w' has dtype torch.float64, expected torch.float32")
    assert validate_upload(up(w=torch.zeros(2, 3), n=torch.tensor(1), x=torch.zeros(1)), expected).startswith(
        "extra_tensor: 1 unexpected tensor(s), e.g. ['x']")
    assert validate_upload(up("class_centers", c=torch.zeros(1)), expected).startswith("unexpected_kind")
    anything = UploadExpectation(phase="train")
    assert validate_upload(up("class_centers", c=torch.zeros(1)), anything) is None
    assert validate_upload(up("class_centers", c=torch.tensor([float("nan"), 1.0])), anything).startswith("non_finite")


def test_registered_methods_accept_what_they_upload():
    """`BackboneMethod.upload_kinds`'s default (derived from the methods' attributes) matches what
    each method sends (test_simulation.CLIENT_KINDS, FedFR's Φ, PrivacyFace's release)."""
    assert get_method("fedpe").upload_kinds("train") == {"backbone"}
    assert get_method("fedpe-fixed").upload_kinds("train") == {"backbone"}
    assert get_method("fedfs").upload_kinds("train") == {"backbone"}
    for name in ("shared-centers", "fedface", "fedgc", "fedgc-cos"):
        assert get_method(name).upload_kinds("train") == {"backbone", "class_centers"}
    assert get_method("fedfr").upload_kinds("train") == {"backbone", "public_class_embeddings"}
    assert get_method("fedfr", public_data=False).upload_kinds("train") == {"backbone"}
    assert get_method("privacyface").upload_kinds("clusters") >= {"noisy_cluster_centers", "backbone"}
    assert get_method("privacyface", aggregation="fedsgd").upload_kinds("train") >= {"backbone_gradient"}

    class Declared(FedPE):
        client_upload_kinds = {"train": ("backbone",), "extra": ("class_centers",)}

    assert Declared().upload_kinds("extra") == {"class_centers"}
    assert Declared().upload_kinds("other") == frozenset()


def test_max_update_norm_config_field():
    assert FederatedConfig.from_dict(tiny_config(max_update_norm=2.5).to_dict()).max_update_norm == 2.5
    for bad in (0.0, -1.0, float("inf"), "1"):
        with pytest.raises(ValueError, match="max_update_norm"):
            FederatedConfig(max_update_norm=bad)
