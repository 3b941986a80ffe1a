"""Helpers of the method tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import pytest
import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine import ClientData, FederatedConfig


def random_faces(identities: list[int], per_identity: int, seed: int, resolution: int = 16) -> FaceSet:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor(identities, dtype=torch.int64).repeat_interleave(per_identity)
    images = torch.randint(0, 256, (len(labels), 3, resolution, resolution), generator=gen, dtype=torch.uint8)
    return FaceSet(images, labels)


def tiny_config(**overrides) -> FederatedConfig:
    base = dict(rounds=1, batch_size=4, lr=0.05, progress=False, embedding_dim=16, resolution=16,
                eval_initial=False, eval_every=0)
    base.update(overrides)
    return FederatedConfig(**base)


