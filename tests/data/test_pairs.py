"""Verification pair lists: LFW pairs.txt and insightface .bin (incl. a hostile pickle)."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.model_selection import KFold

from federated_core.data.pairs import (
    PairSet,
    UnsafePickleError,
    consecutive_folds,
    load_insightface_bin,
    load_lfw_pairs,
    read_lfw_pairs,
)


def _face(seed: int, size: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _lfw_tree(root: Path, people: dict[str, int], ext: str = "png") -> dict[tuple[str, int], np.ndarray]:
    arrays = {}
    for k, (name, count) in enumerate(sorted(people.items())):
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            arrays[(name, i)] = _face(100 * k + i)
            Image.fromarray(arrays[(name, i)]).save(root / name / f"{name}_{i:04d}.{ext}")
    return arrays


def test_lfw_pairs_with_header(tmp_path: Path) -> None:
    arrays = _lfw_tree(tmp_path / "imgs", {"Ann_A": 3, "Bo_B": 2, "Cy_C": 1})
    # 2 folds x (1 genuine + 1 impostor), tab-separated as in LFW.
    (tmp_path / "pairs.txt").write_text(
        "2\t1\n"
        "Ann_A\t1\t3\n"
        "Ann_A\t2\tCy_C\t1\n"
        "Bo_B\t2\t1\n"
        "Bo_B\t1\tCy_C\t1\n"
    )
    ps = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "imgs", resolution=None, path_pattern="{name}/{name}_{index:04d}.png")
    assert isinstance(ps, PairSet) and len(ps) == 4
    assert ps.is_same.tolist() == [True, False, True, False]
    assert ps.fold.tolist() == [0, 0, 1, 1]
    assert ps.first.shape == (4, 3, 6, 6) and ps.first.dtype == torch.uint8
    expected = [
        (("Ann_A", 1), ("Ann_A", 3)),
        (("Ann_A", 2), ("Cy_C", 1)),
        (("Bo_B", 2), ("Bo_B", 1)),
        (("Bo_B", 1), ("Cy_C", 1)),
    ]
    for p, (a, b) in enumerate(expected):
        assert torch.equal(ps.first[p], _chw(arrays[a]))
        assert torch.equal(ps.second[p], _chw(arrays[b]))


def test_lfw_pairs_default_pattern_without_header(tmp_path: Path) -> None:
    _lfw_tree(tmp_path, {"X_Y": 2, "Z_W": 1}, ext="jpg")  # LFW's own naming: name/name_0001.jpg
    lines = ["X_Y 1 2", "X_Y 1 Z_W 1"] * 6  # 12 pairs, space-separated, no header
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    ps = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path, resolution=4)
    assert ps.first.shape == (12, 3, 4, 4)
    # Headerless files: 10 consecutive folds exactly as scikit-learn's unshuffled KFold.
    expected = np.empty(12, dtype=np.int64)
    for f, (_, test_idx) in enumerate(KFold(n_splits=10, shuffle=False).split(np.zeros(12))):
        expected[test_idx] = f
    assert ps.fold.tolist() == expected.tolist()
    assert ps.num_folds == 10


def test_consecutive_folds_match_kfold() -> None:
    for n in (10, 23, 6000):
        expected = np.empty(n, dtype=np.int64)
        for f, (_, idx) in enumerate(KFold(n_splits=10).split(np.zeros(n))):
            expected[idx] = f
        assert consecutive_folds(n, 10).tolist() == expected.tolist()
    assert consecutive_folds(3, 10).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="num_folds"):
        consecutive_folds(5, 0)


def test_single_number_header_is_one_fold(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("2\nA 1 2\nB 1 3\nA 1 B 2\nB 4 C 1\n")
    pairs = read_lfw_pairs(tmp_path / "p.txt")
    assert [p.fold for p in pairs] == [0, 0, 0, 0]
    assert [p.is_same for p in pairs] == [True, True, False, False]


def test_lfw_pairs_errors(tmp_path: Path) -> None:
    _lfw_tree(tmp_path / "imgs", {"A": 2, "B": 1})
    pattern = "{name}/{name}_{index:04d}.png"
    p = tmp_path / "p.txt"
    with pytest.raises(FileNotFoundError, match="pairs file not found"):
        read_lfw_pairs(p)
    p.write_text("1\t1\nA\t1\t2\nA\t1\tB\t1\tC\n")
    with pytest.raises(ValueError, match=r"p.txt:3: expected .* got 5 fields"):
        read_lfw_pairs(p)
    p.write_text("1\t2\nA\t1\t2\nA\t1\tB\t1\n")
    with pytest.raises(ValueError, match="header says 1 fold.*4 pairs but the file has 2"):
        read_lfw_pairs(p)
    p.write_text("1\t1\nA\t1\tB\t1\nA\t1\t2\n")  # impostor where the header puts a genuine pair
    with pytest.raises(ValueError, match=r"p.txt:2: .*an impostor pair"):
        read_lfw_pairs(p)
    p.write_text("A\t0\t2\n")
    with pytest.raises(ValueError, match="positive integer, got '0'"):
        read_lfw_pairs(p)
    p.write_text("A\t1\t3\n")  # A has no image 3
    with pytest.raises(FileNotFoundError, match=r"A #3 .*A_0003.png"):
        load_lfw_pairs(p, tmp_path / "imgs", 4, path_pattern=pattern)
    p.write_text("A\t1\t2\n")
    with pytest.raises(ValueError, match="path_pattern"):
        load_lfw_pairs(p, tmp_path / "imgs", 4, path_pattern="{person}/{index}.png")
    with pytest.raises(FileNotFoundError, match="images_root"):
        load_lfw_pairs(p, tmp_path / "missing", 4, path_pattern=pattern)


# ----------------------------------------------------------------------------------- .bin


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _bin_contents(n_pairs: int, size: int = 8) -> tuple[list[bytes], list[bool], list[np.ndarray]]:
    arrays = [_face(i, size) for i in range(2 * n_pairs)]
    bins = [_encoded(a, "PNG") for a in arrays]
    issame = [bool(i % 2 == 0) for i in range(n_pairs)]
    return bins, issame, arrays


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_insightface_bin_roundtrip(tmp_path: Path, protocol: int) -> None:
    bins, issame, arrays = _bin_contents(12)
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps((bins, issame), protocol=protocol))  # protocol 2: bytes via _codecs
    ps = load_insightface_bin(path, resolution=None)
    assert len(ps) == 12 and ps.resolution == 8
    assert ps.is_same.tolist() == issame
    for i in range(12):
        assert torch.equal(ps.first[i], _chw(arrays[2 * i]))
        assert torch.equal(ps.second[i], _chw(arrays[2 * i + 1]))
    assert ps.fold.tolist() == consecutive_folds(12, 10).tolist()
    assert load_insightface_bin(path, resolution=5).first.shape == (12, 3, 5, 5)


def test_insightface_bin_python2_style_and_jpeg(tmp_path: Path) -> None:
    """insightface's own files are Python 2 pickles: byte strings as BINSTRING opcodes."""
    arrays = [_face(i, 16) for i in range(4)]
    images = [_encoded(arrays[0], "JPEG"), _encoded(arrays[1], "PNG"), _encoded(arrays[2], "PNG"), _encoded(arrays[3], "PNG")]
    body = b"\x80\x02]q\x00("  # PROTO 2, EMPTY_LIST, BINPUT, MARK
    for data in images:
        body += b"T" + struct.pack("<I", len(data)) + data  # BINSTRING (py2 str)
    body += b"e](\x88\x89e\x86q\x01."  # APPENDS, [True, False], TUPLE2, BINPUT, STOP
    path = tmp_path / "py2.bin"
    path.write_bytes(body)
    ps = load_insightface_bin(path, resolution=None)
    assert ps.is_same.tolist() == [True, False]
    assert torch.equal(ps.second[0], _chw(arrays[1]))  # PNG: exact
    # JPEG is lossy: the reference is PIL's own decoding of the same bytes.
    decoded = np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB"))
    assert torch.equal(ps.first[0], _chw(decoded))


def test_insightface_bin_numpy_bool_array_and_scalars(tmp_path: Path) -> None:
    bins, issame, _ = _bin_contents(3)
    for payload in [(bins, np.array(issame)), (bins, [np.bool_(v) for v in issame])]:
        for protocol in (2, 5):
            path = tmp_path / f"np{protocol}.bin"
            path.write_bytes(pickle.dumps(payload, protocol=protocol))
            assert load_insightface_bin(path, resolution=None).is_same.tolist() == issame


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("exploit", [_Exploit, _EvalExploit])
@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_bin_is_refused_and_does_not_run(tmp_path: Path, exploit: type, protocol: int) -> None:
    marker = tmp_path / "pwned"
    bins, issame, _ = _bin_contents(1)
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps((bins, issame, exploit(marker)), protocol=protocol))
    # Sanity check of the test itself: an unrestricted unpickler does run the payload.
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle .*evil.bin.*(system|eval)"):
        load_insightface_bin(path, resolution=None)
    assert not marker.exists()


class _Reduce:
    """Pickles as ``func(*args)``: lets a test name an allowed global with hostile arguments."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):  # noqa: D105
        return (self.func, self.args)


@pytest.mark.parametrize(
    "call, message",
    [
        # allowed global, but only for a plain numpy.ndarray
        ((np.ndarray.__reduce__(np.zeros(1))[0], (np.dtype, (0,), b"b")), "only for numpy.ndarray"),
        # allowed global, but only as bytes-from-latin1 (not arbitrary codecs such as zlib)
        ((__import__("codecs").encode, ("x", "zlib_codec")), "only as encode"),
    ],
)
def test_allowed_globals_refuse_hostile_arguments(tmp_path: Path, call: tuple, message: str) -> None:
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(([], [_Reduce(*call)]), protocol=2))
    with pytest.raises(UnsafePickleError, match=message):
        load_insightface_bin(path, resolution=None)


def test_bin_layout_errors(tmp_path: Path) -> None:
    bins, issame, _ = _bin_contents(2)
    cases = [
        ((bins[:3], issame), "3 images for 2 pairs"),
        ((bins, issame, "x"), "expected a pickled pair"),
        (([1, 2], [True]), "image 0 must be encoded image bytes"),
        ((bins, [1, 0]), "entries must be booleans"),
        ((bins[:2] + [b"not an image", bins[3]], issame), r"cannot decode image 2 \(pair 1\)"),
    ]
    for payload, message in cases:
        path = tmp_path / "bad.bin"
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(ValueError, match=message):
            load_insightface_bin(path, resolution=None)
    path.write_bytes(b"definitely not a pickle")
    with pytest.raises(ValueError, match="not a readable insightface .bin"):
        load_insightface_bin(path, resolution=None)
    with pytest.raises(FileNotFoundError):
        load_insightface_bin(tmp_path / "missing.bin", resolution=None)


def test_pairset_validates_shapes() -> None:
    img = torch.zeros((2, 3, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError, match="is_same must be a bool tensor"):
        PairSet(img, img, torch.tensor([1, 0]), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        PairSet(img, img[:1], torch.tensor([True, False]), torch.zeros(2))
    with pytest.raises(ValueError, match="uint8"):
        PairSet(img.float(), img, torch.tensor([True, False]), torch.zeros(2))
