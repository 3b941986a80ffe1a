"""Helpers of the engine tests (imported by name: pytest puts this folder on sys.path): tiny random-image clients (the engine's behaviour does not depend
on what the images show) and a switch for tests that need accountants' DP events."""

from __future__ import annotations

import pytest
import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine import ClientData, FederatedConfig

RESOLUTION = 16


def random_faces(identities: list[int], per_identity: int, seed: int, resolution: int = RESOLUTION) -> FaceSet:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor(identities, dtype=torch.int64).repeat_interleave(per_identity)
    images = torch.randint(0, 256, (len(labels), 3, resolution, resolution), generator=gen, dtype=torch.uint8)
    return FaceSet(images, labels)


def make_clients(num_clients: int = 4, ids_per_client: int = 3, per_identity: int = 3) -> list[ClientData]:
    return [
        ClientData.from_faces(random_faces([100 * k + i for i in range(ids_per_client)], per_identity, seed=k))
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



