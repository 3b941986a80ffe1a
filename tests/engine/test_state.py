import pytest
import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine.state import ClientData, ClientState, ServerState, load_states, save_states


def _faces(labels):
    labels = torch.tensor(labels)
    return FaceSet(torch.zeros(len(labels), 3, 16, 16, dtype=torch.uint8), labels)


def test_client_data_local_labels():
    data = ClientData(_faces([500, 7, 500, 1_000_000]), {7: 2, 500: 0, 1_000_000: 1})
    assert data.local_labels.tolist() == [0, 2, 0, 1]
    assert data.identities == [500, 1_000_000, 7]
    assert data.num_classes == 3
    auto = ClientData.from_faces(_faces([9, 3, 9]))
    assert auto.label_map == {3: 0, 9: 1} and auto.local_labels.tolist() == [1, 0, 1]


def test_client_data_validation():
    with pytest.raises(ValueError, match="one-to-one"):
        ClientData(_faces([1, 2]), {1: 0, 2: 2})
    with pytest.raises(ValueError, match="lacks identities"):
        ClientData(_faces([1, 2]), {1: 0})
    with pytest.raises(ValueError, match="at least one"):
        ClientData(_faces([]), {})


def test_states_roundtrip(tmp_path):
    states = {
        "server": ServerState({"backbone.w": torch.randn(3, 2), "centers/client:1": torch.randn(2, 4)}, {"lr": 0.1}),
        "client1": ClientState({"centers": torch.randn(2, 4)}, {"client_id": 1, "row_identities": [5, 6]}),
    }
    save_states(tmp_path / "s", states)
    back = load_states(tmp_path / "s")
    assert type(back["server"]) is ServerState and type(back["client1"]) is ClientState
    for owner, state in states.items():
        assert back[owner].meta == state.meta
        for name, t in state.tensors.items():
            assert torch.equal(back[owner].tensors[name], t)
    with pytest.raises(ValueError, match="JSON"):
        ClientState({}, {"bad": object()})
