"""Small deterministic face-like images for the attack tests (no dependency on the generator)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from federated_core.data.faceset import FaceSet


def toy_faces(identities, per_identity: int, resolution: int = 16, seed: int = 0, noise: float = 0.08) -> FaceSet:
    """Each identity: a smooth random colour pattern (4×4 grid, upsampled); each image: that
    pattern shifted by up to one pixel plus pixel noise. Groups alternate 0/1 by identity id."""
    ids = torch.as_tensor(identities, dtype=torch.int64)
    images, labels = [], []
    for i in ids.tolist():
        g = torch.Generator().manual_seed(seed * 7_919 + i)
        base = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(resolution, resolution), mode="bilinear",
                             align_corners=False)
        for k in range(per_identity):
            gk = torch.Generator().manual_seed(seed * 104_729 + i * 1_000 + k)
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gk))
            img = torch.roll(base, shifts=(dy, dx), dims=(2, 3)) + noise * torch.randn(base.shape, generator=gk)
            images.append(img.clamp(0, 1))
            labels.append(i)
    x = (torch.cat(images) * 255).round().to(torch.uint8)
    lab = torch.tensor(labels)
    return FaceSet(x, lab, lab % 2)


def tiny_backbone(embedding_dim: int = 16, resolution: int = 16, seed: int = 0) -> torch.nn.Module:
    from federated_core.models import build_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_backbone("tiny", embedding_dim=embedding_dim, resolution=resolution).eval()


@pytest.fixture(scope="session")
def faces_factory():
    return toy_faces


@pytest.fixture(scope="session")
def backbone_factory():
    return tiny_backbone
