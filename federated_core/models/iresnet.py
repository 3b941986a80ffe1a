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

Normalisation (``norm``): ``"batch"`` (default) is insightface's BatchNorm, which mixes the
examples of a batch and so cannot be trained with opacus DP-SGD. ``norm="group"`` replaces every
BatchNorm2d by GroupNorm (the largest of 32/16/8/4/2/1 groups dividing the channel count; 32 for
every layer here) and the final BatchNorm1d by ``LayerNorm(d)`` over the d features of each
example, which opacus accepts (see `federated_core.models._norms`). The LayerNorm keeps the
insightface treatment of the last layer: its scale is fixed to 1 (``requires_grad=False``) and only
its shift is learnt, so the embedding is the standardised FC output plus a learnt offset, as with
the frozen-scale BatchNorm1d. Module names do not depend on ``norm``: the default
model's state-dict keys are those of the BatchNorm-only code (existing checkpoints load), and a
``"group"`` model's keys are the same minus BatchNorm's running statistics (``running_mean``,
``running_var``, ``num_batches_tracked``); the two kinds of checkpoint are not interchangeable.
"""

from __future__ import annotations

import torch
from torch import nn

from federated_core.models._checks import check_positive_int, check_probability, check_resolution
from federated_core.models._norms import check_norm, norm1d, norm2d

STAGE_CHANNELS = (64, 128, 256, 512)
IRESNET_LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3)}
BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """BN → conv3×3 → BN → PReLU → conv3×3 (stride) → BN, plus shortcut (GroupNorm in place of
    every BN for ``norm="group"``)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str = "batch") -> None:
        super().__init__()
        self.bn1 = norm2d(norm, cin, eps=BN_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm2d(norm, cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = norm2d(norm, cout, eps=BN_EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm2d(norm, cout, eps=BN_EPS)
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
        name: the backbone's name in error messages.
        norm: ``"batch"`` (insightface's BatchNorm; default) or ``"group"`` (GroupNorm in the
            convolutional layers and a frozen-scale LayerNorm on the embedding; trainable with
            opacus DP-SGD).

    Raises:
        ValueError: bad ``layers``, ``embedding_dim``, ``resolution``, ``dropout`` or ``norm``.
    """

    def __init__(
        self,
        layers: tuple[int, ...],
        embedding_dim: int = 512,
        resolution: int = 112,
        dropout: float = 0.0,
        name: str = "iresnet",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if len(layers) != len(STAGE_CHANNELS) or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be {len(STAGE_CHANNELS)} integers >= 1, got {layers!r}")
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.resolution = check_resolution("resolution", resolution, multiple=16, minimum=16, backbone=name)
        dropout = check_probability("dropout", dropout)
        self.norm = check_norm(norm)
        self.stem = nn.Sequential(
            nn.Conv2d(3, STAGE_CHANNELS[0], 3, stride=1, padding=1, bias=False),
            norm2d(norm, STAGE_CHANNELS[0], eps=BN_EPS),
            nn.PReLU(STAGE_CHANNELS[0]),
        )
        stages: list[nn.Module] = []
        cin = STAGE_CHANNELS[0]
        for cout, blocks in zip(STAGE_CHANNELS, layers):
            stage = [IBasicBlock(cin, cout, stride=2, norm=norm)]
            stage += [IBasicBlock(cout, cout, stride=1, norm=norm) for _ in range(int(blocks) - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.Sequential(*stages)
        side = self.resolution // 16
        self.bn2 = norm2d(norm, cin, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(cin * side * side, self.embedding_dim)
        # BatchNorm1d (insightface) or, for "group", LayerNorm over each example's d features;
        # either way the scale is fixed to 1 and only the shift is trained.
        self.features = norm1d(norm, self.embedding_dim, eps=BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"x must have shape [B, 3, {self.resolution}, {self.resolution}], got {tuple(x.shape)}")
        x = self.bn2(self.stages(self.stem(x)))
        x = self.fc(torch.flatten(self.dropout(x), 1))
        return self.features(x)


def iresnet(
    name: str, embedding_dim: int = 512, resolution: int = 112, dropout: float = 0.0, norm: str = "batch"
) -> IResNet:
    """IResNet-18 (``name="iresnet18"``) or IResNet-34 (``"iresnet34"``); ``norm`` as in `IResNet`."""
    if name not in IRESNET_LAYERS:
        raise ValueError(f"name must be one of {sorted(IRESNET_LAYERS)}, got {name!r}")
    return IResNet(IRESNET_LAYERS[name], embedding_dim, resolution, dropout, name=name, norm=norm)
