"""Identity-per-folder loader: labels, names, resizing, and every error a user's tree can cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from federated_core.data.folders import decode_image, load_folder_tree, read_image


def _write(path: Path, array: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def _rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_labels_names_and_pixels_follow_sorted_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Created out of order; png is lossless so pixels must round-trip exactly.
    b1 = _write(tmp_path / "bob" / "2.png", _rgb(rng, 8, 8))
    b0 = _write(tmp_path / "bob" / "1.png", _rgb(rng, 8, 8))
    a0 = _write(tmp_path / "alice" / "x.PNG", _rgb(rng, 8, 8))  # upper-case suffix counts
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("plain files in root are ignored")
    (tmp_path / ".cache").mkdir()  # hidden folders are not identities

    fs = load_folder_tree(tmp_path)

    assert fs.names == {0: "alice", 1: "bob"}
    assert fs.labels.tolist() == [0, 1, 1]
    assert fs.groups is None
    assert fs.images.dtype == torch.uint8 and fs.images.shape == (3, 3, 8, 8)
    for row, expected in enumerate([a0, b0, b1]):  # files sorted by name inside each folder
        assert torch.equal(fs.images[row], torch.from_numpy(expected).permute(2, 0, 1))


def test_resolution_resizes_mixed_sizes_and_modes_to_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    _write(tmp_path / "a" / "big.png", _rgb(rng, 40, 40))
    _write(tmp_path / "a" / "wide.jpg", _rgb(rng, 20, 30))
    gray = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)
    (tmp_path / "b").mkdir()
    Image.fromarray(gray).save(tmp_path / "b" / "gray.bmp")  # 1-channel -> RGB
    Image.fromarray(_rgb(rng, 12, 12)).convert("RGBA").save(tmp_path / "b" / "alpha.png")

    fs = load_folder_tree(tmp_path, resolution=10)
    assert fs.images.shape == (4, 3, 10, 10)
    assert fs.resolution == 10
    # The resize is PIL's bilinear resize of the RGB image: compare with PIL directly.
    expected = np.asarray(Image.open(tmp_path / "a" / "big.png").convert("RGB").resize((10, 10), Image.BILINEAR))
    assert torch.equal(fs.images[0], torch.from_numpy(expected.copy()).permute(2, 0, 1))
    # Gray image replicated to three equal channels.
    gray_row = 3  # b/alpha.png (row 2), b/gray.bmp (row 3)
    assert torch.equal(fs.images[gray_row, 0], fs.images[gray_row, 1])
    assert torch.equal(fs.images[gray_row, 1], fs.images[gray_row, 2])


def test_missing_root_and_no_identity_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder_tree(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no identity folders"):
        load_folder_tree(tmp_path)
    with pytest.raises(ValueError, match="directory"):
        load_folder_tree(tmp_path / "file.png")


def test_empty_identity_folders_are_all_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    _write(tmp_path / "full" / "1.png", _rgb(rng, 4, 4))
    (tmp_path / "empty_one").mkdir()
    (tmp_path / "empty_two").mkdir()
    (tmp_path / "empty_two" / "readme.txt").write_text("no image here")
    with pytest.raises(ValueError, match=r"2 identity folder\(s\).*empty_one, empty_two"):
        load_folder_tree(tmp_path)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    _write(tmp_path / "a" / "ok.png", _rgb(rng, 4, 4))
    bad = tmp_path / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_folder_tree(tmp_path)
    # A truncated PNG (valid header, missing data) is also reported by name.
    good = tmp_path / "a" / "ok.png"
    truncated = tmp_path / "b" / "truncated.png"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated.png"):
        read_image(truncated)
    with pytest.raises(ValueError, match="image 3 of x.bin"):
        decode_image(b"garbage", what="image 3 of x.bin")


def test_too_few_images_names_identities_and_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for name, n in [("many", 3), ("one", 1), ("two", 2)]:
        for i in range(n):
            _write(tmp_path / name / f"{i}.png", _rgb(rng, 4, 4))
    with pytest.raises(ValueError, match=r"min_images_per_identity=3.*one \(1\), two \(2\)"):
        load_folder_tree(tmp_path, min_images_per_identity=3)
    assert len(load_folder_tree(tmp_path, min_images_per_identity=1)) == 6
    with pytest.raises(ValueError, match="min_images_per_identity must be an int >= 1, got 0"):
        load_folder_tree(tmp_path, min_images_per_identity=0)


def test_mixed_sizes_without_resolution_asks_for_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    _write(tmp_path / "a" / "1.png", _rgb(rng, 8, 8))
    _write(tmp_path / "b" / "1.png", _rgb(rng, 9, 9))
    with pytest.raises(ValueError, match=r"different sizes.*b/1.png is 9x9.*resolution"):
        load_folder_tree(tmp_path)
    with pytest.raises(ValueError, match="not square"):
        _write(tmp_path / "a" / "0.png", _rgb(rng, 8, 6))
        load_folder_tree(tmp_path)
    assert load_folder_tree(tmp_path, resolution=7).images.shape == (3, 3, 7, 7)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_resolution_is_rejected(tmp_path: Path, bad: object) -> None:
    _write(tmp_path / "a" / "1.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="resolution must be a positive int"):
        load_folder_tree(tmp_path, resolution=bad)  # type: ignore[arg-type]


def test_bad_extensions_are_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "1.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="extensions"):
        load_folder_tree(tmp_path, extensions=".png")  # a bare string, not a sequence
    with pytest.raises(ValueError, match="starting with '.'"):
        load_folder_tree(tmp_path, extensions=("png",))
