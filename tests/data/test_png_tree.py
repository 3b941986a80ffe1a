"""Tests of `federated_core.data.png_tree.save_png_tree`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from federated_core.data.faceset import FaceSet
from federated_core.data.folders import load_folder_tree
from federated_core.data.png_tree import identity_folder_names, save_png_tree
from federated_core.data.synthetic import SyntheticFaces


def _random_set(labels: list[int], resolution: int = 8, seed: int = 0, names: dict[int, str] | None = None) -> FaceSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(labels), 3, resolution, resolution), dtype=torch.uint8, generator=gen)
    return FaceSet(images=images, labels=torch.tensor(labels), names=names or {})


def test_files_exist_and_reread_pixels_are_identical(tmp_path) -> None:
    faces = _random_set([12, 5, 12, 5, 12, 123456])
    root = save_png_tree(faces, tmp_path / "tree")
    assert root == tmp_path / "tree"
    assert sorted(p.name for p in root.iterdir()) == ["id_000005", "id_000012", "id_123456"]
    assert sorted(p.name for p in (root / "id_000012").iterdir()) == ["000.png", "001.png", "002.png"]
    # image k of an identity is its k-th image in set order
    for identity, rows in ((12, [0, 2, 4]), (5, [1, 3]), (123456, [5])):
        for k, row in enumerate(rows):
            with Image.open(root / f"id_{identity:06d}" / f"{k:03d}.png") as im:
                assert im.mode == "RGB" and im.size == (8, 8)
                pixels = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
            assert torch.equal(pixels, faces.images[row])


def test_names_padding_and_round_trip_through_load_folder_tree(tmp_path) -> None:
    faces = SyntheticFaces(seed=0, resolution=16).make_set([7, 10**7], 2)
    faces.names = {7: "alice"}
    root = save_png_tree(faces, tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["alice", "id_10000000"]
    loaded = load_folder_tree(root)
    assert loaded.names == {0: "alice", 1: "id_10000000"}
    assert torch.equal(loaded.images, faces.images)


def test_non_empty_root_needs_overwrite_and_stale_files_go(tmp_path) -> None:
    save_png_tree(_random_set([1, 1, 1]), tmp_path)
    with pytest.raises(ValueError, match="not empty"):
        save_png_tree(_random_set([1]), tmp_path)
    save_png_tree(_random_set([1], seed=3), tmp_path, overwrite=True)
    assert [p.name for p in (tmp_path / "id_000001").iterdir()] == ["000.png"]


def test_bad_roots_and_names_raise(tmp_path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ValueError, match="root"):
        save_png_tree(_random_set([1]), file)
    with pytest.raises(ValueError, match="names"):
        save_png_tree(_random_set([1], names={1: "../escape"}), tmp_path / "a")
    with pytest.raises(ValueError, match="share the folder name"):
        identity_folder_names(_random_set([1, 2], names={1: "same", 2: "same"}))
