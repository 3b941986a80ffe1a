"""Check an identity-per-folder tree of face images before an audit reads it.

:func:`check_folder_tree` looks at the tree exactly as :func:`federated_core.data.folders.load_folder_tree`
would (the identities and image files come from :func:`~federated_core.data.folders.list_folder_tree`,
every image is decoded by :func:`~federated_core.data.folders.decode_image`), one file at a time, so a
tree of millions of images is checked in bounded memory (the decoded image, plus one SHA-256 digest
and relative path per file for the duplicate search). It never raises for a bad file: every file it
does not count as a readable image is listed with the reason (the first :data:`LISTED` of each kind
and a count of the rest).

What is reported (:class:`FolderCheck`): identities and readable images; a histogram of readable
images per identity over fixed bins (:data:`HISTOGRAM_BINS`) with min / median / max; image sizes
(top 10) and PIL modes and formats; unreadable image files (not an image, truncated, corrupt, empty)
named with the reason; skipped files (not an image extension, folders inside identity folders,
files in the root, hidden folders) named; duplicate files by content SHA-256; identities with fewer
than ``min_images_per_identity`` readable images; symlink loops, broken symlinks and symlinks
leaving the root. Links are never followed more than the loader does (identity folders and the
files directly inside them); folders inside identity folders are never entered, so a link loop
cannot make the check run forever.

:meth:`FolderCheck.problems` lists what makes the tree unusable for an audit (an empty list means
it can be audited): no readable image, fewer than two identities, unreadable image files (the loader
would stop on them), identities below the minimum.
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from federated_core.data.folders import IMAGE_EXTENSIONS, decode_image, list_folder_tree

__all__ = ["FolderCheck", "Listing", "check_folder_tree", "HISTOGRAM_BINS", "LISTED"]

#: How many entries of each list (unreadable, skipped, links, identities below the minimum,
#: duplicate groups) are named; the rest are counted.
LISTED = 50

#: Bins of the images-per-identity histogram: (label, lowest count, highest count).
HISTOGRAM_BINS: tuple[tuple[str, int, float], ...] = (
    ("0", 0, 0),
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-5", 3, 5),
    ("6-10", 6, 10),
    ("11-50", 11, 50),
    (">50", 51, float("inf")),
)

_TOP_SIZES = 10
_PATHS_PER_DUPLICATE_GROUP = 20


@dataclass
class Listing:
    """A counted list of ``(name, reason)`` pairs of which only the first ``limit`` are kept."""

    count: int = 0
    items: list[tuple[str, str]] = field(default_factory=list)
    limit: int = LISTED

    def add(self, name: str, reason: str) -> None:
        """Count one entry; keep its name and reason while fewer than ``limit`` are kept."""
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append((name, reason))

    @property
    def more(self) -> int:
        """Entries counted but not kept."""
        return self.count - len(self.items)

    def to_dict(self) -> dict[str, Any]:
        """``{"count", "listed": [{"path", "reason"}], "more"}``."""
        return {
            "count": self.count,
            "listed": [{"path": name, "reason": reason} for name, reason in self.items],
            "more": self.more,
        }

    def lines(self, indent: str = "  ") -> list[str]:
        """One line per kept entry, plus one counting the rest."""
        out = [f"{indent}{name}: {reason}" for name, reason in self.items]
        if self.more:
            out.append(f"{indent}... and {self.more} more")
        return out


@dataclass
class FolderCheck:
    """What :func:`check_folder_tree` found; ``to_dict()`` is JSON-ready, ``text()`` is for people.

    Attributes:
        root: the checked folder, as given.
        min_images_per_identity: the minimum readable images an identity needs.
        identities: identity folders (what the loader would label ``0..K-1``).
        usable_identities: identities with at least ``min_images_per_identity`` readable images.
        images: readable image files.
        image_files: files with an image extension (readable + unreadable).
        per_identity_min / per_identity_median / per_identity_max: readable images per identity.
        histogram: identities per bin of readable-image count (:data:`HISTOGRAM_BINS`).
        sizes: the most common ``(width, height, count)`` of readable images (top 10).
        distinct_sizes: how many different sizes there are.
        modes / formats: readable images per PIL mode (RGB, L, RGBA, P, ...) / format (JPEG, PNG, ...).
        unreadable: image files that cannot be decoded, with the reason.
        skipped: files and folders the loader does not read, with the reason.
        links: symlink loops, broken symlinks and symlinks leaving the root.
        duplicate_groups / duplicate_files: groups of readable files with the same SHA-256, and
            the files in them; ``duplicates`` lists the first groups (paths, identities involved).
        below_minimum: ``(identity, readable images)`` of the first identities under the minimum;
            ``below_minimum_count`` counts them all.
        elapsed_s: wall time of the check.
    """

    root: str
    min_images_per_identity: int
    identities: int
    usable_identities: int
    images: int
    image_files: int
    per_identity_min: int
    per_identity_median: float
    per_identity_max: int
    histogram: dict[str, int]
    sizes: list[tuple[int, int, int]]
    distinct_sizes: int
    modes: dict[str, int]
    formats: dict[str, int]
    unreadable: Listing
    skipped: Listing
    links: Listing
    duplicate_groups: int
    duplicate_files: int
    duplicates: list[dict[str, Any]]
    below_minimum: list[tuple[str, int]]
    below_minimum_count: int
    elapsed_s: float

    def problems(self) -> list[str]:
        """Why the tree cannot be audited, one line each (naming the file or identity); empty when it can."""
        out: list[str] = []
        if self.images == 0:
            out.append(f"no identity folder with a readable image under {self.root}")
        if self.identities < 2:
            out.append(f"{self.identities} identity: a federation needs at least 2 (under {self.root})")
        elif self.usable_identities < 2:
            out.append(
                f"{self.usable_identities} of {self.identities} identities have at least "
                f"{self.min_images_per_identity} readable images: a federation needs at least 2"
            )
        out += [f"unreadable image file {path}: {reason}" for path, reason in self.unreadable.items]
        if self.unreadable.more:
            out.append(f"... and {self.unreadable.more} more unreadable image files")
        out += [
            f"identity {name}: {count} readable image{'' if count == 1 else 's'}, fewer than "
            f"min_images_per_identity={self.min_images_per_identity}"
            for name, count in self.below_minimum
        ]
        if self.below_minimum_count > len(self.below_minimum):
            out.append(
                f"... and {self.below_minimum_count - len(self.below_minimum)} more identities with fewer than "
                f"{self.min_images_per_identity} readable images"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON types, plus ``problems``."""
        return {
            "root": self.root,
            "min_images_per_identity": self.min_images_per_identity,
            "identities": self.identities,
            "usable_identities": self.usable_identities,
            "images": self.images,
            "image_files": self.image_files,
            "images_per_identity": {
                "min": self.per_identity_min,
                "median": self.per_identity_median,
                "max": self.per_identity_max,
                "histogram": dict(self.histogram),
            },
            "sizes": [{"width": w, "height": h, "count": c} for w, h, c in self.sizes],
            "distinct_sizes": self.distinct_sizes,
            "modes": dict(self.modes),
            "formats": dict(self.formats),
            "unreadable": self.unreadable.to_dict(),
            "skipped": self.skipped.to_dict(),
            "links": self.links.to_dict(),
            "duplicates": {
                "groups": self.duplicate_groups,
                "files": self.duplicate_files,
                "listed": [dict(group) for group in self.duplicates],
                "more": self.duplicate_groups - len(self.duplicates),
            },
            "below_minimum": {
                "count": self.below_minimum_count,
                "listed": [{"identity": name, "images": count} for name, count in self.below_minimum],
                "more": self.below_minimum_count - len(self.below_minimum),
            },
            "elapsed_s": self.elapsed_s,
            "problems": self.problems(),
        }

    def text(self) -> str:
        """A plain-text summary (what ``privaudit data check`` prints)."""
        lines = [
            f"folder tree: {self.root}",
            f"identities: {self.identities} ({self.usable_identities} with >= {self.min_images_per_identity} "
            f"readable images)",
            f"images: {self.images} readable of {self.image_files} image files; checked in {self.elapsed_s:.1f} s",
            f"images per identity: min {self.per_identity_min}, median {self.per_identity_median:g}, "
            f"max {self.per_identity_max}",
            "  identities by image count: " + ", ".join(f"[{k}] {v}" for k, v in self.histogram.items()),
            f"image sizes ({self.distinct_sizes} distinct): "
            + (", ".join(f"{w}x{h}: {c}" for w, h, c in self.sizes) or "none"),
            "modes: " + (", ".join(f"{k}: {v}" for k, v in self.modes.items()) or "none"),
            "formats: " + (", ".join(f"{k}: {v}" for k, v in self.formats.items()) or "none"),
        ]
        for title, listing in (
            ("unreadable image files", self.unreadable),
            ("skipped (not read by the loader)", self.skipped),
            ("symlinks", self.links),
        ):
            lines.append(f"{title}: {listing.count}")
            lines += listing.lines()
        lines.append(f"duplicate files (same SHA-256): {self.duplicate_files} in {self.duplicate_groups} group(s)")
        for group in self.duplicates:
            more = group["count"] - len(group["paths"])
            shown = " = ".join(group["paths"]) + (f" (+{more} more)" if more else "")
            lines.append(f"  {shown}" + ("  [different identities]" if group["cross_identity"] else ""))
        if self.duplicate_groups > len(self.duplicates):
            lines.append(f"  ... and {self.duplicate_groups - len(self.duplicates)} more groups")
        lines.append(
            f"identities with fewer than {self.min_images_per_identity} readable images: {self.below_minimum_count}"
        )
        lines += [f"  {name}: {count}" for name, count in self.below_minimum]
        if self.below_minimum_count > len(self.below_minimum):
            lines.append(f"  ... and {self.below_minimum_count - len(self.below_minimum)} more")
        problems = self.problems()
        lines.append(f"problems: {len(problems)}" + ("" if problems else " (the tree can be audited)"))
        lines += [f"  {p}" for p in problems]
        return "\n".join(lines)


def _within(path: str, folder: str) -> bool:
    return Path(path).is_relative_to(folder)


def _unreadable_reason(err: ValueError) -> str:
    """Short reason for a ``decode_image`` failure, from the PIL error it wraps."""
    cause = err.__cause__
    if isinstance(cause, UnidentifiedImageError):
        return "not an image (PIL cannot identify the file's format)"
    if isinstance(cause, Image.DecompressionBombError):
        return f"too large to decode: {cause}"
    if cause is not None and "truncated" in str(cause).lower():
        return f"truncated: {cause}"
    if cause is not None:
        return f"corrupt: {type(cause).__name__}: {cause}"
    return f"corrupt: {err}"


class _Scan:
    """Accumulators of one check; each method looks at one entry of the tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_real = os.path.realpath(root)
        self.unreadable = Listing()
        self.skipped = Listing()
        self.links = Listing()
        self.sizes: Counter[tuple[int, int]] = Counter()
        self.modes: Counter[str] = Counter()
        self.formats: Counter[str] = Counter()
        self.image_files = 0
        self.first_path: dict[bytes, str] = {}  # SHA-256 -> first readable file with it
        self.groups: dict[bytes, list[str]] = {}  # SHA-256 -> every file with it, for duplicated ones
        self.per_identity: dict[str, int] = {}

    def link_problem(self, path: Path) -> tuple[str, str] | None:
        """``(kind, reason)`` when ``path`` is a symlink to report (kind: loop, broken, outside); else None."""
        if not path.is_symlink():
            return None
        target = os.readlink(path)
        if not os.path.exists(path):
            return "broken", f"broken or circular symlink -> {target}"
        real = os.path.realpath(path)
        if os.path.isdir(real) and _within(os.path.realpath(path.parent), real):
            return "loop", f"symlink loop -> {target}: points to its own folder or an ancestor"
        if not _within(real, self.root_real):
            return "outside", f"symlink leaving the root -> {target} ({real})"
        return None

    def root_entries(self, tree: dict[str, list[Path]]) -> set[str]:
        """Report root-level links and what the loader skips there; the identities that are link loops."""
        loops: set[str] = set()
        with os.scandir(self.root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            link = self.link_problem(Path(entry.path))
            if link is not None:
                followed = "read as an identity folder (its sub-folders are not)" if entry.name in tree else "not read"
                self.links.add(entry.name, f"{link[1]}; {followed}")
                if link[0] == "loop":
                    loops.add(entry.name)
            if entry.name in tree or link is not None:
                continue
            if entry.is_dir():
                self.skipped.add(entry.name + "/", "hidden folder: not an identity")
            else:
                self.skipped.add(entry.name, "file in the root folder, not in an identity folder: not read")
        return loops

    def identity_entries(self, name: str, files: list[Path]) -> None:
        """Report links and skipped entries (other extensions, nested folders) of one identity folder."""
        read = {path.name for path in files}
        with os.scandir(self.root / name) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{name}/{entry.name}"
            link = self.link_problem(Path(entry.path))
            if link is not None:
                self.links.add(rel, f"{link[1]}; {'read as an image' if entry.name in read else 'not followed'}")
            if entry.name in read or link is not None:
                continue
            if entry.is_dir():
                self.skipped.add(rel + "/", "folder inside an identity folder: not read")
            elif entry.is_file():
                suffix = Path(entry.name).suffix or "no extension"
                self.skipped.add(rel, f"skipped: not an image extension ({suffix})")
            else:
                self.skipped.add(rel, "not a regular file: not read")

    def image(self, path: Path) -> bool:
        """Read, hash and decode one image file; count it or list why it is unreadable."""
        rel = path.relative_to(self.root).as_posix()
        self.image_files += 1
        try:
            data = path.read_bytes()
        except OSError as err:
            self.unreadable.add(rel, f"cannot open: {err.strerror or err}")
            return False
        if not data:
            self.unreadable.add(rel, "empty file (0 bytes)")
            return False
        try:
            decoded = decode_image(data, None, what=rel)
        except ValueError as err:
            self.unreadable.add(rel, _unreadable_reason(err))
            return False
        with Image.open(io.BytesIO(data)) as header:
            self.modes[header.mode] += 1
            self.formats[header.format or "unknown"] += 1
        self.sizes[(int(decoded.shape[2]), int(decoded.shape[1]))] += 1
        digest = hashlib.sha256(data).digest()
        first = self.first_path.setdefault(digest, rel)
        if first != rel:
            self.groups.setdefault(digest, [first]).append(rel)
        return True

    def duplicates(self) -> tuple[list[dict[str, Any]], int]:
        """The first :data:`LISTED` duplicate groups (largest first) and the files in all groups."""
        groups = sorted(self.groups.values(), key=lambda paths: (-len(paths), paths[0]))
        listed = [
            {
                "count": len(paths),
                "paths": paths[:_PATHS_PER_DUPLICATE_GROUP],
                "cross_identity": len({p.split("/", 1)[0] for p in paths}) > 1,
            }
            for paths in groups[:LISTED]
        ]
        return listed, sum(len(paths) for paths in groups)


def _histogram(counts: Sequence[int]) -> dict[str, int]:
    return {label: sum(1 for c in counts if low <= c <= high) for label, low, high in HISTOGRAM_BINS}


def check_folder_tree(
    root: str | os.PathLike[str],
    min_images_per_identity: int = 2,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    progress: bool = False,
) -> FolderCheck:
    """Check an identity-per-folder tree of face images, one file at a time (see the module docstring).

    Args:
        root: folder holding one sub-folder per identity (the layout of `load_folder_tree`).
        min_images_per_identity: readable images an identity needs (>= 1); fewer is a problem.
        extensions: image file suffixes (case-insensitive), as for `load_folder_tree`.
        progress: show a tqdm bar over identities.

    Returns:
        A :class:`FolderCheck`; bad files are listed in it, never raised.

    Raises:
        FileNotFoundError: ``root`` does not exist (named).
        ValueError: ``root`` is a file, holds no identity folder, or a folder of it cannot be listed
            (named); ``min_images_per_identity`` is not an int >= 1; ``extensions`` is malformed.
    """
    start = time.perf_counter()
    if (
        isinstance(min_images_per_identity, bool)
        or not isinstance(min_images_per_identity, (int, np.integer))
        or min_images_per_identity < 1
    ):
        raise ValueError(f"min_images_per_identity must be an int >= 1, got {min_images_per_identity!r}")
    root = Path(root)
    scan = _Scan(root)
    try:
        tree = list_folder_tree(root, extensions)
        loops = scan.root_entries(tree)
        for name, files in tqdm(tree.items(), desc="checking faces", unit="identity", disable=not progress):
            if name not in loops:  # a looping identity link would list the root again: its files are still read
                scan.identity_entries(name, files)
            scan.per_identity[name] = sum(scan.image(path) for path in files)
    except PermissionError as err:
        raise ValueError(
            f"cannot list the folder {err.filename} of the identity tree {root}: permission denied"
        ) from err
    return _result(scan, int(min_images_per_identity), time.perf_counter() - start)


def _result(scan: _Scan, minimum: int, elapsed: float) -> FolderCheck:
    counts = list(scan.per_identity.values())
    below = [(name, n) for name, n in scan.per_identity.items() if n < minimum]
    duplicates, duplicate_files = scan.duplicates()
    return FolderCheck(
        root=str(scan.root),
        min_images_per_identity=minimum,
        identities=len(counts),
        usable_identities=len(counts) - len(below),
        images=sum(counts),
        image_files=scan.image_files,
        per_identity_min=min(counts),
        per_identity_median=float(statistics.median(counts)),
        per_identity_max=max(counts),
        histogram=_histogram(counts),
        sizes=[(w, h, c) for (w, h), c in scan.sizes.most_common(_TOP_SIZES)],
        distinct_sizes=len(scan.sizes),
        modes=dict(scan.modes.most_common()),
        formats=dict(scan.formats.most_common()),
        unreadable=scan.unreadable,
        skipped=scan.skipped,
        links=scan.links,
        duplicate_groups=len(scan.groups),
        duplicate_files=duplicate_files,
        duplicates=duplicates,
        below_minimum=below[:LISTED],
        below_minimum_count=len(below),
        elapsed_s=round(elapsed, 3),
    )
