"""A team's own backbone weights (issue #17 part 2): `read_state_dict` (safetensors, .pt, wrapped
and DataParallel-prefixed state dicts, refusals naming the file), `load_pretrained_backbone`
(embedding_dim inferred / checked, fit errors listing keys) and `import_as_checkpoint`
(byte-reproducible, readable by `load_backbone`, no absolute path inside)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from federated_core.models import build_backbone, load_backbone, read_checkpoint_config
from federated_core.models.weights import (
    BACKBONE_NAMES,
    EMBEDDING_KEYS,
    WeightsFileNotFoundError,
    _adapt_keys,
    import_as_checkpoint,
    load_pretrained_backbone,
    read_state_dict,
    resolve_backbone_name,
)

DIM, RES = 24, 32


@dataclasses.dataclass
class TrainingState:
    """A non-tensor object a careless checkpoint might pickle."""

    epoch: int = 3


@pytest.fixture(autouse=True)
def _seeded_rng():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@pytest.fixture
def tiny() -> nn.Module:
    return build_backbone("tiny", embedding_dim=DIM, resolution=RES).eval()


def _input(resolution: int = RES) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.rand(3, 3, resolution, resolution, generator=g) * 2 - 1


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)  # safetensors files store their keys sorted
    for key, tensor in want.items():
        assert torch.equal(got[key], tensor), key


def _write(kind: str, model: nn.Module, folder: Path) -> tuple[Path, str | None]:
    """Save ``model``'s weights as ``kind``; return the path and the expected wrapper key."""
    state = _state(model)
    if kind == "safetensors":
        path = folder / "w.safetensors"
        save_file(state, str(path))
        return path, None
    if kind == "pt":
        path = folder / "w.pt"
        torch.save(state, path)
        return path, None
    wrapper = kind.split("-")[1]  # "wrapped-state_dict" -> "state_dict"
    path = folder / "w.pth"
    prefixed = {f"module.{k}": v for k, v in state.items()}
    torch.save({wrapper: prefixed, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    return path, wrapper


@pytest.mark.parametrize("kind", ["safetensors", "pt", "wrapped-state_dict", "wrapped-model", "wrapped-backbone"])
def test_weights_load_exactly_in_every_format(tiny: nn.Module, tmp_path: Path, kind: str) -> None:
    path, wrapper = _write(kind, tiny, tmp_path)
    original = _state(tiny)
    _assert_same_tensors(read_state_dict(path), original)

    model, info = load_pretrained_backbone("tiny", path, resolution=RES)
    _assert_same_tensors(model.state_dict(), original)
    assert not model.training
    x = _input()
    with torch.no_grad():
        assert torch.equal(model(x), tiny(x))
    assert info == {
        "name": "tiny",
        "embedding_dim": DIM,
        "resolution": RES,
        "kwargs": {},
        "weights_path": str(path),
        "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "weights_key": wrapper,
        "num_tensors": len(original),
    }


def test_names_resolve_to_registry_names() -> None:
    assert resolve_backbone_name("inception-resnet-v1") == "inception_resnet_v1"
    assert resolve_backbone_name("inception_resnet_v1") == "inception_resnet_v1"
    assert sorted(set(BACKBONE_NAMES.values())) == sorted(EMBEDDING_KEYS)
    with pytest.raises(ValueError, match="model.backbone must be one of .*'resnet50'"):
        resolve_backbone_name("resnet50")


@pytest.mark.parametrize(
    ("name", "dim", "resolution"),
    [
        ("tiny", 40, 32),
        ("mobilefacenet", 40, 32),
        ("iresnet18", 40, 32),
        ("iresnet34", 40, 32),
        ("inception_resnet_v1", 512, 32),
    ],
)
def test_embedding_keys_give_the_built_embedding_dim(name: str, dim: int, resolution: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_backbone(name, embedding_dim=dim, resolution=resolution)
    weight = model.state_dict()[EMBEDDING_KEYS[name]]
    assert weight.shape[0] == dim and weight.dim() in (2, 4)


def test_embedding_dim_is_inferred_and_a_different_one_refused(tiny: nn.Module, tmp_path: Path) -> None:
    path, _ = _write("safetensors", tiny, tmp_path)
    _, info = load_pretrained_backbone("tiny", path, embedding_dim=DIM, resolution=RES)
    assert info["embedding_dim"] == DIM
    flat = 128 * (RES // 8) ** 2  # tiny: 128 channels on an R/8 × R/8 map
    with pytest.raises(ValueError) as err:
        load_pretrained_backbone("tiny", path, embedding_dim=128, resolution=RES)
    message = str(err.value)
    assert "model.embedding_dim=128" in message and f"embedding_dim={DIM}" in message
    assert f"'embedding.weight' has shape ({DIM}, {flat})" in message and str(path) in message


def test_weights_of_another_architecture_are_refused_with_the_keys(tiny: nn.Module, tmp_path: Path) -> None:
    path, _ = _write("safetensors", tiny, tmp_path)
    iresnet_keys = list(build_backbone("iresnet18", embedding_dim=DIM, resolution=RES).state_dict())
    tiny_keys = sorted(tiny.state_dict())  # in file order: safetensors sorts its keys
    assert not set(iresnet_keys) & set(tiny_keys)  # so every key is missing or unexpected
    n_missing = sum(not k.endswith(".num_batches_tracked") for k in iresnet_keys)
    with pytest.raises(ValueError) as err:
        load_pretrained_backbone("iresnet18", path, resolution=RES)
    message = str(err.value)
    assert message.startswith(f"weights of {str(path)!r} do not fit backbone 'iresnet18': missing keys [")
    assert f"{iresnet_keys[:5]} ... ({n_missing} in all)" in message
    assert f"unexpected keys {tiny_keys[:5]} ... ({len(tiny_keys)} in all)" in message


def test_a_resolution_mismatch_names_the_shapes(tiny: nn.Module, tmp_path: Path) -> None:
    path, _ = _write("pt", tiny, tmp_path)
    with pytest.raises(ValueError) as err:
        load_pretrained_backbone("tiny", path, resolution=48)
    message = str(err.value)
    assert "missing keys [] (0 in all), unexpected keys [] (0 in all)" in message
    # tiny's linear input is 128 * (R/8)^2: 2048 at 32 px, 4608 at 48 px
    assert f"shape mismatches embedding.weight: file ({DIM}, 2048) vs model ({DIM}, 4608) (1 in all)" in message
    assert "resolution=48" in message


def test_batchnorm_counters_may_be_absent_and_group_norm_weights_get_a_hint(tmp_path: Path) -> None:
    model = build_backbone("iresnet18", embedding_dim=DIM, resolution=RES).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.copy_(torch.rand(buffer.shape) + 0.5)
    state = {k: v for k, v in _state(model).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_counters.safetensors"
    save_file(state, str(path))
    loaded, info = load_pretrained_backbone("iresnet18", path, resolution=RES)
    x = _input()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info["num_tensors"] == len(state)

    group = build_backbone("iresnet18", embedding_dim=DIM, resolution=RES, norm="group")
    group_path = tmp_path / "group.safetensors"
    save_file(_state(group), str(group_path))
    n_stats = sum(k.endswith(("running_mean", "running_var")) for k in model.state_dict())
    with pytest.raises(ValueError, match=rf"\({n_stats} in all\).*norm='group' need norm='group'"):
        load_pretrained_backbone("iresnet18", group_path, resolution=RES)
    loaded_group, _ = load_pretrained_backbone("iresnet18", group_path, resolution=RES, norm="group")
    _assert_same_tensors(loaded_group.state_dict(), _state(group))


def test_a_pickle_of_other_objects_is_refused(tiny: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "careless.pt"
    torch.save({"state_dict": _state(tiny), "training": TrainingState()}, path)
    with pytest.raises(ValueError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert str(path) in message and "plain state dict" in message and "never unpickles" in message
    assert "TrainingState" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([torch.zeros(2)], "holds a list, not a dict of tensors"),
        ({"w": torch.zeros(2), "epoch": 3}, "is not a dict of tensors: 'epoch' holds a int (1 such entries)"),
        ({"state_dict": {"w": torch.zeros(2), "step": "x"}}, "(under key 'state_dict') is not a dict of tensors"),
        ({}, "holds no tensors"),
    ],
)
def test_files_without_a_state_dict_are_refused(tmp_path: Path, content: object, expected: str) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(ValueError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(f"weights file {str(path)!r}") and expected in str(err.value)


def test_unknown_extension_missing_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    npz = tmp_path / "w.npz"
    npz.write_bytes(b"x")
    with pytest.raises(ValueError) as err:
        read_state_dict(npz)
    assert str(npz) in str(err.value)
    assert "['.safetensors', '.pt', '.pth', '.bin', '.ckpt']" in str(err.value)

    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError) as not_found:
        load_pretrained_backbone("tiny", missing, resolution=RES)
    assert isinstance(not_found.value, ValueError) and isinstance(not_found.value, WeightsFileNotFoundError)
    assert str(missing) in str(not_found.value)

    for name in ("bad.safetensors", "bad.pt"):
        corrupt = tmp_path / name
        corrupt.write_bytes(struct.pack("<Q", 10**9) + b"not a real file")
        with pytest.raises(ValueError, match="could not be read") as err:
            read_state_dict(corrupt)
        assert str(corrupt) in str(err.value)


def test_weight_source_kwargs_are_refused(tiny: nn.Module, tmp_path: Path) -> None:
    path, _ = _write("safetensors", tiny, tmp_path)
    with pytest.raises(ValueError, match=r"\['weights_path'\] cannot be combined"):
        load_pretrained_backbone("inception-resnet-v1", path, weights_path=str(path))


def test_facenet_keys_get_the_wrapper_prefix_and_lose_the_classifier() -> None:
    t = torch.zeros(1)
    raw = {"conv2d_1a.conv.weight": t, "last_linear.weight": t, "logits.weight": t, "logits.bias": t}
    assert list(_adapt_keys("inception_resnet_v1", raw)) == ["net.conv2d_1a.conv.weight", "net.last_linear.weight"]
    wrapped = {"net.last_linear.weight": t}
    assert _adapt_keys("inception_resnet_v1", wrapped) == wrapped
    assert _adapt_keys("tiny", raw) == raw


def test_loading_keeps_the_callers_rng(tiny: nn.Module, tmp_path: Path) -> None:
    path, _ = _write("safetensors", tiny, tmp_path)
    before = torch.get_rng_state()
    load_pretrained_backbone("tiny", path, resolution=RES)
    assert torch.equal(torch.get_rng_state(), before)


def test_import_as_checkpoint_is_reproducible_and_loads_as_phi0(tiny: nn.Module, tmp_path: Path) -> None:
    path, _ = _write("wrapped-state_dict", tiny, tmp_path)
    first = import_as_checkpoint("tiny", path, tmp_path / "a" / "phi0.safetensors", resolution=RES)
    second = import_as_checkpoint("tiny", path, tmp_path / "b" / "phi0.safetensors", resolution=RES)
    assert first.read_bytes() == second.read_bytes()

    model, config = load_backbone(first)
    x = _input()
    with torch.no_grad():
        assert torch.equal(model(x), tiny(x))
    assert config == read_checkpoint_config(first)
    assert config["source"] == "imported" and config["weights_file"] == "w.pth"
    assert config["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (config["name"], config["embedding_dim"], config["resolution"], config["kwargs"]) == ("tiny", DIM, RES, {})
    (length,) = struct.unpack("<Q", first.read_bytes()[:8])
    header = first.read_bytes()[8 : 8 + length].decode("utf-8")
    assert str(tmp_path) not in header and "/" not in json.dumps(config)


def test_insightface_arcface_torch_iresnet_keys_are_renamed(tmp_path):
    """insightface's arcface_torch IResNet names its stem conv1 / bn1 / prelu and its stages
    layer1..layer4; such a file loads into privaudit's IResNet with every tensor in place."""
    import re as _re

    import torch as _torch

    from federated_core.models import build_backbone as _build
    from federated_core.models.weights import load_pretrained_backbone as _load

    _torch.manual_seed(3)
    ours = _build("iresnet18", embedding_dim=64, resolution=112).state_dict()

    def theirs(key: str) -> str:  # the arcface_torch layout (insightface/recognition/arcface_torch/backbones/iresnet.py)
        for a, b in (("stem.0.", "conv1."), ("stem.1.", "bn1."), ("stem.2.", "prelu.")):
            if key.startswith(a):
                return b + key[len(a):]
        m = _re.match(r"stages\.(\d+)\.(.*)", key)
        return f"layer{int(m.group(1)) + 1}.{m.group(2)}" if m else key

    insightface = {theirs(k): v.clone() for k, v in ours.items()}
    assert "conv1.weight" in insightface and "layer4.1.conv2.weight" in insightface and "stem.0.weight" not in insightface
    path = tmp_path / "backbone.pth"
    _torch.save(insightface, path)
    model, info = _load("iresnet18", path, resolution=112)
    assert info["embedding_dim"] == 64
    for key, value in model.state_dict().items():
        assert _torch.equal(value, ours[key]), key
