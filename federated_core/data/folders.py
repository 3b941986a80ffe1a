"""Identity-per-folder trees of aligned face crops -> `FaceSet`.

The layout every public face dataset can be brought into (CASIA-WebFace, MS1M, VGGFace2, LFW,
BUPT-Balancedface after extraction, or the output of :func:`federated_core.data.align.align_folder_tree`)::

    root/
        identity_a/  0001.jpg  0002.png ...
        identity_b/  ...

Labels are ``0..K-1`` in sorted folder-name order and ``names`` maps each label to its folder
name. Every problem with the tree (missing root, no identity folder, empty identity folders,
unreadable files, too few images, mixed sizes without a ``resolution``) is a ``ValueError`` (or
``FileNotFoundError`` for a missing root) that names what is wrong, so a user can fix their data.

:func:`read_image` is the one decoder of image files and image bytes used by the loaders here
(also by `pairs.py` and `align.py`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from federated_core.data.faceset import FaceSet

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "read_image", "load_folder_tree", "list_folder_tree"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")

# Errors PIL raises for files that are not images, are truncated or are absurdly large.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _check_resolution(resolution: int | None) -> None:
    if resolution is None:
        return
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive int (pixels per side) or None, got {resolution!r}")


def _pil_to_uint8(image: Image.Image, resolution: int | None) -> torch.Tensor:
    """RGB-convert, optionally resize to ``resolution x resolution``, return uint8 ``[3, H, W]``."""
    rgb = image.convert("RGB")
    if resolution is not None and rgb.size != (resolution, resolution):
        rgb = rgb.resize((int(resolution), int(resolution)), Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | Path, resolution: int | None = None) -> torch.Tensor:
    """Read one image file as uint8 ``[3, H, W]`` RGB, resized with PIL (bilinear) when
    ``resolution`` is given (non-square images are resized to a square, not cropped).

    Raises:
        ValueError: the file cannot be decoded (the message names the file).
    """
    _check_resolution(resolution)
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_uint8(image, resolution)
    except FileNotFoundError:
        raise
    except _DECODE_ERRORS as err:
        raise ValueError(f"cannot read image file {path}: {type(err).__name__}: {err}") from err


def decode_image(data: bytes, resolution: int | None = None, what: str = "image bytes") -> torch.Tensor:
    """Decode encoded image bytes (JPEG/PNG/...) as uint8 ``[3, H, W]`` RGB; see :func:`read_image`.

    ``what`` names the source in the error message (e.g. ``"image 7 of lfw.bin"``).
    """
    _check_resolution(resolution)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _pil_to_uint8(image, resolution)
    except _DECODE_ERRORS as err:
        raise ValueError(f"cannot decode {what}: {type(err).__name__}: {err}") from err


def _normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str) or len(extensions) == 0:
        raise ValueError(
            f"extensions must be a non-empty sequence of suffixes like ('.png', '.jpg'), got {extensions!r}"
        )
    out = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.startswith(".") or len(ext) < 2:
            raise ValueError(f"extensions must be suffixes starting with '.', like '.png'; got {ext!r}")
        out.append(ext.lower())
    return tuple(out)


def list_folder_tree(root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> dict[str, list[Path]]:
    """Identity folder name -> sorted image files, for every identity folder under ``root``.

    Identity folders are the sub-directories of ``root`` (hidden ones, starting with ``.``, are
    skipped; plain files in ``root`` are ignored). Images are the files whose suffix is in
    ``extensions`` (case-insensitive); other files and nested folders are ignored. Folders with
    no image are kept with an empty list (the caller decides whether that is an error).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not a directory or holds no identity folder.
    """
    exts = _normalise_extensions(extensions)
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"root folder of the identity tree does not exist: {root}")
    if not root.is_dir():
        raise ValueError(f"root must be a directory of identity folders, got a file: {root}")
    identity_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )
    if not identity_dirs:
        raise ValueError(f"no identity folders under {root}: expected one sub-folder per identity holding its images")
    return {
        d.name: sorted((f for f in d.iterdir() if f.is_file() and f.suffix.lower() in exts), key=lambda p: p.name)
        for d in identity_dirs
    }


def _name_list(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_folder_tree(
    root: str | Path,
    resolution: int | None = None,
    min_images_per_identity: int = 1,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    progress: bool = False,
) -> FaceSet:
    """Load an identity-per-folder tree of (already aligned) face crops as a `FaceSet`.

    Args:
        root: folder holding one sub-folder per identity (see :func:`list_folder_tree`).
        resolution: side length to resize every image to (PIL bilinear). ``None`` keeps the
            files' own size, which must then be square and the same for every file.
        min_images_per_identity: every identity must have at least this many images (>= 1).
        extensions: image file suffixes to read (case-insensitive).
        progress: show a tqdm bar over files.

    Returns:
        ``FaceSet`` with uint8 images ``[N, 3, R, R]`` (RGB), labels ``0..K-1`` in sorted
        folder-name order, ``groups=None`` and ``names = {label: folder name}``.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: no identity folder; empty identity folders (all named); identities with
            fewer than ``min_images_per_identity`` images (named with their counts); a file that
            cannot be decoded (named); mixed or non-square sizes while ``resolution`` is None.
    """
    _check_resolution(resolution)
    if (
        isinstance(min_images_per_identity, bool)
        or not isinstance(min_images_per_identity, (int, np.integer))
        or min_images_per_identity < 1
    ):
        raise ValueError(f"min_images_per_identity must be an int >= 1, got {min_images_per_identity!r}")

    tree = list_folder_tree(root, extensions)
    empty = [name for name, files in tree.items() if not files]
    if empty:
        raise ValueError(
            f"{len(empty)} identity folder(s) under {root} contain no image file with an extension in "
            f"{tuple(extensions)}: {_name_list(empty)}"
        )
    too_few = [f"{name} ({len(files)})" for name, files in tree.items() if len(files) < min_images_per_identity]
    if too_few:
        raise ValueError(
            f"{len(too_few)} identity folder(s) under {root} have fewer than min_images_per_identity="
            f"{min_images_per_identity} images (count in parentheses): {_name_list(too_few)}"
        )

    files = [(label, path) for label, name in enumerate(tree) for path in tree[name]]
    images: torch.Tensor | None = None
    first_path: Path | None = None
    for row, (_, path) in enumerate(tqdm(files, desc="loading faces", disable=not progress, unit="img")):
        image = read_image(path, resolution)
        if images is None:
            if image.shape[1] != image.shape[2]:
                raise ValueError(
                    f"image {path} is {image.shape[2]}x{image.shape[1]} (not square); pass "
                    f"resolution=<side> to resize every image to a square crop"
                )
            images = torch.empty((len(files), 3, image.shape[1], image.shape[2]), dtype=torch.uint8)
            first_path = path
        elif image.shape != images.shape[1:]:
            raise ValueError(
                f"images have different sizes: {first_path} is {images.shape[3]}x{images.shape[2]} but "
                f"{path} is {image.shape[2]}x{image.shape[1]}; pass resolution=<side> to resize all "
                f"images on load"
            )
        images[row] = image
    assert images is not None  # at least one identity with >= 1 file
    labels = torch.tensor([label for label, _ in files], dtype=torch.int64)
    return FaceSet(images=images, labels=labels, groups=None, names=dict(enumerate(tree)))
