import pytest
import torch

from federated_core.engine.messages import (
    MESSAGE_KINDS,
    Message,
    client_id_of,
    client_party,
    make_message,
    register_message_kind,
)


def test_make_message_copies_and_counts_bytes():
    w = torch.ones(3, 4)
    m = make_message("class_centers", "client:2", ["server"], 1, "train", {"centers": w, "ids": torch.arange(3)})
    w.add_(1.0)  # a later local step must not change what was sent
    assert torch.equal(m.tensors["centers"], torch.ones(3, 4))
    assert m.nbytes == 3 * 4 * 4 + 3 * 8
    assert m.receivers == ("server",)
    assert m.observed_by("server") and m.observed_by("client:2") and not m.observed_by("client:1")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("kind", "gradients_of_everything", "registered message kind"),
        ("sender", "client:-1", "sender"),
        ("sender", "everyone", "sender"),
        ("receivers", ("*",), "receiver"),
        ("receivers", (), "non-empty tuple"),
        ("receivers", "server", "non-empty tuple"),
        ("receivers", ("client:1", "client:1"), "repeat"),
        ("receivers", ("client:3",), "own sender"),
        ("round", -1, "round"),
        ("phase", "", "phase"),
        ("meta", {"x": object()}, "JSON"),
        ("event", 3.0, "event"),
    ],
)
def test_message_validation(field, value, match):
    fields = dict(kind="backbone", sender="client:3", receivers=("server",), round=1, phase="train",
                  tensors={"a": torch.zeros(1)}, event=None, meta={})
    fields[field] = value
    with pytest.raises(ValueError, match=match):
        Message(**fields)


def test_party_names():
    assert client_party(7) == "client:7"
    assert client_id_of("client:12") == 12
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="client_id"):
            client_party(bad)
    with pytest.raises(ValueError, match="client"):
        client_id_of("server")
    with pytest.raises(ValueError, match="client"):
        client_id_of("client:01")


def test_register_message_kind():
    register_message_kind("test_only_kind", "a kind used by this test")
    register_message_kind("test_only_kind", "a kind used by this test")  # idempotent
    assert "test_only_kind" in MESSAGE_KINDS
    with pytest.raises(ValueError, match="already registered"):
        register_message_kind("test_only_kind", "another meaning")
    with pytest.raises(ValueError, match="lower-case"):
        register_message_kind("Bad Kind", "x")
    del MESSAGE_KINDS["test_only_kind"]
