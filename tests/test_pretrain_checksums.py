"""φ0 (and the attacks' evaluator, which is pre-trained the same way) is read back from its cache
only when its checksums match: a zero-byte, truncated or altered file is retrained with a warning
naming it, and the retrained weights equal the first ones (seeded)."""

from __future__ import annotations

import pytest
import torch

from federated_core.integrity import CachedFileWarning
from federated_core.pretrain import pretrain
from privaudit.presets import pretrain_config


@pytest.mark.parametrize("damage", ["zero-byte", "altered"])
def test_a_damaged_checkpoint_is_retrained_with_a_warning(tmp_path, damage):
    config = pretrain_config("tiny")
    first = pretrain(config, cache_dir=tmp_path, progress=False)
    again = pretrain(config, cache_dir=tmp_path, progress=False)
    assert again.cached and not first.cached
    path = first.path
    data = bytearray(path.read_bytes())
    if damage == "zero-byte":
        data = bytearray()
    else:
        data[-5] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.warns(CachedFileWarning, match="backbone.safetensors"):
        third = pretrain(config, cache_dir=tmp_path, progress=False)
    assert not third.cached and third.cache_problems and "backbone.safetensors" in third.cache_problems[0]
    assert not again.cache_problems
    for (name, a), (_, b) in zip(first.backbone.state_dict().items(), third.backbone.state_dict().items()):
        assert torch.equal(a, b), name


def test_an_evaluation_change_reuses_the_weights(tmp_path):
    import dataclasses

    config = pretrain_config("tiny")
    first = pretrain(config, cache_dir=tmp_path, progress=False)
    other = dataclasses.replace(config, eval_genuine_pairs=config.eval_genuine_pairs // 2)
    assert other.fingerprint() == config.fingerprint()  # same weights' key
    second = pretrain(other, cache_dir=tmp_path, progress=False)
    assert second.cached and second.metrics["evaluation_fingerprint"] == other.evaluation_fingerprint()
    assert first.metrics["evaluation_fingerprint"] != second.metrics["evaluation_fingerprint"]
