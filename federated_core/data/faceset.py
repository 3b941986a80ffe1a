"""`FaceSet`: the one in-memory container of face images that every loader returns.

Images are kept as uint8 ``[N, 3, R, R]`` (what the generator caches and what files hold);
``as_float()`` gives the network input in ``[-1, 1]``. ``labels`` are *global* identity ids
(never re-numbered by a loader), so identity-disjoint splits and attacks' ground truth can be
checked across every part of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FaceSet:
    """Face crops with their identity labels.

    Attributes:
        images: uint8 tensor ``[N, 3, R, R]``.
        labels: int64 tensor ``[N]`` of global identity ids.
        groups: optional int64 tensor ``[N]`` of population-group ids (synthetic data, or
            folder metadata); ``None`` when unknown.
        names: optional mapping from identity id to a human-readable name (folder name).
    """

    images: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor | None = None
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be a uint8 tensor [N, 3, R, R], got dtype={self.images.dtype} "
                f"shape={tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must be a 1-d tensor with one entry per image ({self.images.shape[0]}), "
                f"got shape={tuple(self.labels.shape)}"
            )
        self.labels = self.labels.to(torch.int64)
        if self.groups is not None:
            if self.groups.shape != self.labels.shape:
                raise ValueError(
                    f"groups must have the shape of labels {tuple(self.labels.shape)}, got {tuple(self.groups.shape)}"
                )
            self.groups = self.groups.to(torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def identities(self) -> torch.Tensor:
        """Sorted unique identity ids present in the set."""
        return torch.unique(self.labels)

    def subset(self, index: torch.Tensor) -> "FaceSet":
        """Rows selected by a boolean mask or an index tensor (names are kept)."""
        return FaceSet(
            images=self.images[index],
            labels=self.labels[index],
            groups=None if self.groups is None else self.groups[index],
            names=dict(self.names),
        )

    def of_identities(self, identities: torch.Tensor | list[int]) -> "FaceSet":
        """The images whose label is in ``identities``."""
        ids = torch.as_tensor(identities, dtype=torch.int64)
        return self.subset(torch.isin(self.labels, ids))

    def as_float(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Images as float32 in ``[-1, 1]`` (the convention of every backbone here)."""
        x = self.images if device is None else self.images.to(device)
        return x.to(torch.float32).div_(127.5).sub_(1.0)

    @staticmethod
    def concat(sets: list["FaceSet"]) -> "FaceSet":
        if not sets:
            raise ValueError("concat needs at least one FaceSet, got an empty list")
        groups = None
        known = [s.groups for s in sets if s.groups is not None]
        if len(known) == len(sets):
            groups = torch.cat(known)
        names: dict[int, str] = {}
        for s in sets:
            names.update(s.names)
        return FaceSet(
            images=torch.cat([s.images for s in sets]),
            labels=torch.cat([s.labels for s in sets]),
            groups=groups,
            names=names,
        )
