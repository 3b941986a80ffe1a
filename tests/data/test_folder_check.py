"""`check_folder_tree`: every count, every bad file named with its reason, and the errors of bad roots.

The expected values are derived from a manifest of what each test wrote, never from the checker.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from federated_core.data.check import LISTED, check_folder_tree
from federated_core.data.folders import load_folder_tree


class Tree:
    """Writes files under ``root`` and records what each one is."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.rng = np.random.default_rng(seed)
        self.good: dict[str, tuple[int, int, str, str]] = {}  # rel path -> (width, height, mode, format)
        self.bad: dict[str, str] = {}  # rel path -> reason keyword
        self.identities: set[str] = set()

    def image(self, rel: str, width: int, height: int, mode: str = "RGB") -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = self.rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
        Image.fromarray(pixels).convert(mode).save(path, format=fmt)
        self.good[rel] = (width, height, mode, fmt)
        self.identities.add(rel.split("/")[0])
        return path

    def copy(self, source: str, rel: str) -> None:
        (self.root / rel).write_bytes((self.root / source).read_bytes())
        self.good[rel] = self.good[source]

    def not_an_image(self, rel: str) -> None:
        (self.root / rel).write_text("this is text, not a JPEG")
        self.bad[rel] = "not an image"

    def truncated(self, rel: str) -> None:
        path = self.image(rel, 32, 32)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        del self.good[rel]
        self.bad[rel] = "truncated"

    def readable_per_identity(self) -> dict[str, int]:
        counts = Counter(rel.split("/")[0] for rel in self.good)
        return {name: counts.get(name, 0) for name in sorted(self.identities)}


def _bin_counts(per_identity: dict[str, int]) -> dict[str, int]:
    # The bins as the issue states them: 0, 1, 2, 3-5, 6-10, 11-50, >50.
    edges = {"0": (0, 0), "1": (1, 1), "2": (2, 2), "3-5": (3, 5), "6-10": (6, 10), "11-50": (11, 50)}
    out = {label: sum(lo <= n <= hi for n in per_identity.values()) for label, (lo, hi) in edges.items()}
    out[">50"] = sum(n > 50 for n in per_identity.values())
    return out


@pytest.fixture
def messy(tmp_path: Path) -> Tree:
    tree = Tree(tmp_path / "faces")
    tree.image("alice/a0.jpg", 32, 32)
    tree.image("alice/a1.png", 40, 40)
    tree.image("alice/a2.png", 32, 32, mode="L")
    tree.not_an_image("alice/bad.jpg")
    (tree.root / "alice" / "notes.txt").write_text("a note")
    os.symlink("..", tree.root / "alice" / "loop")  # alice/loop -> the root: a loop
    tree.image("bob/b0.png", 32, 32, mode="RGBA")
    tree.truncated("bob/b1.jpg")
    tree.image("bob/b2.jpg", 48, 32)
    tree.copy("alice/a1.png", "bob/b3.png")  # same bytes in another identity
    tree.image("carol/c0.png", 32, 32)  # one image: under the minimum of 2
    for k in range(6):
        tree.image(f"dave/d{k}.png", 32, 32)
    return tree


def test_counts_sizes_modes_and_histogram_follow_the_tree(messy: Tree) -> None:
    check = check_folder_tree(messy.root)
    per_identity = messy.readable_per_identity()
    assert per_identity == {"alice": 3, "bob": 3, "carol": 1, "dave": 6}  # the manifest itself
    assert check.identities == 4
    assert check.images == len(messy.good) == 13
    assert check.image_files == len(messy.good) + len(messy.bad) == 15
    assert check.usable_identities == sum(n >= 2 for n in per_identity.values()) == 3
    assert check.per_identity_min == min(per_identity.values())
    assert check.per_identity_median == statistics.median(per_identity.values())
    assert check.per_identity_max == max(per_identity.values())
    assert check.histogram == _bin_counts(per_identity)
    assert check.histogram == {"0": 0, "1": 1, "2": 0, "3-5": 2, "6-10": 1, "11-50": 0, ">50": 0}
    sizes = Counter((w, h) for w, h, _, _ in messy.good.values())
    assert check.sizes == [(w, h, c) for (w, h), c in sizes.most_common()]
    assert check.distinct_sizes == len(sizes) == 3
    assert check.modes == dict(Counter(m for _, _, m, _ in messy.good.values()))
    assert check.modes == {"RGB": 11, "L": 1, "RGBA": 1}
    assert check.formats == dict(Counter(f for _, _, _, f in messy.good.values()))
    assert check.elapsed_s >= 0.0


def test_bad_files_duplicates_links_and_small_identities_are_named(messy: Tree) -> None:
    check = check_folder_tree(messy.root)
    assert check.unreadable.count == len(messy.bad) == 2
    reasons = dict(check.unreadable.items)
    assert sorted(reasons) == sorted(messy.bad)
    for rel, keyword in messy.bad.items():
        assert reasons[rel].startswith(keyword), (rel, reasons[rel])
    assert check.skipped.count == 1
    assert check.skipped.items == [("alice/notes.txt", "skipped: not an image extension (.txt)")]
    assert check.links.count == 1
    ((link, why),) = check.links.items
    assert link == "alice/loop" and why.startswith("symlink loop -> ..") and "not followed" in why
    assert check.duplicate_groups == 1 and check.duplicate_files == 2
    assert check.duplicates == [{"count": 2, "paths": ["alice/a1.png", "bob/b3.png"], "cross_identity": True}]
    assert check.below_minimum == [("carol", 1)] and check.below_minimum_count == 1
    problems = check.problems()
    assert len(problems) == 3
    assert problems[0] == "unreadable image file alice/bad.jpg: not an image (PIL cannot identify the file's format)"
    assert problems[1].startswith("unreadable image file bob/b1.jpg: truncated: ")
    assert problems[2] == "identity carol: 1 readable image, fewer than min_images_per_identity=2"
    text = check.text()
    for name in ("alice/bad.jpg", "bob/b1.jpg", "alice/notes.txt", "alice/loop", "alice/a1.png = bob/b3.png", "carol"):
        assert name in text
    assert "identities: 4 (3 with >= 2 readable images)" in text
    assert "images: 13 readable of 15 image files" in text


def test_a_higher_minimum_leaves_one_usable_identity(messy: Tree) -> None:
    check = check_folder_tree(messy.root, min_images_per_identity=4)
    per_identity = messy.readable_per_identity()
    below = [(name, n) for name, n in per_identity.items() if n < 4]
    assert check.below_minimum == below == [("alice", 3), ("bob", 3), ("carol", 1)]
    assert check.usable_identities == 1
    problems = check.problems()
    assert "1 of 4 identities have at least 4 readable images: a federation needs at least 2" in problems
    assert [p for p in problems if p.startswith("identity ")] == [
        "identity alice: 3 readable images, fewer than min_images_per_identity=4",
        "identity bob: 3 readable images, fewer than min_images_per_identity=4",
        "identity carol: 1 readable image, fewer than min_images_per_identity=4",
    ]


def test_to_dict_is_json_and_carries_every_list(messy: Tree) -> None:
    check = check_folder_tree(messy.root)
    data = check.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["identities"] == 4 and data["images"] == 13
    assert data["images_per_identity"]["histogram"] == _bin_counts(messy.readable_per_identity())
    assert data["unreadable"]["count"] == 2 and data["unreadable"]["more"] == 0
    assert [e["path"] for e in data["unreadable"]["listed"]] == sorted(messy.bad)
    assert data["skipped"]["listed"] == [
        {"path": "alice/notes.txt", "reason": "skipped: not an image extension (.txt)"}
    ]
    assert data["below_minimum"]["listed"] == [{"identity": "carol", "images": 1}]
    assert data["duplicates"]["groups"] == 1 and data["duplicates"]["listed"][0]["paths"] == [
        "alice/a1.png",
        "bob/b3.png",
    ]
    assert data["problems"] == check.problems()


def test_long_lists_name_the_first_ones_and_count_the_rest(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "faces")
    for name in ("ann", "ben"):
        tree.image(f"{name}/0.png", 8, 8)
        tree.image(f"{name}/1.png", 8, 8)
    n_bad, n_txt = LISTED + 5, LISTED + 3
    for k in range(n_bad):
        tree.not_an_image(f"ann/bad{k:03d}.jpg")
    for k in range(n_txt):
        (tree.root / "ben" / f"note{k:03d}.txt").write_text("x")
    check = check_folder_tree(tree.root)
    assert check.unreadable.count == n_bad and len(check.unreadable.items) == LISTED and check.unreadable.more == 5
    assert [p for p, _ in check.unreadable.items] == sorted(tree.bad)[:LISTED]
    assert check.skipped.count == n_txt and len(check.skipped.items) == LISTED and check.skipped.more == 3
    problems = check.problems()
    assert len(problems) == LISTED + 1
    assert problems[-1] == "... and 5 more unreadable image files"
    assert "  ... and 3 more" in check.text().splitlines()


def test_clean_tree_has_no_problem_and_matches_the_loader(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "faces")
    for name, n in (("x", 2), ("y", 3), ("z", 2)):
        for k in range(n):
            tree.image(f"{name}/{k}.{'jpg' if k % 2 else 'png'}", 24, 24)
    check = check_folder_tree(tree.root)
    assert check.problems() == []
    assert "problems: 0 (the tree can be audited)" in check.text()
    faces = load_folder_tree(tree.root, resolution=16)
    assert check.images == len(faces) == 7
    assert check.identities == len(faces.names) == 3


def test_links_leaving_the_root_and_broken_links_are_reported(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "faces")
    tree.image("ann/0.png", 8, 8)
    tree.image("ann/1.png", 8, 8)
    outside = Tree(tmp_path / "elsewhere", seed=1)
    outside.image("eve/0.png", 8, 8)
    outside.image("eve/1.png", 8, 8)
    os.symlink(outside.root / "eve", tree.root / "eve")  # an identity folder outside the root: still read
    os.symlink(tree.root / "ann" / "missing.png", tree.root / "ann" / "gone.png")  # broken
    check = check_folder_tree(tree.root)
    assert check.identities == 2 and check.images == 4 and check.problems() == []
    links = dict(check.links.items)
    assert sorted(links) == ["ann/gone.png", "eve"]
    assert links["ann/gone.png"].startswith("broken or circular symlink")
    assert links["eve"].startswith("symlink leaving the root") and "read as an identity folder" in links["eve"]


def test_a_root_link_to_the_root_is_a_loop_and_an_empty_identity(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "faces")
    for name in ("ann", "ben"):
        tree.image(f"{name}/0.png", 8, 8)
        tree.image(f"{name}/1.png", 8, 8)
    os.symlink(tree.root, tree.root / "self")
    check = check_folder_tree(tree.root)  # finishes: the link is looked at, never walked
    assert check.identities == 3 and check.images == 4
    assert [p for p, _ in check.links.items] == ["self"]
    assert check.below_minimum == [("self", 0)]
    assert check.problems() == ["identity self: 0 readable images, fewer than min_images_per_identity=2"]


def test_one_identity_is_a_problem(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "faces")
    tree.image("solo/0.png", 8, 8)
    tree.image("solo/1.png", 8, 8)
    check = check_folder_tree(tree.root)
    assert check.identities == 1 and check.images == 2
    assert check.problems() == [f"1 identity: a federation needs at least 2 (under {tree.root})"]


def test_identity_folders_without_a_readable_image(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_text("not an image")
    check = check_folder_tree(tmp_path)
    assert check.images == 0 and check.image_files == 1
    assert check.problems() == [
        f"no identity folder with a readable image under {tmp_path}",
        "0 of 2 identities have at least 2 readable images: a federation needs at least 2",
        "unreadable image file b/x.jpg: not an image (PIL cannot identify the file's format)",
        "identity a: 0 readable images, fewer than min_images_per_identity=2",
        "identity b: 0 readable images, fewer than min_images_per_identity=2",
    ]
    assert check.histogram["0"] == 2


def test_bad_roots_raise_named_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        check_folder_tree(missing)
    a_file = tmp_path / "file.jpg"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"got a file: {a_file}"):
        check_folder_tree(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loose.png").write_text("a file in the root is not an identity")
    with pytest.raises(ValueError, match=f"no identity folders under {empty}"):
        check_folder_tree(empty)
    with pytest.raises(ValueError, match="min_images_per_identity must be an int >= 1"):
        check_folder_tree(tmp_path, min_images_per_identity=0)
