"""1:1 verification pair lists: LFW-style ``pairs.txt`` and insightface-style ``.bin`` files.

Both loaders return a :class:`PairSet`: the two images of every pair (uint8, RGB, one common
resolution), whether the pair is genuine, and the evaluation fold of the pair.

``pairs.txt`` (LFW protocol, also CALFW/CPLFW/SLLFW style files)::

    10\t300                  optional header: folds, genuine pairs per fold (then as many impostor)
    Abel_Pacheco\t1\t4        genuine pair: name, image number, image number
    Abdel_Madi_Shabneh\t1\tDean_Barker\t1   impostor pair: name, number, name, number

With the header, fold ``f`` is lines ``f*2n .. (f+1)*2n-1`` (``n`` genuine then ``n`` impostor, as
in LFW's View 2); a single-number header ``n`` (LFW's View 1 files) means one fold of ``n``
genuine then ``n`` impostor pairs. Without a header the pairs are cut into ``num_folds``
consecutive folds (sizes as scikit-learn's unshuffled ``KFold``).

insightface ``.bin``: a pickle of ``(bins, issame_list)``; ``bins`` holds ``2P`` encoded images
(pair ``i`` is images ``2i`` and ``2i+1``), ``issame_list`` the ``P`` booleans. It is read with a
restricted unpickler that builds lists, tuples, bytes, str, numbers and bools and, of numpy, only
plain ``ndarray``/``dtype``/bool scalars; every other global is refused before anything runs, so
a hostile ``.bin`` cannot execute code. Folds are 10 consecutive blocks as insightface's own
evaluation (``KFold(n_splits=10, shuffle=False)``).
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from federated_core.data.folders import decode_image, read_image

__all__ = [
    "PairSet",
    "LFW_PATH_PATTERN",
    "load_lfw_pairs",
    "read_lfw_pairs",
    "load_insightface_bin",
    "read_insightface_bin",
    "consecutive_folds",
    "UnsafePickleError",
]

LFW_PATH_PATTERN = "{name}/{name}_{index:04d}.jpg"


@dataclass
class PairSet:
    """Verification pairs.

    Attributes:
        first: uint8 ``[P, 3, R, R]`` first image of every pair.
        second: uint8 ``[P, 3, R, R]`` second image of every pair.
        is_same: bool ``[P]``, True for genuine (same identity) pairs.
        fold: int64 ``[P]``, evaluation fold of every pair (``0..F-1``).
    """

    first: torch.Tensor
    second: torch.Tensor
    is_same: torch.Tensor
    fold: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("first", "second"):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[1] != 3 or t.shape[2] != t.shape[3]:
                raise ValueError(
                    f"{name} must be a uint8 tensor [P, 3, R, R], got dtype={t.dtype} shape={tuple(t.shape)}"
                )
        if self.first.shape != self.second.shape:
            raise ValueError(
                f"first and second must have the same shape, got {tuple(self.first.shape)} "
                f"and {tuple(self.second.shape)}"
            )
        p = self.first.shape[0]
        if self.is_same.shape != (p,) or self.is_same.dtype != torch.bool:
            raise ValueError(
                f"is_same must be a bool tensor [{p}], got dtype={self.is_same.dtype} shape={tuple(self.is_same.shape)}"
            )
        if self.fold.shape != (p,):
            raise ValueError(f"fold must be a tensor [{p}], got shape={tuple(self.fold.shape)}")
        self.fold = self.fold.to(torch.int64)

    def __len__(self) -> int:
        return int(self.is_same.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.first.shape[-1])

    @property
    def num_folds(self) -> int:
        return 0 if len(self) == 0 else int(self.fold.max()) + 1


def consecutive_folds(num_pairs: int, num_folds: int = 10) -> torch.Tensor:
    """Fold index of each of ``num_pairs`` pairs cut into ``num_folds`` consecutive blocks; the
    first ``num_pairs % num_folds`` blocks get one extra pair (scikit-learn ``KFold`` without
    shuffling). With fewer pairs than folds, each pair is its own fold."""
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) or num_folds < 1:
        raise ValueError(f"num_folds must be an int >= 1, got {num_folds!r}")
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    sizes = np.full(num_folds, num_pairs // num_folds, dtype=np.int64)
    sizes[: num_pairs % num_folds] += 1
    return torch.from_numpy(np.repeat(np.arange(num_folds, dtype=np.int64), sizes))


# ----------------------------------------------------------------------------------- pairs.txt


@dataclass(frozen=True)
class LfwPair:
    """One line of a pairs.txt: ``(name1, index1)`` vs ``(name2, index2)``."""

    name1: str
    index1: int
    name2: str
    index2: int
    fold: int

    @property
    def is_same(self) -> bool:
        return self.name1 == self.name2


def _parse_index(token: str, path: Path, line_no: int) -> int:
    if not re.fullmatch(r"\d+", token) or int(token) < 1:
        raise ValueError(f"{path}:{line_no}: image number must be a positive integer, got {token!r}")
    return int(token)


def read_lfw_pairs(pairs_file: str | Path, num_folds: int = 10) -> list[LfwPair]:
    """Parse an LFW-style pairs file (see the module docstring) into `LfwPair` records.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a malformed line (file and line number named), a header whose counts do not
            match the number of pair lines, or a fold whose genuine/impostor layout contradicts
            the header.
    """
    consecutive_folds(0, num_folds)  # validates num_folds
    path = Path(pairs_file)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    lines = [(n, ln.split()) for n, ln in enumerate(path.read_text().splitlines(), start=1) if ln.strip()]
    if not lines:
        raise ValueError(f"pairs file {path} is empty")

    header: tuple[int, int] | None = None
    first_tokens = lines[0][1]
    if len(first_tokens) <= 2 and all(re.fullmatch(r"\d+", t) for t in first_tokens):
        if len(first_tokens) == 2:
            header = (int(first_tokens[0]), int(first_tokens[1]))
        else:
            header = (1, int(first_tokens[0]))
        lines = lines[1:]

    records: list[tuple[str, int, str, int]] = []
    for line_no, tokens in lines:
        if len(tokens) == 3:
            name = tokens[0]
            records.append((name, _parse_index(tokens[1], path, line_no), name, _parse_index(tokens[2], path, line_no)))
        elif len(tokens) == 4:
            records.append(
                (tokens[0], _parse_index(tokens[1], path, line_no), tokens[2], _parse_index(tokens[3], path, line_no))
            )
        else:
            raise ValueError(
                f"{path}:{line_no}: expected 'name n1 n2' (genuine) or 'name1 n1 name2 n2' (impostor), "
                f"got {len(tokens)} fields: {' '.join(tokens)!r}"
            )

    if header is not None:
        folds_h, per_fold = header
        if folds_h < 1 or per_fold < 1:
            raise ValueError(f"{path}: header must be '<folds> <pairs per fold>' with both >= 1, got {header}")
        if len(records) != 2 * folds_h * per_fold:
            raise ValueError(
                f"{path}: header says {folds_h} fold(s) x (2 x {per_fold}) pairs = {2 * folds_h * per_fold} "
                f"pairs but the file has {len(records)} pair lines"
            )
        fold_of = np.arange(len(records)) // (2 * per_fold)
        for i, (n1, _, n2, _) in enumerate(records):
            expect_same = (i % (2 * per_fold)) < per_fold
            if (n1 == n2) != expect_same:
                line_no = lines[i][0]
                raise ValueError(
                    f"{path}:{line_no}: the header '{folds_h} {per_fold}' puts {per_fold} genuine then "
                    f"{per_fold} impostor pairs in each fold, but this line is "
                    f"{'a genuine' if n1 == n2 else 'an impostor'} pair"
                )
    else:
        fold_of = consecutive_folds(len(records), num_folds).numpy()

    return [LfwPair(n1, i1, n2, i2, int(f)) for (n1, i1, n2, i2), f in zip(records, fold_of)]


def load_lfw_pairs(
    pairs_file: str | Path,
    images_root: str | Path,
    resolution: int | None,
    path_pattern: str = LFW_PATH_PATTERN,
    num_folds: int = 10,
    progress: bool = False,
) -> PairSet:
    """Load the pairs of an LFW-style pairs file with their images (aligned crops).

    Args:
        pairs_file: the pairs list (see the module docstring).
        images_root: folder the image paths are relative to.
        resolution: side length to resize every image to (PIL bilinear); ``None`` keeps the files'
            size, which must then be square and common to all images.
        path_pattern: ``str.format`` pattern of an image path relative to ``images_root`` with
            fields ``name`` and ``index``; LFW's is ``"{name}/{name}_{index:04d}.jpg"``.
        num_folds: folds for a file without header (consecutive blocks).
        progress: tqdm bar over images.

    Raises:
        FileNotFoundError: a pairs file, root or image file is missing (the pair line is named).
        ValueError: malformed file, unreadable image (named), mixed sizes without ``resolution``.
    """
    pairs = read_lfw_pairs(pairs_file, num_folds=num_folds)
    root = Path(images_root)
    if not root.is_dir():
        raise FileNotFoundError(f"images_root is not a directory: {root}")
    try:
        path_pattern.format(name="x", index=1)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"path_pattern must be a str.format pattern with fields {{name}} and {{index}}, got "
            f"{path_pattern!r} ({err})"
        ) from err

    keys = sorted({(p.name1, p.index1) for p in pairs} | {(p.name2, p.index2) for p in pairs})
    slot = {key: i for i, key in enumerate(keys)}
    cache: torch.Tensor | None = None
    for i, (name, index) in enumerate(tqdm(keys, desc="loading pair images", disable=not progress)):
        file = root / path_pattern.format(name=name, index=index)
        if not file.is_file():
            raise FileNotFoundError(
                f"image of {name} #{index} listed in {pairs_file} not found: {file} (path_pattern={path_pattern!r})"
            )
        image = read_image(file, resolution)
        if cache is None:
            if image.shape[1] != image.shape[2]:
                raise ValueError(f"image {file} is not square ({image.shape[2]}x{image.shape[1]}); pass resolution")
            cache = torch.empty((len(keys), *image.shape), dtype=torch.uint8)
        elif image.shape != cache.shape[1:]:
            raise ValueError(
                f"pair images have different sizes ({file} is {image.shape[2]}x{image.shape[1]}, earlier "
                f"ones {cache.shape[3]}x{cache.shape[2]}); pass resolution=<side> to resize on load"
            )
        cache[i] = image
    assert cache is not None
    first_idx = torch.tensor([slot[(p.name1, p.index1)] for p in pairs], dtype=torch.int64)
    second_idx = torch.tensor([slot[(p.name2, p.index2)] for p in pairs], dtype=torch.int64)
    return PairSet(
        first=cache[first_idx],
        second=cache[second_idx],
        is_same=torch.tensor([p.is_same for p in pairs], dtype=torch.bool),
        fold=torch.tensor([p.fold for p in pairs], dtype=torch.int64),
    )


# ---------------------------------------------------------------------------- insightface .bin


class UnsafePickleError(ValueError, pickle.UnpicklingError):
    """A pickle asked for a global that the restricted unpickler does not allow."""


def _numpy_core_module(name: str) -> Any:
    """``numpy._core.<name>`` (numpy >= 2) or ``numpy.core.<name>`` (numpy 1.x)."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{name}")


def _safe_latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 writes ``bytes`` at pickle protocol <= 2 as ``_codecs.encode(str, "latin1")``.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(f"_codecs.encode is allowed only as encode(<str>, 'latin1'), got encoding={encoding!r}")
    return text.encode("latin1")


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct is allowed only for numpy.ndarray, got {subtype!r}")
    return _numpy_core_module("multiarray")._reconstruct(subtype, shape, dtype)


def _safe_scalar(dtype: Any, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind != "b":
        raise UnsafePickleError(f"numpy scalar is allowed only for bool scalars, got dtype {dtype!r}")
    return _numpy_core_module("multiarray").scalar(dtype, *args)


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy _frombuffer is allowed only for plain dtypes, got {dtype!r}")
    return _numpy_core_module("numeric")._frombuffer(buffer, dtype, shape, order)


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("_codecs", "encode"): _safe_latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "_reconstruct")] = _safe_reconstruct
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "scalar")] = _safe_scalar
    _ALLOWED_GLOBALS[(f"{_mod}.numeric", "_frombuffer")] = _safe_frombuffer


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for data-only pickles: lists, tuples, dicts, str, bytes, numbers, bools (no
    global needed), numpy ``ndarray``/``dtype`` and bool scalars through the wrappers above, and
    ``_codecs.encode(str, 'latin1')`` (bytes at protocol <= 2). Any other global -- functions,
    classes, ``os.system``, ``builtins.eval`` -- raises :class:`UnsafePickleError` when the
    pickle *names* it, i.e. before it could be called."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 pickles (insightface's) hold str as bytes
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"refusing to unpickle {self._source}: it references the global "
                f"'{module}.{name}', but a verification .bin may only contain lists of image bytes and "
                f"booleans (allowed globals: {sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)})"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to unpickle {self._source}: persistent ids are not allowed")


def _as_bytes(item: Any, index: int, source: str) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise ValueError(
        f"{source}: image {index} must be encoded image bytes (or a 1-d uint8 array), got {type(item).__name__}"
    )


def _as_bools(issame: Any, source: str) -> np.ndarray:
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise ValueError(f"{source}: issame array must be 1-d bool, got dtype={issame.dtype} ndim={issame.ndim}")
        return issame.copy()
    if not isinstance(issame, (list, tuple)):
        raise ValueError(f"{source}: issame_list must be a list of booleans, got {type(issame).__name__}")
    bad = [i for i, v in enumerate(issame) if not isinstance(v, (bool, np.bool_))]
    if bad:
        raise ValueError(
            f"{source}: issame_list entries must be booleans; entry {bad[0]} is "
            f"{type(issame[bad[0]]).__name__} ({len(bad)} bad entries)"
        )
    return np.asarray(issame, dtype=bool)


def read_insightface_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """Read ``(bins, issame)`` from an insightface ``.bin`` safely (see `RestrictedUnpickler`).

    Returns the ``2P`` encoded images and the bool array ``[P]``.

    Raises:
        FileNotFoundError: missing file.
        UnsafePickleError (a ``ValueError``): the pickle references a disallowed global.
        ValueError: not a pickle, or not the ``(bins, issame_list)`` layout (counts named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification .bin file not found: {path}")
    source = str(path)
    with path.open("rb") as fh:
        try:
            obj = RestrictedUnpickler(fh, source).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise ValueError(
                f"{source} is not a readable insightface .bin pickle: {type(err).__name__}: {err}"
            ) from err
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(
            f"{source}: expected a pickled pair (bins, issame_list), got {type(obj).__name__}"
            + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        )
    raw_bins, raw_issame = obj
    if not isinstance(raw_bins, (list, tuple)) and not (isinstance(raw_bins, np.ndarray) and raw_bins.ndim == 1):
        raise ValueError(f"{source}: bins must be a list of encoded images, got {type(raw_bins).__name__}")
    bins = [_as_bytes(item, i, source) for i, item in enumerate(raw_bins)]
    issame = _as_bools(raw_issame, source)
    if len(bins) != 2 * len(issame):
        raise ValueError(
            f"{source}: {len(bins)} images for {len(issame)} pairs; a .bin must hold exactly 2 images per pair"
        )
    return bins, issame


def load_insightface_bin(
    path: str | Path, resolution: int | None, num_folds: int = 10, progress: bool = False
) -> PairSet:
    """Load an insightface verification ``.bin`` (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

    Pair ``i`` is images ``2i`` and ``2i+1``; folds are ``num_folds`` consecutive blocks.

    Args:
        path: the ``.bin`` file.
        resolution: side to resize every image to (PIL bilinear); ``None`` keeps the encoded size,
            which must be square and common to all images (112 for insightface's files).
        num_folds: number of consecutive folds (10 as insightface's evaluation).
        progress: tqdm bar over images.
    """
    consecutive_folds(0, num_folds)  # validates num_folds
    bins, issame = read_insightface_bin(path)
    images: torch.Tensor | None = None
    for i, data in enumerate(tqdm(bins, desc="decoding .bin images", disable=not progress)):
        image = decode_image(data, resolution, what=f"image {i} (pair {i // 2}) of {path}")
        if images is None:
            if image.shape[1] != image.shape[2]:
                raise ValueError(
                    f"image 0 of {path} is not square ({image.shape[2]}x{image.shape[1]}); pass resolution"
                )
            images = torch.empty((len(bins), *image.shape), dtype=torch.uint8)
        elif image.shape != images.shape[1:]:
            raise ValueError(
                f"images of {path} have different sizes (image {i} is {image.shape[2]}x{image.shape[1]}, "
                f"earlier ones {images.shape[3]}x{images.shape[2]}); pass resolution=<side>"
            )
        images[i] = image
    if images is None:
        raise ValueError(f"{path} holds no pairs")
    return PairSet(
        first=images[0::2].clone(),
        second=images[1::2].clone(),
        is_same=torch.from_numpy(issame),
        fold=consecutive_folds(len(issame), num_folds),
    )
