"""IResNet-18 / IResNet-34: the "improved ResNet" of insightface's ArcFace models (Deng et al. 2019,
"ArcFace", §3 and the insightface ``arcface_torch`` backbones; Duta et al. 2020 for the name),
written from the architecture description.

- Input stem: 3×3 conv (64 channels, stride 1) + BN + PReLU.
- Four stages with 64, 128, 256, 512 channels and [2, 2, 2, 2] (IResNet-18) or [3, 4, 6, 3]
  (IResNet-34) blocks; the first block of each stage downsamples by 2.
- Block (pre-activation style "BN-Conv-BN-PReLU-Conv-BN"): BN → 3×3 conv → BN → PReLU →
  3×3 conv (carrying the stride) → BN, added to the shortcut (identity, or 1×1 strided conv + BN
  when the shape changes); no activation after the addition.
- Output ("E" structure of ArcFace §3.3): BN → dropout → flatten → FC → BatchNorm1d. As in
  insightface, the scale of the final BatchNorm1d is fixed to 1 (``requires_grad=False``).

At 112 px the last feature map is 7×7 and the FC maps 512·7·7 -> d. The network downsamples by
16, so any multiple of 16 (>= 16) works; the FC input size is adapted to ``(R/16)²·512``.

BatchNorm is not compatible with opacus DP-SGD; use the "tiny" backbone there.
"""

from __future__ import annotations

import torch
from torch import nn

from federated_core.models._checks import check_positive_int, check_probability, check_resolution

STAGE_CHANNELS = (64, 128, 256, 512)
IRESNET_LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3)}
BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """BN → conv3×3 → BN → PReLU → conv3×3 (stride) → BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(x)
        out = self.prelu(self.bn2(self.conv1(out)))
        out = self.bn3(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet: ``[B, 3, R, R]`` in ``[-1, 1]`` -> ``[B, embedding_dim]``.

    Args:
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for IResNet-18.
        embedding_dim: output dimension (insightface: 512).
        resolution: input side ``R``; a multiple of 16 (insightface: 112).
        dropout: dropout probability before the FC layer (insightface: 0).
    """

    def __init__(
        self,
        layers: tuple[int, ...],
        embedding_dim: int = 512,
        resolution: int = 112,
        dropout: float = 0.0,
        name: str = "iresnet",
    ) -> None:
        super().__init__()
        if len(layers) != len(STAGE_CHANNELS) or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be {len(STAGE_CHANNELS)} integers >= 1, got {layers!r}")
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.resolution = check_resolution("resolution", resolution, multiple=16, minimum=16, backbone=name)
        dropout = check_probability("dropout", dropout)
        self.stem = nn.Sequential(
            nn.Conv2d(3, STAGE_CHANNELS[0], 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(STAGE_CHANNELS[0], eps=BN_EPS),
            nn.PReLU(STAGE_CHANNELS[0]),
        )
        stages: list[nn.Module] = []
        cin = STAGE_CHANNELS[0]
        for cout, blocks in zip(STAGE_CHANNELS, layers):
            stage = [IBasicBlock(cin, cout, stride=2)]
            stage += [IBasicBlock(cout, cout, stride=1) for _ in range(int(blocks) - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.Sequential(*stages)
        side = self.resolution // 16
        self.bn2 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(cin * side * side, self.embedding_dim)
        self.features = nn.BatchNorm1d(self.embedding_dim, eps=BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(
                f"x must have shape [B, 3, {self.resolution}, {self.resolution}], got {tuple(x.shape)}"
            )
        x = self.bn2(self.stages(self.stem(x)))
        x = self.fc(torch.flatten(self.dropout(x), 1))
        return self.features(x)


def iresnet(name: str, embedding_dim: int = 512, resolution: int = 112, dropout: float = 0.0) -> IResNet:
    """IResNet-18 (``name="iresnet18"``) or IResNet-34 (``"iresnet34"``)."""
    if name not in IRESNET_LAYERS:
        raise ValueError(f"name must be one of {sorted(IRESNET_LAYERS)}, got {name!r}")
    return IResNet(IRESNET_LAYERS[name], embedding_dim, resolution, dropout, name=name)
