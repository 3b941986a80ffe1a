"""Face data: the synthetic generator (embedded default), real-data loaders, alignment, splits.

- `SyntheticFaces`: procedural faces, deterministic per (seed, identity, image index).
- `FaceSet`: the in-memory container every loader returns (uint8 images + global identity ids).
- `load_folder_tree`: identity-per-folder aligned crops; `load_lfw_pairs`,
  `load_insightface_bin`: verification pair lists (`PairSet`); `align_faces`,
  `align_folder_tree`: MTCNN detection + 5-point alignment (facenet-pytorch, lazy import).
- `split`: identity-disjoint splits and client partitions.
"""

from __future__ import annotations

from typing import Any

from federated_core.data.faceset import FaceSet
from federated_core.data.folders import IMAGE_EXTENSIONS, list_folder_tree, load_folder_tree
from federated_core.data.pairs import PairSet, UnsafePickleError, load_insightface_bin, load_lfw_pairs
from federated_core.data.split import (
    partition_balanced,
    partition_by_group,
    partition_lognormal,
    partition_one_identity,
    split_identities,
    split_images_per_identity,
)

_LAZY = {
    "SyntheticFaces": ("federated_core.data.synthetic", "SyntheticFaces"),
    "save_png_tree": ("federated_core.data.png_tree", "save_png_tree"),
    "align_faces": ("federated_core.data.align", "align_faces"),
    "align_folder_tree": ("federated_core.data.align", "align_folder_tree"),
    "AlignedFaces": ("federated_core.data.align", "AlignedFaces"),
}


def __getattr__(name: str) -> Any:  # PEP 562: import the heavier modules on first use
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'federated_core.data' has no attribute {name!r}")


__all__ = [
    "FaceSet",
    "IMAGE_EXTENSIONS",
    "PairSet",
    "UnsafePickleError",
    "list_folder_tree",
    "load_folder_tree",
    "load_insightface_bin",
    "load_lfw_pairs",
    "partition_balanced",
    "partition_by_group",
    "partition_lognormal",
    "partition_one_identity",
    "split_identities",
    "split_images_per_identity",
    *_LAZY,
]
