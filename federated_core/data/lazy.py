"""`FolderFaceDataset`: an identity-per-folder tree read one image at a time.

:func:`federated_core.data.folders.load_folder_tree` decodes a whole tree into one `FaceSet`
(``N x 3 x R x R`` bytes: 20,000 images at 112 px are 750 MB, MS1M's 5.8 M would be 218 GB).
`FolderFaceDataset` keeps only the file paths and labels and decodes an image, with
:func:`~federated_core.data.folders.read_image`, when it is asked for, so it can feed a
``torch.utils.data.DataLoader`` over a tree of any size. Labels and names are those of
`load_folder_tree` (``0..K-1`` in sorted folder-name order); :meth:`FolderFaceDataset.to_faceset`
materialises the whole set or a subset as a `FaceSet` when a caller needs tensors.

Paths are kept in one numpy byte array, not a list of Python strings, so DataLoader workers (forked
processes) do not copy them page by page as Python reference counts touch them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from federated_core.data.faceset import FaceSet
from federated_core.data.folders import (
    IMAGE_EXTENSIONS,
    _check_resolution,
    _name_list,
    list_folder_tree,
    read_image,
)

__all__ = ["FolderFaceDataset"]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _select_identities(tree: dict[str, list[Path]], identities: Sequence[str | int] | None) -> list[str]:
    """Folder names of the chosen identities (folder names or labels), in tree order."""
    names = list(tree)
    if identities is None:
        return names
    if isinstance(identities, (str, bytes)):
        raise ValueError(f"identities must be a sequence of folder names or labels, got the string {identities!r}")
    wanted: set[str] = set()
    unknown: list[str] = []
    for identity in identities:
        is_label = isinstance(identity, (int, np.integer)) and not isinstance(identity, bool)
        if isinstance(identity, str) and identity in tree:
            wanted.add(identity)
        elif is_label and 0 <= int(identity) < len(names):
            wanted.add(names[int(identity)])
        else:
            unknown.append(repr(identity))
    if unknown:
        raise ValueError(
            f"{len(unknown)} requested identit{'y is' if len(unknown) == 1 else 'ies are'} not in the tree "
            f"(folder names, or labels 0..{len(names) - 1}): {_name_list(unknown)}"
        )
    return [name for name in names if name in wanted]


class FolderFaceDataset(Dataset[tuple[torch.Tensor, int]]):
    """Face crops read from files on demand: ``dataset[i] = (uint8 [3, R, R] image, int label)``.

    The optional cache keeps the ``cache_size`` most recently used decoded images (least recently
    used out first; 0, the default, caches nothing). With DataLoader workers, each worker process
    holds its own copy of the dataset and so its own cache of up to ``cache_size`` images (a
    dataset is pickled with an empty cache). Items are copies: changing one never changes the cache.

    Attributes:
        labels: int64 tensor ``[N]`` of identity ids (the `load_folder_tree` labels).
        names: identity id -> folder name, for the identities in the set.
        resolution: side length every image is resized to (PIL bilinear, as `read_image`).
        cache_size: most decoded images kept.
        cache_hits / cache_misses: items served from the cache / decoded (in this process).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        labels: Sequence[int] | torch.Tensor,
        resolution: int,
        names: dict[int, str] | None = None,
        cache_size: int = 0,
    ) -> None:
        """Args: image files, their identity ids (one per file), the side length, names, cache size.

        Raises:
            ValueError: lengths differ, labels are not 1-d integers, bad resolution or cache size.
        """
        if resolution is None:
            raise ValueError("resolution must be a positive int (pixels per side): images are resized on read")
        _check_resolution(resolution)
        self.resolution = int(resolution)
        self.cache_size = _check_int("cache_size", cache_size, 0)
        label_tensor = torch.as_tensor(labels)
        if label_tensor.dim() != 1 or label_tensor.is_floating_point() or label_tensor.is_complex():
            raise ValueError(f"labels must be a 1-d sequence of ints, got shape {tuple(label_tensor.shape)}")
        if label_tensor.shape[0] != len(paths):
            raise ValueError(f"{len(paths)} paths but {label_tensor.shape[0]} labels: one label per file is needed")
        self.labels = label_tensor.to(torch.int64)
        self._paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        self.names = dict(names or {})
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    @classmethod
    def from_tree(
        cls,
        root: str | os.PathLike[str],
        resolution: int,
        min_images_per_identity: int = 1,
        identities: Sequence[str | int] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        cache_size: int = 0,
    ) -> FolderFaceDataset:
        """The images of an identity-per-folder tree (see `list_folder_tree`), nothing decoded yet.

        Args:
            root: folder holding one sub-folder per identity.
            resolution: side length to resize every image to.
            min_images_per_identity: every chosen identity must have at least this many image files.
            identities: folder names or labels (``0..K-1`` over the whole tree) to keep; None keeps
                all. Labels stay those of the whole tree, as `FaceSet` labels are global ids.
            extensions: image file suffixes (case-insensitive).
            cache_size: decoded images to keep (see the class docstring).

        Raises:
            FileNotFoundError: ``root`` is missing.
            ValueError: as `load_folder_tree` (no identity folder, empty identity folders, identities
                with too few files, all named), or an unknown identity (named). Unreadable files are
                only found when read (use `check_folder_tree` first).
        """
        minimum = _check_int("min_images_per_identity", min_images_per_identity, 1)
        tree = list_folder_tree(Path(root), extensions)
        label_of = {name: label for label, name in enumerate(tree)}
        chosen = _select_identities(tree, identities)
        empty = [name for name in chosen if not tree[name]]
        if empty:
            raise ValueError(
                f"{len(empty)} identity folder(s) under {root} contain no image file with an extension in "
                f"{tuple(extensions)}: {_name_list(empty)}"
            )
        too_few = [f"{name} ({len(tree[name])})" for name in chosen if len(tree[name]) < minimum]
        if too_few:
            raise ValueError(
                f"{len(too_few)} identity folder(s) under {root} have fewer than min_images_per_identity="
                f"{minimum} images (count in parentheses): {_name_list(too_few)}"
            )
        paths = [path for name in chosen for path in tree[name]]
        labels = [label_of[name] for name in chosen for _ in tree[name]]
        names = {label_of[name]: name for name in chosen}
        return cls(paths, labels, resolution, names=names, cache_size=cache_size)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def path(self, index: int) -> Path:
        """The file of item ``index``."""
        return Path(os.fsdecode(self._paths[self._index(index)]))

    @property
    def paths(self) -> list[Path]:
        """Every file, in item order (a new list)."""
        return [Path(os.fsdecode(p)) for p in self._paths]

    def _index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for a FolderFaceDataset of {n} images")
        return i % n

    def _image(self, i: int) -> torch.Tensor:
        """Decoded image ``i`` (the cached tensor itself: callers copy it)."""
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            self.cache_hits += 1
            return cached
        self.cache_misses += 1
        image = read_image(os.fsdecode(self._paths[i]), self.resolution)
        if self.cache_size > 0:
            self._cache[i] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image uint8 [3, R, R], label)`` of item ``index``, decoded now unless cached.

        Raises:
            IndexError: ``index`` out of range.
            ValueError: the file cannot be decoded (named).
        """
        i = self._index(index)
        return self._image(i).clone(), int(self.labels[i])

    def cached_indices(self) -> list[int]:
        """Items held decoded in this process's cache, least recently used first."""
        return list(self._cache)

    def to_faceset(self, indices: Sequence[int] | torch.Tensor | None = None, progress: bool = False) -> FaceSet:
        """Decode the items ``indices`` (default: all, in order) into a `FaceSet` (uint8 ``[n, 3, R, R]``).

        Only the chosen images are held in memory; ``names`` are those of the dataset.
        """
        rows = (
            list(range(len(self))) if indices is None else [self._index(i) for i in torch.as_tensor(indices).tolist()]
        )
        images = torch.empty((len(rows), 3, self.resolution, self.resolution), dtype=torch.uint8)
        for row, i in enumerate(tqdm(rows, desc="loading faces", unit="img", disable=not progress)):
            images[row] = self._image(i)
        labels = self.labels[torch.tensor(rows, dtype=torch.int64)]
        return FaceSet(images=images, labels=labels, groups=None, names=dict(self.names))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. for spawned DataLoader workers) without the cached images."""
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state
