"""`FolderFaceDataset`: items are `read_image` of their file, labels and sets are `load_folder_tree`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from federated_core.data.folders import load_folder_tree, read_image
from federated_core.data.lazy import FolderFaceDataset

RES = 16
# identity -> (file name, width, height, mode); written out of name order on purpose.
LAYOUT = {
    "carol": [("b.png", 20, 20, "RGB"), ("a.jpg", 30, 24, "RGB")],
    "alice": [("2.png", 16, 16, "L"), ("1.jpg", 40, 40, "RGB"), ("0.png", 18, 18, "RGBA")],
    "bob": [("x.png", 16, 16, "RGB"), ("y.png", 12, 12, "RGB")],
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for identity, files in LAYOUT.items():
        (tmp_path / identity).mkdir()
        for name, w, h, mode in files:
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(tmp_path / identity / name)
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    return tmp_path


def _expected_files(root: Path) -> list[tuple[Path, int]]:
    """(file, label) in loader order: sorted folders, sorted files, label = folder rank."""
    out = []
    for label, identity in enumerate(sorted(LAYOUT)):
        out += [(root / identity / name, label) for name in sorted(n for n, *_ in LAYOUT[identity])]
    return out


def test_items_are_read_image_of_their_file_with_folder_labels(tree: Path) -> None:
    ds = FolderFaceDataset.from_tree(tree, RES)
    expected = _expected_files(tree)
    assert len(ds) == len(expected) == 7
    assert ds.paths == [path for path, _ in expected]
    assert ds.labels.tolist() == [label for _, label in expected] == [0, 0, 0, 1, 1, 2, 2]
    assert ds.labels.tolist() == load_folder_tree(tree, RES).labels.tolist()
    assert ds.names == {0: "alice", 1: "bob", 2: "carol"}
    for i, (path, label) in enumerate(expected):
        image, item_label = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, RES, RES)
        assert torch.equal(image, read_image(path, RES))
        assert item_label == label
    assert torch.equal(ds[-1][0], read_image(expected[-1][0], RES))
    with pytest.raises(IndexError, match="index 7 out of range"):
        ds[7]


def test_to_faceset_equals_load_folder_tree(tree: Path) -> None:
    ds = FolderFaceDataset.from_tree(tree, RES)
    eager = load_folder_tree(tree, RES)
    lazy = ds.to_faceset()
    assert torch.equal(lazy.images, eager.images)
    assert torch.equal(lazy.labels, eager.labels)
    assert lazy.names == eager.names
    part = ds.to_faceset([5, 0, 3])
    assert torch.equal(part.images, eager.images[[5, 0, 3]])
    assert part.labels.tolist() == eager.labels[[5, 0, 3]].tolist() == [2, 0, 1]


def test_lru_cache_is_bounded_and_serves_equal_copies(tree: Path) -> None:
    plain = FolderFaceDataset.from_tree(tree, RES)
    cached = FolderFaceDataset.from_tree(tree, RES, cache_size=2)
    expected_cache: list[int] = []  # an LRU of size 2, kept by hand
    hits = 0
    for i in [0, 1, 0, 2, 1, 1, 3, 0, 6, 6]:
        hits += i in expected_cache
        if i in expected_cache:
            expected_cache.remove(i)
        expected_cache = (expected_cache + [i])[-2:]
        image, label = cached[i]
        assert torch.equal(image, plain[i][0]) and label == plain[i][1]
        assert cached.cached_indices() == expected_cache
        assert len(cached.cached_indices()) <= 2
    assert (cached.cache_hits, cached.cache_misses) == (hits, 10 - hits) == (3, 7)
    assert plain.cached_indices() == [] and plain.cache_hits == 0
    image, _ = cached[6]  # a hit: changing the item must not change the cache
    image.zero_()
    assert torch.equal(cached[6][0], read_image(cached.path(6), RES))


def test_dataloader_with_two_workers_keeps_order(tree: Path) -> None:
    ds = FolderFaceDataset.from_tree(tree, RES, cache_size=3)
    batches = list(DataLoader(ds, batch_size=3, shuffle=False, num_workers=2))
    assert [len(labels) for _, labels in batches] == [3, 3, 1]
    images = torch.cat([b for b, _ in batches])
    labels = torch.cat([lab for _, lab in batches])
    eager = load_folder_tree(tree, RES)
    assert torch.equal(images, eager.images)
    assert torch.equal(labels, eager.labels)
    assert ds.cached_indices() == []  # the workers cached in their own processes


def test_identity_subsets_keep_global_labels(tree: Path) -> None:
    ds = FolderFaceDataset.from_tree(tree, RES, identities=["carol", 0])
    assert ds.labels.tolist() == [0, 0, 0, 2, 2]
    assert ds.names == {0: "alice", 2: "carol"}
    eager = load_folder_tree(tree, RES)
    assert torch.equal(ds.to_faceset().images, eager.of_identities([0, 2]).images)
    with pytest.raises(ValueError, match=r"not in the tree .*'dave', 3"):
        FolderFaceDataset.from_tree(tree, RES, identities=["dave", 3])


def test_tree_errors_name_the_identity(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"fewer than min_images_per_identity=3 images .*: bob \(2\), carol \(2\)"):
        FolderFaceDataset.from_tree(tree, RES, min_images_per_identity=3)
    (tree / "dave").mkdir()
    with pytest.raises(ValueError, match="contain no image file .*: dave"):
        FolderFaceDataset.from_tree(tree, RES)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderFaceDataset.from_tree(tmp_path / "missing", RES)
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        FolderFaceDataset([tree / "bob" / "x.png", tree / "bob" / "y.png"], [0], RES)
    with pytest.raises(ValueError, match="cache_size must be an int >= 0"):
        FolderFaceDataset([], [], RES, cache_size=-1)
