"""`embed` (normalisation, input kinds, eval mode and its restoration, batching) and safetensors
checkpoints (round trip, config metadata, refusals), `count_parameters`."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from federated_core.data.faceset import FaceSet
from federated_core.models import (
    build_backbone,
    count_parameters,
    embed,
    load_backbone,
    read_checkpoint_config,
    state_dict_to_safetensors,
)


@pytest.fixture(autouse=True)
def _seeded_rng():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _images(n: int, resolution: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    return torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=g)


def test_embed_normalises_and_matches_a_manual_forward() -> None:
    model = build_backbone("tiny", embedding_dim=24, resolution=16)
    images = _images(10, 16)
    out = embed(model, images, batch_size=4)
    assert out.shape == (10, 24) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out.norm(dim=1), torch.ones(10))
    with torch.no_grad():
        manual = F.normalize(model(images.float() / 127.5 - 1.0), dim=1)
    torch.testing.assert_close(out, manual, rtol=1e-5, atol=1e-6)
    # a FaceSet and a float tensor in [-1, 1] give the same embeddings
    faces = FaceSet(images=images, labels=torch.arange(10))
    torch.testing.assert_close(embed(model, faces), out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(embed(model, faces.as_float()), out, rtol=1e-5, atol=1e-6)


def test_embed_uses_eval_mode_and_restores_the_previous_mode() -> None:
    model = build_backbone("mobilefacenet", embedding_dim=16, resolution=32)
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        model(torch.rand(8, 3, 32, 32) * 2 - 1)
    images = _images(6, 32)
    model.train()
    together = embed(model, images)
    assert model.training
    # eval mode: BatchNorm uses running statistics, so an image's embedding does not depend on its batch
    alone = torch.cat([embed(model, images[k : k + 1]) for k in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    model.eval()
    embed(model, images)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_embed_rejects_bad_input_and_handles_empty_input() -> None:
    model = build_backbone("tiny", embedding_dim=8, resolution=16)
    with pytest.raises(ValueError, match=r"images given as a float tensor must already be in \[-1, 1\]"):
        embed(model, torch.rand(2, 3, 16, 16) * 255)
    with pytest.raises(ValueError, match="images must be uint8"):
        embed(model, torch.zeros(2, 3, 16, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="images must have shape"):
        embed(model, torch.zeros(2, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        embed(model, _images(2, 16), batch_size=0)
    assert embed(model, torch.zeros(0, 3, 16, 16, dtype=torch.uint8)).shape == (0, 8)


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2
    model[0].weight.requires_grad = False
    assert count_parameters(model, trainable_only=True) == 4 + 4 * 2


@pytest.mark.parametrize("name,resolution", [("tiny", 16), ("iresnet18", 16)])
def test_checkpoint_round_trip(tmp_path, name: str, resolution: int) -> None:
    model = build_backbone(name, embedding_dim=16, resolution=resolution)
    with torch.no_grad():  # change BatchNorm buffers (iresnet) from their defaults
        model.train()
        model(torch.rand(4, 3, resolution, resolution) * 2 - 1)
    model.eval()
    extra = {"pretrain": {"epochs": 3, "identities": [0, 300]}, "note": "φ0"}
    path = state_dict_to_safetensors(tmp_path / "sub" / "backbone.safetensors", model, extra)
    loaded, config = load_backbone(path)
    assert config == {"name": name, "embedding_dim": 16, "resolution": resolution, "kwargs": {}, **extra}
    assert read_checkpoint_config(path) == config
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(3, 3, resolution, resolution) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the caller's global RNG is not consumed by load_backbone
    state = torch.random.get_rng_state()
    load_backbone(path)
    assert torch.equal(state, torch.random.get_rng_state())


def test_checkpoint_keeps_build_kwargs(tmp_path) -> None:
    model = build_backbone("iresnet18", embedding_dim=8, resolution=16, dropout=0.2)
    loaded, config = load_backbone(state_dict_to_safetensors(tmp_path / "m.safetensors", model))
    assert config["kwargs"] == {"dropout": 0.2}
    assert loaded.dropout.p == 0.2


def test_checkpoint_refusals(tmp_path) -> None:
    from safetensors.torch import save_file

    model = build_backbone("tiny", embedding_dim=8, resolution=16)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        state_dict_to_safetensors(tmp_path / "a.safetensors", model, {"bad": object()})
    with pytest.raises(ValueError, match=r"config\['resolution'\]=32 contradicts the model"):
        state_dict_to_safetensors(tmp_path / "a.safetensors", model, {"resolution": 32})
    with pytest.raises(ValueError, match="for a model not made by build_backbone"):
        state_dict_to_safetensors(tmp_path / "a.safetensors", nn.Linear(2, 2), {"name": "tiny"})
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a privaudit backbone checkpoint"):
        load_backbone(tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="existing checkpoint file"):
        load_backbone(tmp_path / "missing.safetensors")
    assert json.loads(json.dumps(read_checkpoint_config(state_dict_to_safetensors(tmp_path / "ok.safetensors", model))))


def test_checkpoint_keeps_the_group_norm(tmp_path) -> None:
    model = build_backbone("mobilefacenet", embedding_dim=8, resolution=32, norm="group").eval()
    loaded, config = load_backbone(state_dict_to_safetensors(tmp_path / "g.safetensors", model))
    assert config["kwargs"] == {"norm": "group"} and loaded.norm == "group"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
