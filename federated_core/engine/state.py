"""Explicit state of the parties and the data a client holds.

`ServerState` and `ClientState` are plain named tensors plus JSON-able metadata, so a checkpoint
is a safetensors file and a JSON file, and a future Flower or batched executor can hold them
without knowing any method. `ClientData` is everything a client's own data gives it: its face
images and its local label mapping (global identity id -> local class index), nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from federated_core.data.faceset import FaceSet


@dataclass
class PartyState:
    """Named tensors + JSON-able metadata of one party (see `ServerState`, `ClientState`)."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, t in self.tensors.items():
            if not isinstance(name, str) or not isinstance(t, torch.Tensor):
                raise ValueError(f"state tensors must map str -> torch.Tensor, got {name!r}: {type(t).__name__}")
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"state meta must be JSON-serialisable: {exc}") from None

    def copy(self) -> "PartyState":
        return type(self)({k: v.detach().clone() for k, v in self.tensors.items()}, json.loads(json.dumps(self.meta)))

    def with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors whose name starts with ``prefix``, with the prefix removed."""
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}


@dataclass
class ServerState(PartyState):
    """The server's state: e.g. the global backbone under ``"backbone."`` names, stored class
    embeddings of clients, aggregation buffers."""


@dataclass
class ClientState(PartyState):
    """One client's private state, kept between rounds: e.g. its class embeddings W_k."""


def save_states(path: str | Path, states: dict[str, PartyState]) -> None:
    """Write several named states to ``path.safetensors`` + ``path.json``."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for owner, state in states.items():
        if "/" in owner:
            raise ValueError(f"state owner names must not contain '/', got {owner!r}")
        # tensor names in the state's own order: a resumed run rebuilds exactly the same dicts
        # (and so writes the same bytes as an uninterrupted one)
        meta[owner] = {"type": type(state).__name__, "meta": state.meta, "tensors": list(state.tensors)}
        for name, t in state.tensors.items():
            tensors[f"{owner}/{name}"] = t.detach().to("cpu").contiguous().clone()
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(meta))


def load_states(path: str | Path) -> dict[str, PartyState]:
    """Inverse of `save_states`."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    classes = {"ServerState": ServerState, "ClientState": ClientState, "PartyState": PartyState}
    out: dict[str, PartyState] = {}
    for owner, info in meta.items():
        own = {name: tensors[f"{owner}/{name}"] for name in info["tensors"]}
        out[owner] = classes[info["type"]](own, info["meta"])
    return out


@dataclass
class ClientData:
    """A client's own training data: its images and its local label mapping.

    Attributes:
        faces: the client's training images (labels are global identity ids).
        label_map: global identity id -> local class index ``0..n_k-1`` (a bijection onto that
            range; every label of ``faces`` must be in it).
    Derived (not extra information): ``local_labels`` (int64 ``[N]``), ``identities`` (global id of
    each local class, in local-index order).
    """

    faces: FaceSet
    label_map: dict[int, int]
    local_labels: torch.Tensor = field(init=False, repr=False)
    identities: list[int] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.faces) == 0:
            raise ValueError("a client needs at least one training image, got an empty FaceSet")
        label_map = {int(k): int(v) for k, v in self.label_map.items()}
        n = len(label_map)
        if sorted(label_map.values()) != list(range(n)):
            raise ValueError(
                f"label_map must map identities onto local classes 0..{n - 1} one-to-one, got values "
                f"{sorted(label_map.values())[:10]}..."
            )
        present = set(self.faces.labels.tolist())
        missing = present - set(label_map)
        if missing:
            raise ValueError(f"label_map lacks identities present in faces: {sorted(missing)[:10]}")
        self.label_map = label_map
        keys = torch.tensor(sorted(label_map), dtype=torch.int64)
        values = torch.tensor([label_map[int(k)] for k in keys], dtype=torch.int64)
        self.local_labels = values[torch.searchsorted(keys, self.faces.labels)]
        self.identities = sorted(label_map, key=label_map.__getitem__)

    @classmethod
    def from_faces(cls, faces: FaceSet) -> "ClientData":
        """Local classes in increasing order of global identity id."""
        ids = sorted(set(faces.labels.tolist()))
        return cls(faces=faces, label_map={gid: i for i, gid in enumerate(ids)})

    @property
    def num_classes(self) -> int:
        return len(self.label_map)

    def __len__(self) -> int:
        return len(self.faces)
