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
