"""Logical clients on SuperNodes: which node hosts which clients, and each node's data shard.

Thousands of one-identity clients cannot each be a Flower node, so a SuperNode hosts a shard of
logical clients: `assign_shards` splits the sorted client ids into ``num_nodes`` contiguous
blocks, `write_shard` stores one block's `ClientData` in one file (``node-<i>.pt``: plain tensors
and ints, read back with ``weights_only=True``), and the node's ClientApp reads it with
`read_shard`. The data never crosses the Flower wire: a node reads its own clients' images from
its own disk, as a device would.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine.state import ClientData


def assign_shards(client_ids: list[int], num_nodes: int) -> list[list[int]]:
    """``num_nodes`` contiguous blocks of the sorted ``client_ids``, sizes differing by at most one."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"num_nodes must be an integer >= 1, got {num_nodes!r}")
    ids = sorted(client_ids)
    if num_nodes > len(ids):
        raise ValueError(f"num_nodes ({num_nodes}) must not exceed the number of clients ({len(ids)})")
    base, extra = divmod(len(ids), num_nodes)
    out, start = [], 0
    for i in range(num_nodes):
        size = base + (1 if i < extra else 0)
        out.append(ids[start : start + size])
        start += size
    return out


def shard_path(folder: Path, node_index: int) -> Path:
    """Where node ``node_index``'s shard lives in ``folder``."""
    return Path(folder) / f"node-{int(node_index)}.pt"


def write_shard(path: Path, clients: Mapping[int, ClientData]) -> None:
    """Store ``clients`` (id -> data) in ``path`` (images, labels, label map; groups when known)."""
    payload = {}
    for cid, data in clients.items():
        entry: dict[str, object] = {
            "images": data.faces.images.contiguous(),
            "labels": data.faces.labels.contiguous(),
            "label_map": [[int(k), int(v)] for k, v in sorted(data.label_map.items())],
        }
        if data.faces.groups is not None:
            entry["groups"] = data.faces.groups.contiguous()
        payload[int(cid)] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def read_shard(path: Path) -> dict[int, ClientData]:
    """The clients stored by `write_shard` (a clear error naming ``path`` when it is missing or damaged)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"this SuperNode's data shard {str(path)!r} does not exist")
    try:
        payload = torch.load(path, weights_only=True)
    except (
        RuntimeError,
        OSError,
        EOFError,
        IndexError,
        ValueError,
        pickle.UnpicklingError,
    ) as exc:  # what torch.load raises on bad bytes
        raise ValueError(f"data shard {str(path)!r} cannot be read: {exc}") from exc
    out = {}
    for cid, entry in payload.items():
        faces = FaceSet(entry["images"], entry["labels"], entry.get("groups"))
        out[int(cid)] = ClientData(faces, {int(k): int(v) for k, v in entry["label_map"]})
    return dict(sorted(out.items()))
