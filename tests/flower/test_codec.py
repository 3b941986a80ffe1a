"""The codec between our `Message` / `ClientState` and Flower's RecordDict: bit-exact round trips
for every dtype, and clear errors for records that do not decode."""

import json

import pytest
import torch
from flwr.app import Array, ConfigRecord, RecordDict

from accountants import GaussianEvent, NonPrivateEvent
from federated_core.engine.messages import make_message
from federated_core.engine.state import ClientState
from privaudit.flower import codec

from flower_helpers import bits_equal


def _tensors():
    gen = torch.Generator().manual_seed(3)
    weird = torch.tensor([float("nan"), float("inf"), -0.0, 1e-45], dtype=torch.float32)
    return {
        "w": torch.randn(3, 4, generator=gen),
        "half": torch.randn(5, generator=gen).half(),
        "bf": torch.randn(2, 3, generator=gen).bfloat16(),
        "f64": torch.randn(2, generator=gen, dtype=torch.float64),
        "weird": weird,
        "steps": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.empty(0, 3),
        "ids": torch.arange(6, dtype=torch.int32).reshape(2, 3).t(),  # not contiguous
    }


@pytest.mark.parametrize("event", [None, NonPrivateEvent(), GaussianEvent(noise_multiplier=1.3)])
def test_message_round_trip_is_bit_exact(event):
    m = make_message("backbone", "client:3", ("server",), 2, "train", _tensors(), event=event, meta={"num_samples": 9})
    content = RecordDict()
    codec.put_message(content, "m.0", m)
    back = codec.get_message(content, "m.0")
    assert (back.kind, back.sender, back.receivers, back.round, back.phase, back.meta) == (
        "backbone", "client:3", ("server",), 2, "train", {"num_samples": 9}
    )
    assert list(back.tensors) == list(m.tensors)
    for name, t in m.tensors.items():
        assert bits_equal(t, back.tensors[name]), name
    assert (back.event is None and event is None) or back.event.to_dict() == event.to_dict()


def test_state_round_trip_and_config_values():
    state = ClientState({"W": torch.randn(4, 16), "steps": torch.tensor([1, 2])}, {"row_identities": [5, 6], "x": 0.1})
    content = RecordDict()
    codec.put_state(content, "s.1", state)
    codec.put_json(content, "job", {"round": 1, "inbox": {"1": [0]}})
    back = codec.get_state(content, "s.1")
    assert back.meta == state.meta and all(bits_equal(state.tensors[k], back.tensors[k]) for k in state.tensors)
    assert codec.get_json(content, "job") == {"round": 1, "inbox": {"1": [0]}}


def test_undecodable_records_name_the_record():
    m = make_message("class_centers", "client:0", ("server",), 1, "train", {"W": torch.ones(2, 2)})
    content = RecordDict()
    codec.put_message(content, "u.0.0", m)
    with pytest.raises(codec.CodecError, match="record 'u.0.1.h' is missing"):
        codec.get_message(content, "u.0.1")
    array = content.array_records["u.0.0.t"]["W"]
    content.array_records["u.0.0.t"]["W"] = Array(dtype="float32", shape=(2, 2), stype=array.stype, data=b"\0" * 8)
    with pytest.raises(codec.CodecError, match=r"u\.0\.0\.t\['W'\]: 8 bytes for shape \(2, 2\) of float32 \(16\)"):
        codec.get_message(content, "u.0.0")
    content.array_records["u.0.0.t"]["W"] = Array(dtype="complex64", shape=(2, 2), stype=array.stype, data=b"\0" * 32)
    with pytest.raises(codec.CodecError, match="unknown dtype 'complex64'"):
        codec.get_message(content, "u.0.0")
    content["u.0.0.h"] = ConfigRecord({"json": "{not json"})
    with pytest.raises(codec.CodecError, match="'u.0.0.h': header is not JSON"):
        codec.get_message(content, "u.0.0")
    header = {"kind": "no_such_kind", "sender": "client:0", "receivers": ["server"], "round": 1, "phase": "train",
              "event": None, "meta": {}, "names": ["W"]}
    content["u.0.0.h"] = ConfigRecord({"json": json.dumps(header)})
    content.array_records["u.0.0.t"]["W"] = codec.tensor_to_array(torch.ones(2, 2))
    with pytest.raises(codec.CodecError, match="message 'u.0.0' does not decode: ValueError: kind must be"):
        codec.get_message(content, "u.0.0")
    with pytest.raises(codec.CodecError, match="cannot cross the wire"):
        codec.tensor_to_array(torch.ones(2, dtype=torch.complex64))
