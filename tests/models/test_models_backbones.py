"""Backbones: shapes, resolution handling, architecture (parameter counts derived by hand from the
papers' layer tables), opacus compatibility of the tiny CNN, and the InceptionResnetV1 wrapper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from federated_core.models import BACKBONE_NAMES, build_backbone, count_parameters
from federated_core.models.heads import MarginHead


@pytest.fixture(autouse=True)
def _seeded_rng():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@pytest.mark.parametrize(
    "name,resolution,dim",
    [("tiny", 16, 32), ("tiny", 32, 128), ("mobilefacenet", 32, 64), ("iresnet18", 16, 64), ("iresnet34", 16, 32)],
)
def test_backbone_maps_images_to_embeddings(name: str, resolution: int, dim: int) -> None:
    model = build_backbone(name, embedding_dim=dim, resolution=resolution).eval()
    x = torch.rand(3, 3, resolution, resolution) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.embedding_dim == dim and model.resolution == resolution
    assert model.build_config == {"name": name, "embedding_dim": dim, "resolution": resolution, "kwargs": {}}
    # unnormalised: norms are not all 1
    assert not torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-3)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(1, 3, resolution + 8, resolution + 8))


def test_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match="name must be one of") as err:
        build_backbone("resnet50")
    for name in BACKBONE_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "name,resolution", [("tiny", 20), ("tiny", 8), ("mobilefacenet", 40), ("mobilefacenet", 16), ("iresnet18", 24)]
)
def test_bad_resolution_is_rejected(name: str, resolution: int) -> None:
    with pytest.raises(ValueError, match=rf"resolution .*got {resolution}"):
        build_backbone(name, embedding_dim=8, resolution=resolution)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="embedding_dim"):
        build_backbone("tiny", embedding_dim=0, resolution=16)
    with pytest.raises(ValueError, match="takes no argument"):
        build_backbone("tiny", embedding_dim=8, resolution=16, dropout=0.1)
    with pytest.raises(ValueError, match="dropout"):
        build_backbone("iresnet18", embedding_dim=8, resolution=16, dropout=1.5)


def _tiny_parameters(resolution: int, dim: int) -> int:
    # stages 16 | 32, 32 | 64, 64 | 128 (3x3 convs without bias), GroupNorm affine 2c each
    convs = [(3, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128)]
    total = sum(cin * cout * 9 + 2 * cout for cin, cout in convs)
    return total + 128 * (resolution // 8) ** 2 * dim + dim


def _mobilefacenet_parameters(resolution: int, dim: int) -> int:
    def conv_bn(cin, cout, k, groups=1, prelu=True):
        return cin // groups * cout * k * k + 2 * cout + (cout if prelu else 0)

    total = conv_bn(3, 64, 3) + conv_bn(64, 64, 3, groups=64)
    cin = 64
    for t, c, n, _s in [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]:
        for _ in range(n):
            hidden = cin * t
            total += conv_bn(cin, hidden, 1) + conv_bn(hidden, hidden, 3, groups=hidden)
            total += conv_bn(hidden, c, 1, prelu=False)
            cin = c
    total += conv_bn(cin, 512, 1)
    side = resolution // 16
    total += 512 * side * side + 2 * 512  # GDConv (depthwise side x side) + BN
    return total + 512 * dim + 2 * dim  # linear 1x1 conv + BatchNorm1d


def _iresnet_parameters(layers: tuple[int, ...], resolution: int, dim: int) -> int:
    total = 3 * 64 * 9 + 2 * 64 + 64
    cin = 64
    for cout, n in zip((64, 128, 256, 512), layers):
        for b in range(n):
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout + cout * cout * 9 + 2 * cout
            if b == 0:  # downsampling shortcut: 1x1 conv + BN
                total += cin * cout + 2 * cout
            cin = cout
    side = resolution // 16
    return total + 2 * 512 + 512 * side * side * dim + dim + 2 * dim


@pytest.mark.parametrize("resolution,dim", [(32, 128), (64, 512)])
def test_tiny_architecture(resolution: int, dim: int) -> None:
    model = build_backbone("tiny", embedding_dim=dim, resolution=resolution)
    assert count_parameters(model) == _tiny_parameters(resolution, dim)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    strides = [m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert strides.count(2) == 3


@pytest.mark.parametrize("resolution", [64, 96, 112])
def test_mobilefacenet_architecture(resolution: int) -> None:
    model = build_backbone("mobilefacenet", embedding_dim=128, resolution=resolution)
    assert count_parameters(model) == _mobilefacenet_parameters(resolution, 128)
    side = resolution // 16
    assert model.gdc[0].kernel_size == (side, side) and model.gdc[0].groups == 512
    # the GDConv kernel covers exactly the last feature map
    with torch.no_grad():
        feature_map = model.conv(model.blocks(model.stem(torch.zeros(1, 3, resolution, resolution))))
    assert feature_map.shape[-2:] == (side, side)


@pytest.mark.parametrize("name,layers,resolution", [("iresnet18", (2, 2, 2, 2), 112), ("iresnet34", (3, 4, 6, 3), 32)])
def test_iresnet_architecture(name: str, layers: tuple[int, ...], resolution: int) -> None:
    model = build_backbone(name, embedding_dim=512, resolution=resolution)
    assert count_parameters(model) == _iresnet_parameters(layers, resolution, 512)
    # the final BatchNorm1d scale is frozen, as in insightface
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - 512
    assert [len(stage) for stage in model.stages] == list(layers)


def test_tiny_supports_opacus_per_sample_gradients() -> None:
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    model = build_backbone("tiny", embedding_dim=8, resolution=16)
    assert ModuleValidator.validate(model, strict=False) == []
    assert ModuleValidator.validate(build_backbone("mobilefacenet", 8, 32), strict=False) != []
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    target = torch.randn(3, 8)
    expected = []
    for k in range(3):
        model.zero_grad()
        F.mse_loss(model(x[k : k + 1]), target[k : k + 1], reduction="sum").backward()
        expected.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad()
    wrapped = GradSampleModule(model, loss_reduction="sum")
    F.mse_loss(wrapped(x.requires_grad_(True)), target, reduction="sum").backward()
    for index, p in enumerate(model.parameters()):
        for k in range(3):
            torch.testing.assert_close(p.grad_sample[k], expected[k][index], rtol=1e-4, atol=1e-5)


def test_tiny_trains_with_cosface_at_sgd_lr_0_1_without_collapsing() -> None:
    """Regression: with ReLU features (no BatchNorm1d to centre them) this exact run collapses every
    embedding onto one direction (mean off-diagonal cosine 1.0, loss stuck near 14)."""
    model = build_backbone("tiny", embedding_dim=32, resolution=16)
    head = MarginHead(16, 32, kind="cosface", s=30.0, m=0.35)
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(16, 3, 16, 16, generator=g) * 2 - 1
    x = (prototypes.repeat_interleave(4, 0) + 0.5 * torch.randn(64, 3, 16, 16, generator=g)).clamp(-1, 1)
    y = torch.arange(16).repeat_interleave(4)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(40):
        idx = torch.randperm(64, generator=g)[:32]
        loss = head(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        e = F.normalize(model(x), dim=1)
    off_diagonal = (e @ e.T)[~torch.eye(64, dtype=torch.bool)]
    assert sum(losses[-5:]) / 5 < 0.1 * losses[0]
    assert float(off_diagonal.mean()) < 0.5
    # identities are separated: each image is closest to another image of its own identity
    sims = e @ e.T - 2 * torch.eye(64)
    assert (y[sims.argmax(dim=1)] == y).float().mean() > 0.9


# --- InceptionResnetV1 wrapper --------------------------------------------------------------


def _facenet_reference():
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False).eval()
    with torch.no_grad():  # give the BatchNorm buffers non-default values
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net


def test_inception_refuses_hub_downloads_and_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="offline") as err:
        build_backbone("inception_resnet_v1", resolution=160, pretrained="vggface2")
    assert "weights_path" in str(err.value)
    with pytest.raises(ValueError, match="embedding_dim .* must be 512"):
        build_backbone("inception_resnet_v1", embedding_dim=128, resolution=160)
    with pytest.raises(ValueError, match="weights_path must be an existing local file"):
        build_backbone("inception_resnet_v1", resolution=160, weights_path=tmp_path / "missing.pt")


def test_inception_loads_local_weights_in_both_formats(tmp_path) -> None:
    from safetensors.torch import save_file

    reference = _facenet_reference()
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    state["logits.weight"] = torch.zeros(7, 512)  # a classification layer as in the hub files
    state["logits.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "weights.pt")
    save_file(state, str(tmp_path / "weights.safetensors"))
    x = torch.rand(2, 3, 160, 160) * 2 - 1
    with torch.no_grad():
        expected = reference(x)  # facenet-pytorch returns L2-normalised embeddings
    for file in ("weights.pt", "weights.safetensors"):
        model = build_backbone("inception_resnet_v1", resolution=160, weights_path=tmp_path / file).eval()
        assert "weights_path" not in model.build_config["kwargs"]
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, 512)
        assert not torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-3)  # unnormalised
        torch.testing.assert_close(F.normalize(out, dim=1), expected, rtol=1e-4, atol=1e-5)

    # other resolutions are resized to 160 inside
    small = build_backbone("inception_resnet_v1", resolution=80, weights_path=tmp_path / "weights.pt").eval()
    x80 = torch.rand(1, 3, 80, 80) * 2 - 1
    with torch.no_grad():
        resized = reference(F.interpolate(x80, size=(160, 160), mode="bilinear", align_corners=False))
        torch.testing.assert_close(F.normalize(small(x80), dim=1), resized, rtol=1e-4, atol=1e-5)

    del state["last_bn.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="missing keys .*last_bn.weight"):
        build_backbone("inception_resnet_v1", resolution=160, weights_path=tmp_path / "broken.pt")


# --- norm="group": MobileFaceNet / IResNet for opacus DP-SGD ------------------------------------

_BATCH_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _state_dict_signature(model: nn.Module) -> str:
    import hashlib

    lines = (f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in model.state_dict().items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# Recorded from the code before the ``norm`` keyword existed: the number of state-dict entries and
# the sha256 of "key:shape:dtype" lines in order. Existing checkpoints load only if these hold.
@pytest.mark.parametrize(
    "name,dim,resolution,count,signature",
    [
        ("mobilefacenet", 128, 32, 333, "c3694df9b4424d73f1224c243585764a7db93a1886346dd4090a7e4ad49d4e66"),
        ("iresnet18", 64, 32, 187, "97855c36d85962134fedf008680cc0642dd01e333dbc46aa5fa2cdc9e7e33cd7"),
        ("iresnet34", 32, 16, 331, "6e016f0df3307a98b2169a29462d16317d70a1c424128ced2a9693f201f7cf75"),
    ],
)
def test_default_norm_keeps_the_state_dict_layout(
    name: str, dim: int, resolution: int, count: int, signature: str
) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        default = build_backbone(name, dim, resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        explicit = build_backbone(name, dim, resolution, norm="batch")
    assert len(default.state_dict()) == count
    assert _state_dict_signature(default) == signature
    assert not any(isinstance(m, nn.GroupNorm | nn.LayerNorm) for m in default.modules())
    assert default.build_config["kwargs"] == {} and explicit.build_config["kwargs"] == {"norm": "batch"}
    # norm="batch" is the default: same modules, same draws from the RNG, same values
    assert list(explicit.state_dict()) == list(default.state_dict())
    for key, value in default.state_dict().items():
        assert torch.equal(explicit.state_dict()[key], value), key


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18"])
def test_group_norm_backbone_has_no_batchnorm_and_treats_examples_independently(name: str) -> None:
    from federated_core.models._norms import num_groups

    batch = build_backbone(name, embedding_dim=16, resolution=32)
    model = build_backbone(name, embedding_dim=16, resolution=32, norm="group")
    assert model.build_config == {"name": name, "embedding_dim": 16, "resolution": 32, "kwargs": {"norm": "group"}}
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    groupnorms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(groupnorms) == sum(isinstance(m, nn.BatchNorm2d) for m in batch.modules())
    assert all(m.num_groups == num_groups(m.num_channels) == 32 for m in groupnorms)
    assert [type(m) for m in model.modules() if isinstance(m, nn.LayerNorm)] == [nn.LayerNorm]
    # same module names and parameter shapes; only BatchNorm's running statistics are gone
    assert count_parameters(model) == count_parameters(batch)
    assert count_parameters(model, trainable_only=True) == count_parameters(batch, trainable_only=True)
    assert list(model.state_dict()) == [k for k in batch.state_dict() if not k.endswith(_BATCH_STATS)]

    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = model.train()(x)
        assert out.shape == (3, 16) and torch.isfinite(out).all()
        # no batch statistics: train and eval modes agree, and one example's embedding does not
        # depend on the rest of the batch
        torch.testing.assert_close(model.eval()(x), out)
        torch.testing.assert_close(model(x[1:2]), out[1:2], rtol=1e-4, atol=1e-5)


def test_iresnet_group_norm_keeps_the_frozen_embedding_scale() -> None:
    model = build_backbone("iresnet18", embedding_dim=16, resolution=16, norm="group")
    assert isinstance(model.features, nn.LayerNorm)
    assert not model.features.weight.requires_grad and torch.equal(model.features.weight, torch.ones(16))
    assert model.features.bias.requires_grad
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - 16


def test_bad_norm_is_rejected_with_the_choices() -> None:
    from federated_core.models.iresnet import iresnet
    from federated_core.models.mobilefacenet import MobileFaceNet

    for build in (
        lambda: build_backbone("mobilefacenet", 8, 32, norm="layer"),
        lambda: build_backbone("iresnet34", 8, 16, norm="layer"),
        lambda: MobileFaceNet(8, 32, norm="layer"),
        lambda: iresnet("iresnet18", 8, 16, norm="layer"),
    ):
        with pytest.raises(ValueError, match=r"norm must be one of \['batch', 'group'\], got 'layer'"):
            build()
    with pytest.raises(ValueError, match="got None"):
        build_backbone("iresnet18", 8, 16, norm=None)
    with pytest.raises(ValueError, match="takes no argument"):
        build_backbone("tiny", 8, 16, norm="group")


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18"])
def test_group_norm_backbone_passes_the_dp_check_and_takes_a_dp_sgd_step(name: str) -> None:
    import copy

    from attacks.gradient import ClientModel
    from federated_core.engine.dp_sgd import DpSgdStep, check_dp_compatible

    with pytest.raises(ValueError, match="batch-mixing layers .*norm='group'.*BatchNorm"):
        check_dp_compatible(build_backbone(name, embedding_dim=8, resolution=32))
    backbone = build_backbone(name, embedding_dim=8, resolution=32, norm="group")
    check_dp_compatible(backbone)
    client = ClientModel(backbone, torch.randn(3, 8) * 0.1)
    check_dp_compatible(client)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 2, 0])

    def one_step(seed: int) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(client).train()
        step = DpSgdStep(model, lr=0.1, momentum=0.0, weight_decay=0.0, noise_multiplier=1.0,
                         max_grad_norm=1.0, expected_batch_size=4, generator=torch.Generator().manual_seed(seed))
        loss = step.step(x, y)
        assert torch.isfinite(torch.tensor(loss))
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    first, again, other = one_step(0), one_step(0), one_step(1)
    for n, p in client.named_parameters():
        if p.requires_grad:
            assert not torch.equal(first[n], p.detach()), n
        else:  # the frozen embedding scale of IResNet
            assert torch.equal(first[n], p.detach()), n
        assert torch.equal(first[n], again[n]), n
    assert any(not torch.equal(first[n], other[n]) for n in first)
