"""`FolderFaceSource`, `split_folder_identities`, `folder_federated_data` on small trees written here.

Expected images are decoded and resized with Pillow in the test (``Image.open -> convert("RGB") ->
resize(BILINEAR)``), expected ids, counts and exclusions come from the manifest of what each test
wrote, never from the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from federated_core.data.check import LISTED
from federated_core.data.folder_source import (
    FolderFaceSource,
    folder_federated_data,
    split_folder_identities,
)
from federated_core.engine.messages import client_party

R = 16  # rendered resolution


class Tree:
    """Writes an identity-per-folder tree and records every image file and its PIL mode."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(seed)
        self.files: dict[str, list[str]] = {}  # identity -> relative image paths
        self.modes: dict[str, str] = {}  # relative path -> mode written

    def image(self, rel: str, width: int = 24, height: int = 24, mode: str = "RGB") -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = self.rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        fmt = "JPEG" if path.suffix in (".jpg", ".jpeg") else "PNG"
        Image.fromarray(pixels).convert(mode).save(path, format=fmt)
        self.files.setdefault(rel.split("/")[0], []).append(rel)
        self.modes[rel] = mode
        return path

    def identity(self, name: str, count: int, modes: tuple[str, ...] = ("RGB",)) -> None:
        sizes = [(24, 24), (32, 40), (48, 48), (20, 28)]
        for k in range(count):
            width, height = sizes[k % len(sizes)]
            suffix = ".jpg" if k % 2 == 0 else ".png"
            mode = modes[k % len(modes)]
            if suffix == ".jpg" and mode == "RGBA":  # JPEG has no alpha
                suffix = ".png"
            self.image(f"{name}/img{k:02d}{suffix}", width, height, mode)


def expected_image(path: Path) -> np.ndarray:
    """The image as the source must render it, computed with Pillow directly: ``[H, W, 3]`` uint8."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((R, R), Image.Resampling.BILINEAR))


def files_of(faces_images: torch.Tensor, candidates: list[Path]) -> list[Path]:
    """For each rendered image, the candidate file whose Pillow-decoded pixels it equals exactly."""
    expected = {path: expected_image(path) for path in candidates}
    out = []
    for image in faces_images:
        hwc = image.permute(1, 2, 0).numpy()
        match = [path for path, pixels in expected.items() if np.array_equal(pixels, hwc)]
        assert len(match) == 1, f"rendered image matches {len(match)} files"
        out.append(match[0])
    return out


@pytest.fixture
def mixed(tmp_path: Path) -> Tree:
    """Six usable identities (JPEG + PNG, four sizes, grayscale and RGBA), one with a single image,
    an empty folder and a text file."""
    tree = Tree(tmp_path / "faces")
    tree.identity("id_a", 5, modes=("RGB", "L"))
    tree.identity("id_b", 6, modes=("RGB", "RGBA", "RGB"))
    tree.identity("id_c", 4)
    tree.identity("id_d", 7, modes=("L",))
    tree.identity("id_e", 5)
    tree.identity("id_f", 8)
    tree.identity("solo", 1)
    (tree.root / "empty").mkdir()
    (tree.root / "id_a" / "notes.txt").write_text("not an image")
    return tree


# sorted folder names: empty, id_a, id_b, id_c, id_d, id_e, id_f, solo
IDS = {"empty": 0, "id_a": 1, "id_b": 2, "id_c": 3, "id_d": 4, "id_e": 5, "id_f": 6, "solo": 7}


@pytest.fixture
def wide(tmp_path: Path) -> Tree:
    """24 identities with 4 small PNGs each and 2 with only 2 (``short0``, ``short1``)."""
    tree = Tree(tmp_path / "wide", seed=1)
    for k in range(24):
        for j in range(4):
            tree.image(f"p{k:02d}/{j}.png", 8, 8)
    for k in range(2):
        for j in range(2):
            tree.image(f"short{k}/{j}.png", 8, 8)
    return tree


# ---------------------------------------------------------------------------- ids, order, render


def test_ids_follow_sorted_folder_names_and_exclusions_are_listed(mixed: Tree) -> None:
    source = FolderFaceSource(mixed.root, R, min_images_per_identity=2)
    assert source.names == {i: n for n, i in IDS.items()}
    assert source.identities.tolist() == [IDS[n] for n in ("id_a", "id_b", "id_c", "id_d", "id_e", "id_f")]
    excluded = {e.name: e for e in source.excluded}
    assert set(excluded) == {"empty", "solo"}
    assert (excluded["empty"].identity, excluded["empty"].images) == (0, 0)
    assert "no readable image" in excluded["empty"].reason
    assert (excluded["solo"].identity, excluded["solo"].images) == (7, 1)
    assert "min_images_per_identity=2" in excluded["solo"].reason
    record = json.loads(json.dumps(source.record()))
    assert [e["name"] for e in record["excluded"]] == ["empty", "solo"]
    assert record["eligible_identities"] == 6 and record["identity_folders"] == 8
    assert record["images"] == 5 + 6 + 4 + 7 + 5 + 8
    assert record["skipped"]["count"] == 1 and record["skipped"]["listed"][0]["path"] == "id_a/notes.txt"


def test_render_returns_each_identitys_files_in_one_fixed_order(mixed: Tree) -> None:
    source = FolderFaceSource(mixed.root, R, seed=3)
    for name in ("id_a", "id_b", "id_d", "id_f"):
        identity = IDS[name]
        files = [mixed.root / rel for rel in mixed.files[name]]
        n = len(files)
        assert source.images_available(identity) == n
        full = source.render(torch.tensor([identity]), n, 0)
        assert full.images.shape == (n, 3, R, R) and full.images.dtype == torch.uint8
        assert full.labels.tolist() == [identity] * n and full.groups is None
        assert full.names == {identity: name}
        order = files_of(full.images, files)
        assert sorted(order) == sorted(files)  # a permutation of the identity's files
        assert order == source.paths(identity)
        part = source.render([identity], 2, n - 2)  # positions n-2, n-1 of the same order
        assert files_of(part.images, files) == order[n - 2 :]


def test_render_is_identity_major_with_repeats_like_make_set(mixed: Tree) -> None:
    source = FolderFaceSource(mixed.root, R)
    ids = [IDS["id_c"], IDS["id_a"], IDS["id_c"]]
    faces = source.render(torch.tensor(ids), 2, 1)
    assert faces.labels.tolist() == [3, 3, 1, 1, 3, 3]
    for block, identity in enumerate(ids):
        expected = np.stack([expected_image(p) for p in source.paths(identity)[1:3]])
        got = faces.images[2 * block : 2 * block + 2].permute(0, 2, 3, 1).numpy()
        assert np.array_equal(got, expected)
    assert len(source.render(torch.zeros(0, dtype=torch.int64), 3, 0)) == 0


def test_image_order_is_seeded_and_independent_of_other_folders(mixed: Tree) -> None:
    first = FolderFaceSource(mixed.root, R, seed=5)
    again = FolderFaceSource(mixed.root, R, seed=5)
    other = FolderFaceSource(mixed.root, R, seed=6)
    eligible = first.identities.tolist()
    assert all(first.paths(i) == again.paths(i) for i in eligible)
    assert any(first.paths(i) != other.paths(i) for i in eligible)
    Tree(mixed.root, seed=9).identity("aaa_new", 3)  # a new folder sorts first: every id shifts by one
    shifted = FolderFaceSource(mixed.root, R, seed=5)
    assert all(shifted.paths(i + 1) == first.paths(i) for i in eligible)


def test_grayscale_and_rgba_are_converted_and_counted(mixed: Tree) -> None:
    source = FolderFaceSource(mixed.root, R)
    written = {mode: sum(m == mode for m in mixed.modes.values()) for mode in ("L", "RGBA")}
    assert written["L"] > 0 and written["RGBA"] > 0
    assert source.record()["converted_to_rgb"] == written
    gray = source.render([IDS["id_d"]], 7, 0).images.to(torch.int64)  # id_d is all grayscale
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_too_few_images_errors_name_the_identity_and_the_limits_are_exposed(mixed: Tree) -> None:
    source = FolderFaceSource(mixed.root, R)
    assert source.max_index() == 4  # id_c has the fewest: 4
    assert source.max_index([IDS["id_a"], IDS["id_f"]]) == 5
    with pytest.raises(ValueError, match=r"identity 3 \('id_c'\) has 4 image\(s\).*start_index=2, per_identity=3.*5"):
        source.render([IDS["id_a"], IDS["id_c"]], 3, 2)
    with pytest.raises(ValueError, match=r"identity 7 \('solo'\).*min_images_per_identity=2"):
        source.render([IDS["solo"]], 1, 0)
    with pytest.raises(ValueError, match=r"identity 99 is not an identity folder"):
        source.images_available(99)
    with pytest.raises(ValueError, match="per_identity"):
        source.render([1], 0, 0)
    with pytest.raises(ValueError, match="start_index"):
        source.render([1], 1, -1)


def test_max_identities_keeps_a_seeded_recorded_subset(wide: Tree) -> None:
    source = FolderFaceSource(wide.root, R, max_identities=10, seed=2)
    again = FolderFaceSource(wide.root, R, max_identities=10, seed=2)
    other = FolderFaceSource(wide.root, R, max_identities=10, seed=3)
    kept = source.identities.tolist()
    assert len(kept) == 10 and kept == sorted(kept) and kept == again.identities.tolist()
    assert kept != other.identities.tolist()
    subset = source.record()["subset"]
    assert subset == {"max_identities": 10, "eligible": 26, "kept": 10, "dropped": 16, "kept_identities": kept}
    dropped = next(i for i in range(26) if i not in kept)
    with pytest.raises(ValueError, match="max_identities=10"):
        source.render([dropped], 1, 0)


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_files_and_settings_not_the_location(mixed: Tree, tmp_path: Path) -> None:
    base = FolderFaceSource(mixed.root, R).fingerprint()
    assert len(base) == 64 and FolderFaceSource(mixed.root, R).fingerprint() == base
    moved = tmp_path / "moved"
    shutil.copytree(mixed.root, moved)
    assert FolderFaceSource(moved, R).fingerprint() == base
    assert FolderFaceSource(mixed.root, R + 1).fingerprint() != base
    assert FolderFaceSource(mixed.root, R, seed=1).fingerprint() != base
    assert FolderFaceSource(mixed.root, R, min_images_per_identity=3).fingerprint() != base
    rel = mixed.files["id_b"][1]
    before = (mixed.root / rel).stat().st_size
    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(mixed.root / rel, format="PNG")
    assert (mixed.root / rel).stat().st_size != before
    changed = FolderFaceSource(mixed.root, R).fingerprint()
    assert changed != base
    (mixed.root / "zzz").mkdir()  # an empty identity folder changes no image but the ids' meaning
    assert FolderFaceSource(mixed.root, R).fingerprint() != changed


# ---------------------------------------------------------------------------- bad input


def test_empty_missing_and_single_identity_roots_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FolderFaceSource(tmp_path / "nope", R)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no identity folders"):
        FolderFaceSource(tmp_path / "empty", R)
    one = Tree(tmp_path / "one")
    one.identity("only", 4)
    with pytest.raises(ValueError, match=r"1 of the 1 identity folder\(s\).*at least 2"):
        FolderFaceSource(one.root, R)
    with pytest.raises(ValueError, match="resolution"):
        FolderFaceSource(one.root, 0)


def test_non_image_and_truncated_files_are_named_or_skipped_and_counted(mixed: Tree) -> None:
    (mixed.root / "id_c" / "fake.jpg").write_text("text with an image extension")
    truncated = mixed.image("id_e/cut.jpg", 32, 32)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"2 unreadable image file\(s\)") as err:
        FolderFaceSource(mixed.root, R)
    assert "id_c/fake.jpg: not an image" in str(err.value)
    assert "id_e/cut.jpg: truncated" in str(err.value)
    source = FolderFaceSource(mixed.root, R, skip_unreadable=True)
    assert source.unreadable_skipped == ["id_c/fake.jpg", "id_e/cut.jpg"]
    assert source.images_available(IDS["id_c"]) == 4 and source.images_available(IDS["id_e"]) == 5
    assert (mixed.root / "id_e" / "cut.jpg") not in source.paths(IDS["id_e"])
    record = source.record()
    assert record["unreadable"]["count"] == 2 and record["unreadable_skipped"] == source.unreadable_skipped


def test_skipping_more_unreadable_files_than_check_lists(wide: Tree) -> None:
    for k in range(LISTED + 2):
        (wide.root / "p00" / f"bad{k:03d}.jpg").write_text("no")
    source = FolderFaceSource(wide.root, R, skip_unreadable=True)
    assert len(source.unreadable_skipped) == LISTED + 2
    assert source.images_available(0) == 4


def test_symlink_loop_identity_is_excluded_with_checks_reason(mixed: Tree) -> None:
    os.symlink(".", mixed.root / "zloop")  # an identity folder that is the root again
    os.symlink("..", mixed.root / "id_a" / "up")  # a loop inside an identity: never entered
    source = FolderFaceSource(mixed.root, R)
    loop = next(e for e in source.excluded if e.name == "zloop")
    assert loop.identity == 8 and "symlink loop" in loop.reason
    assert source.images_available(IDS["id_a"]) == 5
    assert source.record()["links"]["count"] == 2


# ---------------------------------------------------------------------------- split


def test_split_sizes_disjointness_and_seed(wide: Tree) -> None:
    source = FolderFaceSource(wide.root, R)  # 26 eligible identities
    split = split_folder_identities(source, public=0.25, clients=10, test=0.2, distractors=2, seed=4)
    sizes = {k: int(v.numel()) for k, v in split.parts.items()}
    assert sizes == {"public": 7, "clients": 10, "test": 5, "distractors": 2}  # 6.5 -> 7, 5.2 -> 5
    every = torch.cat(list(split.parts.values())).tolist()
    assert len(every) == len(set(every)) and set(every) <= set(source.identities.tolist())
    assert split["clients"].tolist() == sorted(split["clients"].tolist())
    again = split_folder_identities(source, public=0.25, clients=10, test=0.2, distractors=2, seed=4)
    assert all(torch.equal(split[k], again[k]) for k in split.parts)
    other = split_folder_identities(source, public=0.25, clients=10, test=0.2, distractors=2, seed=5)
    assert any(not torch.equal(split[k], other[k]) for k in split.parts)
    record = json.loads(json.dumps(split.record))
    assert record["counts"] == sizes and record["unused_identities"] == 2
    assert record["fractions"] == {"public": 0.25, "clients": None, "test": 0.2, "distractors": None}
    assert record["asked"] == {"public": 0.25, "clients": 10, "test": 0.2, "distractors": 2}
    assert record["fingerprint"] == source.fingerprint()
    assert record["identities"]["test"] == split["test"].tolist()


def test_split_refuses_counts_beyond_the_folder_naming_the_part(mixed: Tree, wide: Tree) -> None:
    source = FolderFaceSource(wide.root, R)
    with pytest.raises(ValueError, match=r"^test=10 asks for 10 .* 26 eligible identities and 6 are left after"):
        split_folder_identities(source, public=5, clients=15, test=10)
    with pytest.raises(ValueError, match=r"^distractors=0.5"):
        split_folder_identities(source, public=5, clients=10, test=2, distractors=0.5)
    with pytest.raises(ValueError, match=r"^clients must be an int >= 0 or a fraction in \(0, 1\), got 1.0"):
        split_folder_identities(source, public=5, clients=1.0, test=2)
    with pytest.raises(ValueError, match=r"^public=0.01 of the 26 eligible identities rounds to 0"):
        split_folder_identities(source, public=0.01, clients=5, test=2)
    split = split_folder_identities(FolderFaceSource(mixed.root, R), public=1, clients=3, test=2)
    assert [e["name"] for e in split.record["excluded"]] == ["empty", "solo"]


# ---------------------------------------------------------------------------- federated data


def _data(source: FolderFaceSource, seed: int, partition: str = "balanced", num_clients: int = 4):
    split = split_folder_identities(source, public=4, clients=12, test=6, seed=seed)
    return split, folder_federated_data(
        source,
        split,
        num_clients=num_clients,
        partition=partition,
        images_per_identity=2,
        test_images_per_identity=2,
        heldout_per_identity=2,
        seed=seed,
    )


def test_federated_data_agrees_with_its_data_spec(wide: Tree) -> None:
    source = FolderFaceSource(wide.root, R, min_images_per_identity=4)  # the 24 p-folders
    split, data = _data(source, seed=0)
    spec = json.loads(json.dumps(data.data_spec))
    assert spec["source"] == "folder" and spec["root"] == str(wide.root.absolute())
    assert spec["fingerprint"] == source.fingerprint() and spec["resolution"] == R
    reopened = FolderFaceSource.from_data_spec(spec)
    assert len(data.clients) == 4 and sorted(spec["clients"]) == [client_party(c) for c in range(4)]
    for c, client in enumerate(data.clients):
        entry = spec["clients"][client_party(c)]
        assert (entry["images_per_identity"], entry["start_index"]) == (2, 0)
        assert len(entry["identities"]) == 3 and sorted(client.identities) == sorted(entry["identities"])
        again = reopened.render(torch.tensor(entry["identities"]), 2, 0)
        assert torch.equal(again.images, client.faces.images) and torch.equal(again.labels, client.faces.labels)
        for identity in entry["identities"]:  # held-out images come after the training ones: unseen files
            train = files_of(client.faces.of_identities([identity]).images, source.paths(identity))
            held = reopened.render([identity], 2, spec["heldout"]["start_index"])
            assert not set(files_of(held.images, source.paths(identity))) & set(train)
    assert sorted(i for e in spec["clients"].values() for i in e["identities"]) == split["clients"].tolist()
    assert spec["test"] == {"identities": split["test"].tolist(), "images_per_identity": 2, "start_index": 0}
    assert torch.equal(reopened.render(torch.tensor(spec["test"]["identities"]), 2, 0).images, data.test.images)
    assert spec["split"]["identities"]["public"] == split["public"].tolist()


def test_same_seed_same_data_spec_and_partitions(wide: Tree) -> None:
    _, first = _data(FolderFaceSource(wide.root, R, min_images_per_identity=4), seed=7)
    _, again = _data(FolderFaceSource(wide.root, R, min_images_per_identity=4), seed=7)
    _, other = _data(FolderFaceSource(wide.root, R, min_images_per_identity=4), seed=8)
    assert first.data_spec == again.data_spec and first.data_spec["clients"] != other.data_spec["clients"]
    source = FolderFaceSource(wide.root, R, min_images_per_identity=4)
    _, lognormal = _data(source, seed=1, partition="lognormal", num_clients=5)
    sizes = [len(e["identities"]) for e in lognormal.data_spec["clients"].values()]
    assert len(sizes) == 5 and sum(sizes) == 12 and min(sizes) >= 1
    _, single = _data(source, seed=1, partition="one-identity", num_clients=12)
    assert [len(e["identities"]) for e in single.data_spec["clients"].values()] == [1] * 12
    with pytest.raises(ValueError, match="num_clients must be 12"):
        _data(source, seed=1, partition="one-identity", num_clients=4)
    with pytest.raises(ValueError, match="partition must be one of"):
        _data(source, seed=1, partition="by-group")


def test_federated_data_refuses_identities_without_enough_images(wide: Tree, tmp_path: Path) -> None:
    source = FolderFaceSource(wide.root, R)  # short0 / short1 (2 images each) are eligible
    short = source.identity_of("short1")
    split = {"clients": torch.tensor([0, 1, short]), "test": torch.tensor([2, 3])}
    kwargs = dict(num_clients=1, partition="balanced", test_images_per_identity=2, seed=0)
    with pytest.raises(
        ValueError, match=r"1 client identity has fewer than the 3 images needed: identity 25 \('short1'"
    ):
        folder_federated_data(source, split, images_per_identity=2, heldout_per_identity=1, **kwargs)
    data = folder_federated_data(source, split, images_per_identity=2, heldout_per_identity=0, **kwargs)
    assert data.data_spec["split"] is None and data.data_spec["heldout"] == {"per_identity": 0, "start_index": 2}
    with pytest.raises(ValueError, match=r"test identit.*identity 24 \('short0'"):
        folder_federated_data(
            source,
            {"clients": split["clients"], "test": torch.tensor([2, source.identity_of("short0")])},
            images_per_identity=2,
            heldout_per_identity=0,
            num_clients=1,
            partition="balanced",
            test_images_per_identity=3,
            seed=0,
        )
    with pytest.raises(ValueError, match="disjoint"):
        folder_federated_data(
            source, {"clients": torch.tensor([0, 1]), "test": torch.tensor([1, 2])}, 1, "balanced", 2, 2, 0, 0
        )


def test_data_spec_of_a_changed_folder_is_refused(wide: Tree) -> None:
    _, data = _data(FolderFaceSource(wide.root, R, min_images_per_identity=4), seed=0)
    wide.image("p03/extra.png", 8, 8)
    with pytest.raises(ValueError, match="changed since the data spec was written"):
        FolderFaceSource.from_data_spec(data.data_spec)
