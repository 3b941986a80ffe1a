"""The app's own model, data and training loop (plain PyTorch; nothing from privaudit).

Faces are read from an identity-per-folder tree (``FACES/<identity id>/<n>.png``); SuperNode ``p``
of ``n`` holds the identities ``sorted(ids)[p::n]``. The model is a small GroupNorm CNN
(``features`` + ``embedding``) with a softmax head (``head``) over every identity of the
federation, trained with cross-entropy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

EMBEDDING_DIM = 32
RESOLUTION = 32
LR, EPOCHS, BATCH_SIZE = 0.05, 1, 8  # the clients' local training (sent by the server each round)


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(cout // 8, cout), nn.Tanh()]


class FaceNet(nn.Module):
    """A small face-embedding CNN with a classification head."""

    def __init__(self, num_identities: int, embedding_dim: int = EMBEDDING_DIM, resolution: int = RESOLUTION) -> None:
        super().__init__()
        layers = _block(3, 16, 2) + _block(16, 32, 2) + _block(32, 32, 1) + _block(32, 64, 2)
        layers += _block(64, 64, 1) + _block(64, 128, 1)
        self.features = nn.Sequential(*layers)
        self.embedding = nn.Linear(128 * (resolution // 8) ** 2, embedding_dim)
        self.head = nn.Linear(embedding_dim, num_identities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(torch.flatten(self.features(x), 1)))


def identities(faces: Path) -> list[int]:
    """Every identity of the federation (the folder names)."""
    return sorted(int(p.name) for p in Path(faces).iterdir() if p.is_dir())


def my_identities(faces: Path, partition: int, num_partitions: int) -> list[int]:
    return identities(faces)[partition::num_partitions]


def load_images(faces: Path, partition: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This node's images in [-1, 1] and their labels (index of the identity among all)."""
    everyone = identities(faces)
    xs, ys = [], []
    for identity in my_identities(faces, partition, num_partitions):
        for path in sorted((Path(faces) / str(identity)).glob("*.png")):
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
            xs.append(torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1.0)
            ys.append(everyone.index(identity))
    return torch.stack(xs), torch.tensor(ys)


def train(
    model: FaceNet, x: torch.Tensor, y: torch.Tensor, lr: float, epochs: int, batch_size: int, seed: int
) -> float:
    """Local SGD on cross-entropy; the mean loss of the last epoch."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(epochs):
        losses = []
        for batch in torch.randperm(len(y), generator=gen).split(batch_size):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    return float(np.mean(losses))


@torch.no_grad()
def evaluate(model: FaceNet, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
