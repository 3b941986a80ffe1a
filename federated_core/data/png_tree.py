"""Save a `FaceSet` as an identity-per-folder tree of PNG files (the layout `load_folder_tree` reads).

::

    root/
        id_000123/  000.png  001.png ...
        id_000124/  ...

A folder is named by the set's ``names`` entry for the identity when there is one, else
``id_<zero-padded id>`` (padded to the widest id of the set, so folder order is id order).
Images keep the set's order within each identity. PNG is lossless: reading a file back gives
exactly the stored pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from federated_core.data.faceset import FaceSet

__all__ = ["save_png_tree", "identity_folder_names"]


def identity_folder_names(faces: FaceSet) -> dict[int, str]:
    """Folder name of every identity of ``faces``: its ``names`` entry, else ``id_<padded id>``.

    Raises:
        ValueError: a name is not a usable folder name, or two identities share one.
    """
    ids = [int(i) for i in faces.identities().tolist()]
    width = max([6] + [len(str(i)) for i in ids])
    folders: dict[int, str] = {}
    for i in ids:
        name = faces.names.get(i)
        folder = f"id_{i:0{width}d}" if name is None else str(name)
        if folder in ("", ".", "..") or folder.startswith(".") or "/" in folder or "\\" in folder or "\0" in folder:
            raise ValueError(
                f"faces.names[{i}] = {name!r} is not a usable folder name (no path separators, not empty, "
                "not starting with '.')"
            )
        folders[i] = folder
    seen: dict[str, int] = {}
    for i, folder in folders.items():
        if folder in seen:
            raise ValueError(f"identities {seen[folder]} and {i} would share the folder name {folder!r}")
        seen[folder] = i
    return folders


def save_png_tree(
    faces: FaceSet, root: str | os.PathLike[str], overwrite: bool = False, progress: bool = False
) -> Path:
    """Write ``faces`` as ``root/<identity folder>/<k>.png`` (k = 000, 001, ... per identity).

    Args:
        faces: the set to save (uint8 images, any resolution).
        root: output folder; created if missing.
        overwrite: allow a non-empty ``root``; identity folders being written are cleared of
            their ``.png`` files first, so no stale image survives. Without it, a non-empty
            ``root`` is refused.
        progress: show a tqdm bar over identities.

    Returns:
        ``root`` as a `Path`.

    Raises:
        ValueError: ``root`` is a file, or a non-empty folder without ``overwrite``; or the
            identity names cannot be folder names (see `identity_folder_names`).
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"root must be a folder, but {root} is a file")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise ValueError(f"root {root} is not empty; pass overwrite=True to write into it")
    folders = identity_folder_names(faces)
    images = faces.images.detach().cpu()
    labels = faces.labels.detach().cpu()
    root.mkdir(parents=True, exist_ok=True)
    for identity, folder in tqdm(folders.items(), desc="writing PNG tree", unit="identity", disable=not progress):
        target = root / folder
        target.mkdir(exist_ok=True)
        for stale in target.glob("*.png"):
            stale.unlink()
        rows = (labels == identity).nonzero().flatten().tolist()
        width = max(3, len(str(len(rows) - 1)))
        for k, row in enumerate(rows):
            array = np.ascontiguousarray(images[row].permute(1, 2, 0).numpy())
            Image.fromarray(array).save(target / f"{k:0{width}d}.png")
    return root
