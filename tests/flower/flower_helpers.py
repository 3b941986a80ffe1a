"""Helpers of the Flower tests (imported by name: pytest puts this folder on sys.path): tiny
random-image clients whose identities stay clear of FedFR's default public set, the engine tests'
tiny config, and comparisons of two runs down to the bytes."""

from __future__ import annotations

from pathlib import Path

import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine import ClientData, FederatedConfig

RESOLUTION = 16
FLOAT_TOLERANCE = 0.0  # the Flower engines run the same code with the same seeds: bit-identical


def random_faces(identities: list[int], per_identity: int, seed: int, resolution: int = RESOLUTION) -> FaceSet:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor(identities, dtype=torch.int64).repeat_interleave(per_identity)
    images = torch.randint(0, 256, (len(labels), 3, resolution, resolution), generator=gen, dtype=torch.uint8)
    return FaceSet(images, labels)


def make_clients(num_clients: int = 4, ids_per_client: int = 3, per_identity: int = 3) -> list[ClientData]:
    return [
        ClientData.from_faces(random_faces([9000 + 100 * k + i for i in range(ids_per_client)], per_identity, seed=k))
        for k in range(num_clients)
    ]


def tiny_config(**overrides) -> FederatedConfig:
    base = dict(
        rounds=2, batch_size=4, lr=0.05, progress=False, embedding_dim=16, resolution=RESOLUTION,
        eval_initial=False, eval_every=0,
        evaluation=dict(genuine_pairs=20, impostor_pairs=20, fars=(0.1,), fpirs=(0.2,)),
    )
    base.update(overrides)
    return FederatedConfig(**base)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaNs included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def assert_same_wire(a, b) -> None:
    """Two wire logs hold the same messages: every header field, event and tensor bit for bit."""
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        head = lambda m: (m.kind, m.sender, m.receivers, m.round, m.phase, m.meta)  # noqa: E731
        assert head(x) == head(y), f"message {i}"
        assert (x.event is None) == (y.event is None) and (x.event is None or x.event.to_dict() == y.event.to_dict())
        assert list(x.tensors) == list(y.tensors), f"message {i}"
        for name in x.tensors:
            assert bits_equal(x.tensors[name], y.tensors[name]), f"message {i} tensor {name}"


def run_folder_bytes(folder: Path, skip: tuple[str, ...]) -> dict[str, bytes]:
    """Every file of a run folder (relative path -> bytes), leaving out the names in ``skip``."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def folder_difference(a: Path, b: Path, skip: tuple[str, ...], limit: int = 20) -> str:
    """What differs between two run folders, for an assertion message: the differing files and, for
    JSON files, the first ``limit`` differing paths with both values (a rare difference is then
    diagnosable from the CI log alone)."""
    import json

    fa, fb = run_folder_bytes(a, skip), run_folder_bytes(b, skip)
    lines = [f"only in one: {sorted(set(fa) ^ set(fb))}"]
    for name in sorted(set(fa) & set(fb)):
        if fa[name] == fb[name]:
            continue
        lines.append(f"differs: {name}")
        if name.endswith(".json"):
            found: list[str] = []

            def walk(x, y, path: str) -> None:
                if len(found) >= limit:
                    return
                if isinstance(x, dict) and isinstance(y, dict):
                    for k in sorted(set(x) | set(y)):
                        walk(x.get(k), y.get(k), f"{path}/{k}")
                elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
                    for i, (u, v) in enumerate(zip(x, y)):
                        walk(u, v, f"{path}[{i}]")
                elif x != y:
                    found.append(f"  {path}: {str(x)[:120]} != {str(y)[:120]}")

            walk(json.loads(fa[name]), json.loads(fb[name]), "")
            lines += found
    return "\n".join(lines)
