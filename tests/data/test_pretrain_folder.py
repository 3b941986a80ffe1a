"""φ0 pre-trained on a folder's public identities (`federated_core.pretrain.FolderSpec`): the
images come from the folder, the cache key follows the folder's content, ids are checked."""

from __future__ import annotations

import pytest
import torch

from federated_core.data import SyntheticFaces
from federated_core.data.folder_source import FolderFaceSource
from federated_core.data.png_tree import save_png_tree
from federated_core.pretrain import FolderSpec, PretrainConfig, build_sets, pretrain


@pytest.fixture()
def tree(tmp_path):
    faces = SyntheticFaces(seed=3, resolution=32).make_set(torch.arange(8), 5)
    save_png_tree(faces, tmp_path / "faces")
    return tmp_path / "faces"


def _config(source: FolderFaceSource, **changes) -> PretrainConfig:
    base = dict(
        data=FolderSpec.of(source),
        train_identity_list=(0, 1, 2, 3),
        eval_identity_list=(4, 5, 6, 7),
        train_images_per_identity=3,
        eval_images_per_identity=5,
        eval_genuine_pairs=20,
        eval_impostor_pairs=20,
        embedding_dim=8,
        epochs=1,
        batch_size=8,
    )
    return PretrainConfig(**{**base, **changes})


def test_phi0_trains_on_the_folders_public_identities_and_is_cached_by_content(tree, tmp_path):
    source = FolderFaceSource(tree, resolution=32)
    config = _config(source)
    train, evaluation = build_sets(config)
    assert sorted(set(train.labels.tolist())) == [0, 1, 2, 3] and len(train) == 12
    assert torch.equal(train.images[:3], source.render([0], 3).images)  # the folder's own pixels
    assert sorted(set(evaluation.labels.tolist())) == [4, 5, 6, 7]
    first = pretrain(config, cache_dir=tmp_path / "cache", progress=False)
    assert first.metrics["train_identities"] == 4 and not first.cached
    again = pretrain(PretrainConfig.from_dict(config.to_dict()), cache_dir=tmp_path / "cache", progress=False)
    assert again.cached and again.path == first.path
    other = _config(source, train_identity_list=(0, 1, 2))
    assert other.fingerprint() != config.fingerprint()
    (tree / "id_000005" / "999.png").write_bytes((tree / "id_000005" / "000.png").read_bytes())
    changed = FolderSpec.of(FolderFaceSource(tree, resolution=32))
    assert changed.fingerprint != config.data.fingerprint  # a changed folder: another cache key
    assert _config(source, data=changed).fingerprint() != config.fingerprint()


def test_folder_ids_must_be_disjoint_and_valid(tree):
    source = FolderFaceSource(tree, resolution=32)
    with pytest.raises(ValueError, match=r"evaluation identities \[3\] are also training identities"):
        _config(source, eval_identity_list=(3, 4))
    with pytest.raises(ValueError, match="train_identity_list must hold at least 2 distinct ids"):
        _config(source, train_identity_list=(1, 1))
    stale = FolderSpec(**{**FolderSpec.of(source).__dict__, "fingerprint": "0" * 64})
    with pytest.raises(ValueError, match="changed since this config was made"):
        stale.generator()
