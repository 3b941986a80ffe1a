"""`privaudit data check PATH`: summary or JSON on stdout, exit 0 / 2, problems named on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from federated_core.data.check import check_folder_tree
from privaudit.cli import main


def _tree(root: Path, per_identity: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for identity, n in per_identity.items():
        (root / identity).mkdir(parents=True)
        for k in range(n):
            pixels = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / identity / f"{k}.{'jpg' if k % 2 else 'png'}")
    return root


def test_clean_tree_exits_0_and_prints_the_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _tree(tmp_path / "faces", {"ann": 2, "ben": 3, "cid": 2})
    assert main(["data", "check", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "identities: 3 (3 with >= 2 readable images)" in out
    assert "images: 7 readable of 7 image files" in out
    assert "problems: 0" in out


def test_truncated_jpeg_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _tree(tmp_path / "faces", {"ann": 2, "ben": 3})
    bad = tree / "ben" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    assert main(["data", "check", str(tree), "--quiet"]) == 2
    captured = capsys.readouterr()
    problem_lines = [line.strip() for line in captured.err.splitlines() if line.startswith("  ")]
    assert len(problem_lines) == 1
    assert problem_lines[0].startswith("unreadable image file ben/1.jpg: truncated")
    assert "images: 4 readable of 5 image files" in captured.out


def test_json_matches_check_folder_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _tree(tmp_path / "faces", {"ann": 2, "ben": 1})
    assert main(["data", "check", str(tree), "--json", "--quiet"]) == 2  # ben has one image
    printed = json.loads(capsys.readouterr().out)
    expected = check_folder_tree(tree).to_dict()
    printed.pop("elapsed_s")
    expected.pop("elapsed_s")
    assert printed == expected
    assert printed["identities"] == 2 and printed["images"] == 3
    assert printed["below_minimum"]["listed"] == [{"identity": "ben", "images": 1}]


def test_min_images_and_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = _tree(tmp_path / "faces", {"ann": 2, "ben": 3})
    assert main(["data", "check", str(tree), "--min-images", "3", "--quiet"]) == 2
    problem_lines = [line.strip() for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    # ben has 3 images: only ann is below the minimum, and 1 usable identity is too few for a federation
    assert problem_lines == [
        "1 of 2 identities have at least 3 readable images: a federation needs at least 2",
        "identity ann: 2 readable images, fewer than min_images_per_identity=3",
    ]
    missing = tmp_path / "nope"
    assert main(["data", "check", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
