"""`FolderFaceSource`: an identity-per-folder tree of face crops used exactly where the audit uses the
synthetic generator.

The synthetic generator renders image ``k`` of identity ``i`` for any ``(i, k)``
(``SyntheticFaces.make_set(ids, per_identity, start_index)``); a run's data spec records
``(identities, images_per_identity, start_index)`` for every client and for the test identities, and
ground truth, held-out images and attacks regenerate images from it. A folder holds a fixed, finite
set of images per identity, so `FolderFaceSource` gives every identity folder a stable integer id
and every identity's images a fixed seeded order, and :meth:`FolderFaceSource.render` returns the
images at positions ``start_index .. start_index + per_identity - 1`` of that order -- the same
contract, with a limit (:meth:`~FolderFaceSource.images_available`,
:meth:`~FolderFaceSource.max_index`) and a ``ValueError`` naming the identity beyond it.

* **Ids** are the labels of `load_folder_tree` / `FolderFaceDataset`: ``0..K-1`` in sorted
  folder-name order over *every* identity folder (also the excluded ones), ``names`` maps them back.
* **Checking** is `check_folder_tree`'s (every image decoded once when the source is opened):
  unreadable image files (not an image, truncated, empty) stop the source with a ``ValueError``
  naming them, or with ``skip_unreadable=True`` are left out of their identity and counted; files
  without an image extension are skipped and counted; grayscale / RGBA / palette images are
  converted to RGB by the one reader (`read_image`) and counted per mode; an identity folder that is
  a symlink loop is excluded with check.py's reason.
* **Exclusion** is never silent: identities with fewer than ``min_images_per_identity`` readable
  images (or none, or a link loop) are listed in ``excluded`` with the reason; ``max_identities``
  keeps a seeded subset of the rest and records which.
* **Image order**: an identity's readable files sorted by name, then permuted by a generator seeded
  with ``(seed, SHA-256 of the folder name)`` -- independent of the other folders.
* **Decoding** is `FolderFaceDataset`'s (`read_image`: RGB, PIL bilinear resize to a square
  ``resolution``; non-square crops are resized, not cropped).

:func:`split_folder_identities` makes disjoint public / client / test / distractor identity sets
(counts or fractions) with a JSON record, and :func:`folder_federated_data` builds the
`federated_core.scales.FederatedData` of a folder with a data spec whose ``"clients"`` / ``"test"``
entries have the synthetic spec's shape (``"source": "folder"``), training images first and
``heldout_per_identity`` more images of every client identity after them (`HeldOut`'s layout).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from federated_core.data.check import FolderCheck, _Scan, check_folder_tree
from federated_core.data.faceset import FaceSet
from federated_core.data.folders import (
    IMAGE_EXTENSIONS,
    _check_resolution,
    _name_list,
    _normalise_extensions,
    list_folder_tree,
    read_image,
)
from federated_core.data.lazy import FolderFaceDataset, _check_int
from federated_core.data.split import (
    partition_balanced,
    partition_lognormal,
    partition_one_identity,
    split_identities,
)

if TYPE_CHECKING:
    from federated_core.scales import FederatedData

__all__ = [
    "SOURCE_VERSION",
    "ExcludedIdentity",
    "FolderFaceSource",
    "FolderSplit",
    "SPLIT_PARTS",
    "split_folder_identities",
    "folder_federated_data",
]

#: Bumped whenever ids, image order or decoding change: part of every fingerprint.
SOURCE_VERSION = 1

#: The parts of :func:`split_folder_identities`, in the order identities are dealt to them.
SPLIT_PARTS = ("public", "clients", "test", "distractors")

_PARTITIONS = ("balanced", "lognormal", "one-identity")


@dataclass(frozen=True)
class ExcludedIdentity:
    """An identity folder the source does not use, and why."""

    identity: int
    name: str
    images: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """``{"identity", "name", "images", "reason"}``."""
        return {"identity": self.identity, "name": self.name, "images": self.images, "reason": self.reason}


def _order_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one identity's image order: ``(seed, 0, SHA-256 of its folder name)``."""
    key = int.from_bytes(hashlib.sha256(os.fsencode(name)).digest()[:8], "big")
    return np.random.default_rng([seed, 0, key])


def _ids_tensor(ids: Any) -> torch.Tensor:
    """A 1-d int64 CPU tensor of identity ids (a scalar becomes one id; an empty list is allowed)."""
    t = torch.as_tensor(ids)
    if t.numel() == 0 and t.dim() <= 1:
        return torch.zeros(0, dtype=torch.int64)
    t = t.reshape(1) if t.dim() == 0 else t
    if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"ids must be a 1-d sequence of integer identity ids, got {tuple(t.shape)} {t.dtype}")
    return t.to(device="cpu", dtype=torch.int64)


class FolderFaceSource:
    """An identity-per-folder tree as a face source with the synthetic generator's render contract.

    Attributes:
        root: the tree's folder (absolute).
        resolution: side length every image is resized to.
        min_images_per_identity / max_identities / seed / extensions / skip_unreadable: the settings.
        names: identity id -> folder name, for every identity folder (ids ``0..K-1`` in name order).
        identities: sorted LongTensor of the ids the source serves (eligible, then the
            ``max_identities`` subset).
        excluded: the identity folders not eligible, with the reason (`ExcludedIdentity`).
        eligible: how many identities were eligible before the ``max_identities`` subset.
        check: `check_folder_tree`'s findings on the tree.
        unreadable_skipped: relative paths of unreadable image files left out (``skip_unreadable``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        resolution: int,
        min_images_per_identity: int = 2,
        max_identities: int | None = None,
        seed: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        skip_unreadable: bool = False,
        cache_size: int = 0,
        progress: bool = False,
    ) -> None:
        """Index and check the tree (every image is decoded once, by `check_folder_tree`).

        Args:
            root: folder holding one sub-folder per identity.
            resolution: side length (pixels) of the rendered square images.
            min_images_per_identity: readable images an identity needs to be used (>= 1).
            max_identities: keep a seeded subset of at most this many eligible identities (>= 2);
                None keeps all.
            seed: seed of the image order and of the subset (int >= 0).
            extensions: image file suffixes (case-insensitive).
            skip_unreadable: leave unreadable image files out (counted) instead of refusing the tree.
            cache_size: decoded images `FolderFaceDataset` keeps between renders (0: none).
            progress: tqdm bar while checking.

        Raises:
            FileNotFoundError: ``root`` is missing.
            ValueError: a bad setting (named); no identity folder; unreadable image files (named)
                unless ``skip_unreadable``; fewer than two eligible identities.
        """
        _check_resolution(resolution)
        self.root = Path(root).absolute()
        self.resolution = int(resolution)
        self.min_images_per_identity = _check_int("min_images_per_identity", min_images_per_identity, 1)
        self.max_identities = None if max_identities is None else _check_int("max_identities", max_identities, 2)
        self.seed = _check_int("seed", seed, 0)
        self.extensions = _normalise_extensions(extensions)
        self.skip_unreadable = bool(skip_unreadable)
        self.check: FolderCheck = check_folder_tree(self.root, self.min_images_per_identity, extensions, progress)
        tree = list_folder_tree(self.root, extensions)
        self.names: dict[int, str] = dict(enumerate(tree))
        self._fingerprint = self._hash_tree(tree)
        self.unreadable_skipped = sorted(self._unreadable(tree))
        readable = self._readable(tree, set(self.unreadable_skipped))
        self.excluded = self._exclusions(readable)
        excluded_ids = {e.identity for e in self.excluded}
        eligible = [i for i in self.names if i not in excluded_ids]
        self.eligible = len(eligible)
        if self.eligible < 2:
            listed = _name_list([f"{e.name} ({e.reason})" for e in self.excluded])
            raise ValueError(
                f"{self.eligible} of the {len(tree)} identity folder(s) under {self.root} can be used (a federation "
                f"needs at least 2 identities with >= {self.min_images_per_identity} readable images); "
                f"excluded: {listed or 'none'}"
            )
        kept = self._subset(eligible)
        self.identities = torch.tensor(kept, dtype=torch.int64)
        self._order = {i: self._ordered(readable[self.names[i]], self.names[i]) for i in kept}
        self._offset: dict[int, int] = {}
        paths: list[Path] = []
        for i in kept:
            self._offset[i] = len(paths)
            paths += self._order[i]
        labels = [i for i in kept for _ in self._order[i]]
        names = {i: self.names[i] for i in kept}
        self._dataset = FolderFaceDataset(paths, labels, self.resolution, names=names, cache_size=cache_size)

    # ------------------------------------------------------------------ indexing

    def _hash_tree(self, tree: dict[str, list[Path]]) -> str:
        """SHA-256 over the settings, every identity folder name and every image file's relative path and size."""
        h = hashlib.sha256(f"privaudit folder source v{SOURCE_VERSION}\n".encode())
        h.update(repr(sorted(self.spec(with_root=False).items())).encode() + b"\n")
        for name, files in tree.items():
            h.update(b"D" + os.fsencode(name) + b"\0")
            for path in files:
                rel = path.relative_to(self.root).as_posix()
                h.update(b"F" + os.fsencode(rel) + b"\0" + str(path.stat().st_size).encode() + b"\n")
        return h.hexdigest()

    def _unreadable(self, tree: dict[str, list[Path]]) -> set[str]:
        """Relative paths of the unreadable image files (check.py's findings); refuse them unless skipping."""
        listing = self.check.unreadable
        if listing.count == 0:
            return set()
        if not self.skip_unreadable:
            raise ValueError(
                f"{listing.count} unreadable image file(s) under {self.root} (fix or remove them, or pass "
                "skip_unreadable=True to leave them out and count them):\n" + "\n".join(listing.lines())
            )
        if listing.more == 0:
            return {name for name, _ in listing.items}
        # check.py names only the first LISTED: find the rest with the same reader
        found = set()
        for files in tree.values():
            for path in files:
                try:
                    read_image(path)
                except ValueError:
                    found.add(path.relative_to(self.root).as_posix())
        return found

    def _readable(self, tree: dict[str, list[Path]], unreadable: set[str]) -> dict[str, list[Path]]:
        return {
            name: [p for p in files if p.relative_to(self.root).as_posix() not in unreadable]
            for name, files in tree.items()
        }

    def _exclusions(self, readable: dict[str, list[Path]]) -> list[ExcludedIdentity]:
        """Identity folders that are link loops, hold no readable image or fewer than the minimum."""
        scan = _Scan(self.root)
        out = []
        for identity, name in self.names.items():
            count = len(readable[name])
            link = scan.link_problem(self.root / name)
            if link is not None and link[0] == "loop":
                reason = f"identity folder is a {link[1]}"
            elif count == 0:
                reason = f"no readable image file with an extension in {self.extensions}"
            elif count < self.min_images_per_identity:
                reason = f"{count} readable image(s), fewer than min_images_per_identity={self.min_images_per_identity}"
            else:
                continue
            out.append(ExcludedIdentity(identity, name, count, reason))
        return out

    def _subset(self, eligible: list[int]) -> list[int]:
        if self.max_identities is None or self.max_identities >= len(eligible):
            return eligible
        rng = np.random.default_rng([self.seed, 1])
        chosen = rng.choice(len(eligible), size=self.max_identities, replace=False)
        return sorted(eligible[int(k)] for k in chosen)

    def _ordered(self, files: list[Path], name: str) -> list[Path]:
        perm = _order_rng(self.seed, name).permutation(len(files))
        return [files[int(k)] for k in perm]

    # ------------------------------------------------------------------ queries

    def spec(self, with_root: bool = True) -> dict[str, Any]:
        """The settings that reopen this source: ``FolderFaceSource(**source.spec())``."""
        out: dict[str, Any] = {"root": str(self.root)} if with_root else {}
        out.update(
            resolution=self.resolution,
            min_images_per_identity=self.min_images_per_identity,
            max_identities=self.max_identities,
            seed=self.seed,
            extensions=list(self.extensions),
            skip_unreadable=self.skip_unreadable,
        )
        return out

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the settings and of every image file's relative path and size: a cache key.

        A file added, removed, renamed or changed in size, a new identity folder or another setting
        changes it; a change that keeps a file's size does not (contents are not hashed).
        """
        return self._fingerprint

    def _identity(self, identity: int) -> int:
        """``identity`` as an int when the source serves it; else a ValueError saying why not."""
        i = int(identity)
        if i in self._order:
            return i
        if i not in self.names:
            raise ValueError(f"identity {i} is not an identity folder under {self.root} (ids 0..{len(self.names) - 1})")
        reason = next((e.reason for e in self.excluded if e.identity == i), None)
        if reason is None:
            reason = f"not in the seeded subset of max_identities={self.max_identities}"
        raise ValueError(f"identity {i} ({self.names[i]!r}) is not served by this source: {reason}")

    def images_available(self, identity: int) -> int:
        """How many images ``identity`` has: valid image indices are ``0 .. images_available - 1``.

        Raises:
            ValueError: the identity is unknown, excluded or outside the ``max_identities`` subset.
        """
        return len(self._order[self._identity(identity)])

    def max_index(self, identities: Any = None) -> int:
        """The exclusive bound of the image indices every one of ``identities`` (default: all the
        source serves) has: ``render(ids, per, start)`` works for every ``start + per <= max_index``."""
        ids = self.identities if identities is None else _ids_tensor(identities)
        if ids.numel() == 0:
            raise ValueError("identities must not be empty")
        return min(self.images_available(int(i)) for i in ids)

    def paths(self, identity: int) -> list[Path]:
        """The image files of ``identity`` in its fixed order (position ``k`` is image index ``k``)."""
        return list(self._order[self._identity(identity)])

    def data_spec(self) -> dict[str, Any]:
        """The data spec that reopens this source (`from_data_spec`) and renders any of its
        identities: ``"source": "folder"``, the root, fingerprint, resolution and settings. What a
        run folder's ``ground_truth/data_spec.json`` needs for `privaudit attack` to render faces
        (e.g. `privaudit.flower.wiretap`'s ``data_spec`` for an app trained on this tree); a
        federated run adds its clients, test set and split (`folder_federated_data`)."""
        return {
            "source": "folder",
            "root": str(self.root),
            "fingerprint": self.fingerprint(),
            "resolution": self.resolution,
            "folder": self.spec(),
            "render": "federated_core.data.folder_source.FolderFaceSource.from_data_spec(spec)"
            ".render(identities, images_per_identity, start_index)",
        }

    def identity_of(self, name: str) -> int:
        """The id of the identity folder ``name``."""
        for i, n in self.names.items():
            if n == name:
                return i
        raise ValueError(f"no identity folder named {name!r} under {self.root}")

    def render(self, ids: Any, per_identity: int, start_index: int = 0) -> FaceSet:
        """Images ``start_index .. start_index + per_identity - 1`` of every identity in ``ids``,
        identity-major, as a `FaceSet` (uint8 ``[n, 3, R, R]``, labels = ids, ``groups=None``,
        ``names`` of the rendered identities) -- `SyntheticFaces.make_set`'s contract.

        Raises:
            ValueError: bad ``per_identity`` (>= 1) or ``start_index`` (>= 0); an identity the
                source does not serve; an identity with fewer than ``start_index + per_identity``
                images (named with its folder, its count and what was asked); an unreadable file.
        """
        ids_t = _ids_tensor(ids)
        per = _check_int("per_identity", per_identity, 1)
        start = _check_int("start_index", start_index, 0)
        rows: list[int] = []
        for identity in ids_t.tolist():
            available = self.images_available(identity)
            if start + per > available:
                raise ValueError(
                    f"identity {identity} ({self.names[identity]!r}) has {available} image(s) under {self.root}; "
                    f"images {start}..{start + per - 1} were asked for (start_index={start}, per_identity={per}): "
                    f"it needs {start + per}"
                )
            rows += range(self._offset[identity] + start, self._offset[identity] + start + per)
        faces = self._dataset.to_faceset(rows)
        names = {i: self.names[i] for i in set(ids_t.tolist())}
        return FaceSet(images=faces.images, labels=faces.labels, groups=None, names=names)

    def make_set(self, ids: Any, per_identity: int, start_index: int = 0) -> FaceSet:
        """`render` under the synthetic generator's name (`SyntheticFaces.make_set`), so code that
        renders from a generator (φ0's pre-training, evaluators) renders from a folder unchanged."""
        return self.render(ids, per_identity, start_index)

    def record(self) -> dict[str, Any]:
        """JSON-ready account of the source for results.json: settings, fingerprint, counts, every
        excluded identity with its reason, the subset, conversions and skipped / unreadable files."""
        check = self.check
        subset = None
        if self.max_identities is not None:
            subset = {
                "max_identities": self.max_identities,
                "eligible": self.eligible,
                "kept": int(self.identities.numel()),
                "dropped": self.eligible - int(self.identities.numel()),
                "kept_identities": self.identities.tolist(),
            }
        return {
            **self.spec(),
            "source_version": SOURCE_VERSION,
            "fingerprint": self.fingerprint(),
            "identity_folders": len(self.names),
            "eligible_identities": self.eligible,
            "identities": int(self.identities.numel()),
            "images": sum(len(v) for v in self._order.values()),
            "excluded": [e.to_dict() for e in self.excluded],
            "subset": subset,
            "converted_to_rgb": {mode: n for mode, n in check.modes.items() if mode != "RGB"},
            "distinct_sizes": check.distinct_sizes,
            "unreadable_skipped": list(self.unreadable_skipped),
            "unreadable": check.unreadable.to_dict(),
            "skipped": check.skipped.to_dict(),
            "links": check.links.to_dict(),
            "duplicates": {"groups": check.duplicate_groups, "files": check.duplicate_files},
        }

    @classmethod
    def from_data_spec(cls, data_spec: Mapping[str, Any], **kwargs: Any) -> FolderFaceSource:
        """Reopen the source a `folder_federated_data` spec was built from; ``kwargs`` (``cache_size``,
        ``progress``) are passed on.

        Raises:
            ValueError: the spec is not a folder spec, or the folder's fingerprint changed since.
        """
        if data_spec.get("source") != "folder":
            raise ValueError(f"data_spec['source'] must be 'folder', got {data_spec.get('source')!r}")
        if kwargs:
            source = cls(**data_spec["folder"], **kwargs)
        else:
            source = open_source(data_spec["folder"])
        if source.fingerprint() != data_spec["fingerprint"]:
            raise ValueError(
                f"the folder {source.root} changed since the data spec was written: fingerprint "
                f"{data_spec['fingerprint']} recorded, {source.fingerprint()} now"
            )
        return source


# ---------------------------------------------------------------------- opened once per process

#: Opened sources by their settings (`FolderFaceSource.spec`): ``(tree signature, source)``; a few at most.
_OPENED: dict[str, tuple[str, FolderFaceSource]] = {}
_MAX_OPENED = 2


def tree_signature(
    root: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS, mtimes: bool = True
) -> str:
    """SHA-256 of every identity folder's image files: relative path, size and (``mtimes``)
    modification time; a directory walk and a ``stat`` per file, no image is read."""
    h = hashlib.sha256()
    root = Path(root)
    for name, files in list_folder_tree(root, extensions).items():
        h.update(b"D" + os.fsencode(name) + b"\0")
        for path in files:
            st = path.stat()
            stamp = f"\0{st.st_mtime_ns}" if mtimes else ""
            h.update(os.fsencode(path.relative_to(root).as_posix()) + f"\0{st.st_size}{stamp}\n".encode())
    return h.hexdigest()


def _settings_key(settings: Mapping[str, Any]) -> str:
    import json

    return json.dumps(dict(settings), sort_keys=True, default=list)


def remember(source: FolderFaceSource) -> FolderFaceSource:
    """Keep ``source`` for `open_source` (opening checks, i.e. decodes, every image once)."""
    key = _settings_key(source.spec())
    _OPENED.pop(key, None)
    while len(_OPENED) >= _MAX_OPENED:
        _OPENED.pop(next(iter(_OPENED)))
    _OPENED[key] = (tree_signature(source.root, source.extensions), source)
    return source


def open_source(settings: Mapping[str, Any]) -> FolderFaceSource:
    """``FolderFaceSource(**settings)``, opened once per process: the φ0 pre-training, the held-out
    images and the attacks of an audit reuse the source its data stage opened, while the tree's
    `tree_signature` (paths, sizes, modification times) is the one it had then; otherwise the
    folder is opened (and checked) again."""
    cached = _OPENED.get(_settings_key(settings))
    extensions = settings.get("extensions") or IMAGE_EXTENSIONS
    if cached is not None and cached[0] == tree_signature(settings["root"], extensions):
        return cached[1]
    return remember(FolderFaceSource(**settings))


# ---------------------------------------------------------------------- identity split


@dataclass
class FolderSplit:
    """Disjoint identity sets of a folder: ``parts[name]`` (sorted LongTensors, also ``split[name]``)
    and the JSON-ready ``record``."""

    parts: dict[str, torch.Tensor]
    record: dict[str, Any]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.parts[name]


def _part_count(name: str, value: Any, pool: int) -> tuple[int, float | None]:
    """``(count, fraction or None)`` of one part: an int >= 0, or a fraction in (0, 1) of ``pool``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be an int >= 0 or a fraction in (0, 1), got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"{name} must be an int >= 0 or a fraction in (0, 1), got {value!r}")
        return int(value), None
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be an int >= 0 or a fraction in (0, 1), got {value!r}")
    count = int(np.floor(float(value) * pool + 0.5))
    if count < 1:
        raise ValueError(f"{name}={value} of the {pool} eligible identities rounds to 0 identities; ask for more")
    return count, float(value)


def split_folder_identities(
    source: FolderFaceSource,
    public: int | float,
    clients: int | float,
    test: int | float,
    distractors: int | float = 0,
    seed: int = 0,
) -> FolderSplit:
    """Split the identities ``source`` serves into disjoint public / clients / test / distractors
    sets at random (`split_identities`); identities not asked for are left unused.

    Each count is an int >= 0 or a fraction in (0, 1) of ``source``'s identities (rounded half up,
    at least 1).

    Raises:
        ValueError: a bad count (named), or counts that exceed the identities the folder holds (the
            first part that does not fit is named, with what is left for it).
    """
    pool = int(source.identities.numel())
    asked = {"public": public, "clients": clients, "test": test, "distractors": distractors}
    counts: dict[str, int] = {}
    fractions: dict[str, float | None] = {}
    used = 0
    for name in SPLIT_PARTS:
        counts[name], fractions[name] = _part_count(name, asked[name], pool)
        if used + counts[name] > pool:
            before = ", ".join(f"{k}={counts[k]}" for k in SPLIT_PARTS[: SPLIT_PARTS.index(name)])
            raise ValueError(
                f"{name}={asked[name]} asks for {counts[name]} identities but the folder {source.root} holds "
                f"{pool} eligible identities and {pool - used} are left{' after ' + before if before else ''}"
            )
        used += counts[name]
    parts = split_identities(source.identities, counts, seed)
    record = {
        "seed": seed,
        "root": str(source.root),
        "fingerprint": source.fingerprint(),
        "eligible_identities": pool,
        "unused_identities": pool - used,
        "asked": {k: (int(v) if fractions[k] is None else float(v)) for k, v in asked.items()},
        "fractions": fractions,
        "counts": counts,
        "identities": {k: v.tolist() for k, v in parts.items()},
        "excluded": [e.to_dict() for e in source.excluded],
        "subset": source.record()["subset"],
    }
    return FolderSplit(parts, record)


# ---------------------------------------------------------------------- federated data


def _partition(clients: torch.Tensor, num_clients: int, partition: str, seed: int, sigma: float) -> list[torch.Tensor]:
    """`federated_core.data.split`'s partition ``partition`` of the client identities."""
    if partition == "balanced":
        return partition_balanced(clients, num_clients, seed)
    if partition == "lognormal":
        return partition_lognormal(clients, num_clients, seed, sigma=sigma)
    if partition == "one-identity":
        if num_clients != clients.numel():
            raise ValueError(
                f"partition 'one-identity' gives one client per identity: num_clients must be {clients.numel()} "
                f"(the client identities), got {num_clients}"
            )
        return partition_one_identity(clients)
    raise ValueError(f"partition must be one of {_PARTITIONS}, got {partition!r}")


def _require_images(source: FolderFaceSource, ids: torch.Tensor, needed: int, what: str) -> None:
    """Refuse (naming the first identities) when an identity of ``ids`` has fewer than ``needed`` images."""
    short = [(i, source.images_available(i)) for i in ids.tolist() if source.images_available(i) < needed]
    if short:
        listed = _name_list([f"identity {i} ({source.names[i]!r}: {n} images)" for i, n in short])
        raise ValueError(
            f"{len(short)} {what} identit{'y has' if len(short) == 1 else 'ies have'} fewer than "
            f"the {needed} images needed: {listed}"
        )


def folder_federated_data(
    source: FolderFaceSource,
    split: FolderSplit | Mapping[str, torch.Tensor],
    num_clients: int,
    partition: str,
    images_per_identity: int,
    test_images_per_identity: int,
    heldout_per_identity: int,
    seed: int,
    lognormal_sigma: float = 1.0,
) -> FederatedData:
    """The clients' training data and the test identities of a folder, as `build_federated_data`
    builds them from the synthetic generator.

    Client identities (``split["clients"]``, partitioned by ``partition``: ``"balanced"``,
    ``"lognormal"`` (``ln X ~ N(0, lognormal_sigma²)``) or ``"one-identity"``) train on image indices
    ``0 .. images_per_identity - 1``; indices ``images_per_identity .. + heldout_per_identity - 1``
    stay unseen for the personalised protocols (`HeldOut`). Test identities use indices
    ``0 .. test_images_per_identity - 1``. The data spec records ``"source": "folder"``, the root,
    fingerprint, resolution, the source's settings (``"folder"``, for `FolderFaceSource.from_data_spec`),
    the split record and the synthetic spec's ``"clients"`` / ``"test"`` entries.

    Raises:
        ValueError: bad sizes (named); a split of another folder; overlapping client / test ids; a
            client identity without ``images_per_identity + heldout_per_identity`` images or a test
            identity without ``test_images_per_identity`` images (named).
    """
    from federated_core.engine.messages import client_party
    from federated_core.engine.state import ClientData
    from federated_core.scales import FederatedData

    per = _check_int("images_per_identity", images_per_identity, 1)
    test_per = _check_int("test_images_per_identity", test_images_per_identity, 2)
    heldout = _check_int("heldout_per_identity", heldout_per_identity, 0)
    record = split.record if isinstance(split, FolderSplit) else None
    if record is not None and record["fingerprint"] != source.fingerprint():
        raise ValueError("split was made on another folder or settings (its fingerprint differs from the source's)")
    clients, test = _ids_tensor(split["clients"]), _ids_tensor(split["test"])
    if test.numel() < 2:
        raise ValueError(f"split['test'] must hold at least 2 identities, got {test.numel()}")
    overlap = sorted(set(clients.tolist()) & set(test.tolist()))
    if overlap:
        raise ValueError(f"client and test identities must be disjoint; both hold {overlap[:20]}")
    _require_images(source, clients, per + heldout, "client")
    _require_images(source, test, test_per, "test")
    parts = _partition(clients, _check_int("num_clients", num_clients, 1), partition, seed, lognormal_sigma)
    data, spec_clients = [], {}
    for cid, ids in enumerate(parts):
        data.append(ClientData.from_faces(source.render(ids, per, 0)))
        spec_clients[client_party(cid)] = {"identities": ids.tolist(), "images_per_identity": per, "start_index": 0}
    data_spec = {
        **source.data_spec(),
        "clients": spec_clients,
        "test": {"identities": test.tolist(), "images_per_identity": test_per, "start_index": 0},
        "heldout": {"per_identity": heldout, "start_index": per},
        "partition": {"name": partition, "num_clients": len(parts), "lognormal_sigma": lognormal_sigma},
        "split": record,
        "seed": seed,
    }
    return FederatedData(data, source.render(test, test_per, 0), data_spec)
