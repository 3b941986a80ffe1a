"""MobileFaceNet (Chen, Liu, Gao, Han 2018, "MobileFaceNets: Efficient CNNs for Accurate Real-Time
Face Verification on Mobile Devices"), written from the architecture of its Table 1.

At 112 px (Table 1):

| input       | operator               | t | c   | n | s |
|-------------|------------------------|---|-----|---|---|
| 112²×3      | conv3×3                | - | 64  | 1 | 2 |
| 56²×64      | depthwise conv3×3      | - | 64  | 1 | 1 |
| 56²×64      | bottleneck             | 2 | 64  | 5 | 2 |
| 28²×64      | bottleneck             | 4 | 128 | 1 | 2 |
| 14²×128     | bottleneck             | 2 | 128 | 6 | 1 |
| 14²×128     | bottleneck             | 4 | 128 | 1 | 2 |
| 7²×128      | bottleneck             | 2 | 128 | 2 | 1 |
| 7²×128      | conv1×1                | - | 512 | 1 | 1 |
| 7²×512      | linear GDConv7×7       | - | 512 | 1 | 1 |
| 1²×512      | linear conv1×1         | - | d   | 1 | 1 |

A bottleneck is the MobileNetV2 inverted residual (1×1 expansion by ``t`` → 3×3 depthwise with
stride ``s`` → linear 1×1 projection), with a residual connection when the stride is 1 and the
channel count is unchanged. Every convolution is followed by BatchNorm; the non-linearity is
PReLU (the paper's choice); "linear" layers have no non-linearity. The embedding layer is
followed by BatchNorm1d, as in the paper's linear conv1×1 + BN. The paper uses d = 128; the spec
of this project defaults to d = 512 (the insightface convention).

Other resolutions: the network downsamples by 16, so any multiple of 16 (>= 32) works; the global
depthwise convolution (GDConv) takes the kernel of the final feature map (7×7 at 112 px, 6×6 at
96 px, 4×4 at 64 px).

Normalisation (``norm``): ``"batch"`` (default) is the paper's BatchNorm, which mixes the examples
of a batch and so cannot be trained with opacus DP-SGD. ``norm="group"`` replaces every
BatchNorm2d by GroupNorm (the largest of 32/16/8/4/2/1 groups dividing the channel count; 32 for
every layer here) and the embedding's BatchNorm1d by ``LayerNorm(d)``, which opacus accepts (see
`federated_core.models._norms`). Module names do not depend on ``norm``: the default
model's state-dict keys are those of the BatchNorm-only code (existing checkpoints load), and a
``"group"`` model's keys are the same minus BatchNorm's running statistics (``running_mean``,
``running_var``, ``num_batches_tracked``); the two kinds of checkpoint are not interchangeable.
"""

from __future__ import annotations

import torch
from torch import nn

from federated_core.models._checks import check_positive_int, check_resolution
from federated_core.models._norms import check_norm, norm1d, norm2d

# (expansion t, output channels c, repeats n, stride s) of the bottleneck rows of Table 1.
BOTTLENECK_SETTING = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
STEM_CHANNELS = 64
CONV_CHANNELS = 512


class ConvBN(nn.Sequential):
    """Convolution + normalisation (BatchNorm, or GroupNorm for ``norm="group"``) (+ PReLU unless
    ``linear``)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        linear: bool = False,
        norm: str = "batch",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                cin, cout, kernel, stride=stride, padding=kernel // 2 if kernel == 3 else 0, groups=groups, bias=False
            ),
            norm2d(norm, cout),
        ]
        if not linear:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """Inverted residual bottleneck (expansion, depthwise 3×3, linear projection)."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int, norm: str = "batch") -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBN(cin, hidden, 1, norm=norm),
            ConvBN(hidden, hidden, 3, stride=stride, groups=hidden, norm=norm),
            ConvBN(hidden, cout, 1, linear=True, norm=norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet: ``[B, 3, R, R]`` in ``[-1, 1]`` -> ``[B, embedding_dim]``.

    Args:
        embedding_dim: output dimension (paper: 128; default here 512).
        resolution: input side ``R``; a multiple of 16, at least 32 (paper: 112).
        norm: ``"batch"`` (the paper's BatchNorm; default) or ``"group"`` (GroupNorm in the
            convolutional layers and LayerNorm on the embedding; trainable with opacus DP-SGD).

    Raises:
        ValueError: a bad ``embedding_dim``, ``resolution`` or ``norm``.
    """

    def __init__(self, embedding_dim: int = 512, resolution: int = 112, norm: str = "batch") -> None:
        super().__init__()
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.resolution = check_resolution("resolution", resolution, multiple=16, minimum=32, backbone="mobilefacenet")
        self.norm = check_norm(norm)
        self.stem = nn.Sequential(
            ConvBN(3, STEM_CHANNELS, 3, stride=2, norm=norm),
            ConvBN(STEM_CHANNELS, STEM_CHANNELS, 3, groups=STEM_CHANNELS, norm=norm),
        )
        blocks: list[nn.Module] = []
        cin = STEM_CHANNELS
        for expansion, cout, repeats, stride in BOTTLENECK_SETTING:
            for i in range(repeats):
                blocks.append(Bottleneck(cin, cout, expansion, stride if i == 0 else 1, norm=norm))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv = ConvBN(cin, CONV_CHANNELS, 1, norm=norm)
        side = self.resolution // 16
        # Global depthwise convolution: one side×side filter per channel, no padding -> 1×1.
        self.gdc = nn.Sequential(
            nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, side, groups=CONV_CHANNELS, bias=False),
            norm2d(norm, CONV_CHANNELS),
        )
        self.linear = nn.Conv2d(CONV_CHANNELS, self.embedding_dim, 1, bias=False)
        # BatchNorm1d (paper), or LayerNorm over the d features of each example for "group".
        self.bn = norm1d(norm, self.embedding_dim)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"x must have shape [B, 3, {self.resolution}, {self.resolution}], got {tuple(x.shape)}")
        x = self.conv(self.blocks(self.stem(x)))
        x = self.linear(self.gdc(x))
        return self.bn(torch.flatten(x, 1))
