"""Central pre-training of φ0: a run of a few seconds beats chance clearly, is cached by config
hash, is deterministic, and leaves the caller's global RNG alone."""

import json

import pytest
import torch

from federated_core.pretrain import PretrainConfig, SyntheticSpec, pretrain


def tiny_config(**overrides) -> PretrainConfig:
    base = dict(
        data=SyntheticSpec(seed=3, resolution=32),
        train_identities=(0, 32), train_images_per_identity=8,
        eval_identities=(500_000, 500_016), eval_images_per_identity=4,
        eval_genuine_pairs=90, eval_impostor_pairs=150,
        backbone="tiny", embedding_dim=32, epochs=8, batch_size=32, seed=1,
    )
    base.update(overrides)
    return PretrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("phi0")
    return cache, pretrain(tiny_config(), cache_dir=cache, progress=False)


def test_pretraining_beats_chance_on_unseen_identities(trained):
    _, result = trained
    # Chance is 0.5 AUROC; with 90 genuine and 150 impostor pairs the AUROC of a random embedding
    # has a standard deviation of sqrt(241 / (12 * 90 * 150)) = 0.039, so 0.62 is > 3 sigma away.
    assert result.metrics["auroc"] > 0.62
    assert result.metrics["accuracy"] > 0.56
    losses = result.metrics["train_loss_per_epoch"]
    assert losses[-1] < losses[0]


def test_checkpoint_is_cached_by_config_hash(trained):
    cache, first = trained
    again = pretrain(tiny_config(), cache_dir=cache, progress=False)
    assert again.cached and not first.cached
    assert again.path == first.path and first.path.name == "backbone.safetensors"
    assert json.loads((first.path.parent / "metrics.json").read_text())["accuracy"] == pytest.approx(first.metrics["accuracy"])
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(again.backbone.eval()(x), first.backbone.eval()(x))
    assert tiny_config(epochs=5).fingerprint() != tiny_config().fingerprint()


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = pretrain(tiny_config(epochs=1, train_identities=(0, 4), eval_identities=(500_000, 500_004), eval_genuine_pairs=20, eval_impostor_pairs=40), progress=False)
    after = torch.rand(3)
    b = pretrain(tiny_config(epochs=1, train_identities=(0, 4), eval_identities=(500_000, 500_004), eval_genuine_pairs=20, eval_impostor_pairs=40), progress=False)
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.backbone.state_dict().items(), b.backbone.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eval_identities": (10, 20)}, "overlap train_identities"),
        ({"train_identities": (5, 5)}, "train_identities must be a range"),
        ({"head": "sphereface"}, "head must be one of"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"eval_images_per_identity": 1}, "eval_images_per_identity must be >= 2"),
    ],
)
def test_bad_config_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)
