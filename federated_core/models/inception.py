"""Wrapper over facenet-pytorch's ``InceptionResnetV1`` (FaceNet, Schroff et al. 2015, with the
Inception-ResNet-v1 trunk of Szegedy et al. 2017), with weights from a local file only.

facenet-pytorch can download VGGFace2 / CASIA-WebFace weights from a hub; our machines have no
network, so that path is refused with a `ValueError` that says how to pass a local file instead:
download ``20180402-114759-vggface2.pt`` (or the CASIA-WebFace file) once on a machine with
network access and give its path as ``weights_path=``. Accepted files: a state dict saved with
``torch.save`` (loaded with ``torch.load(..., weights_only=True)``) or a ``.safetensors`` file,
with facenet-pytorch's parameter names. The classification layer of those files (``logits.*``,
8631 or 10575 classes) is not part of an embedding model and is dropped; every other key must
match exactly.

Input: float ``[B, 3, R, R]`` in ``[-1, 1]`` (facenet-pytorch's own ``fixed_image_standardization``
gives ``(x - 127.5) / 128``, i.e. ``[-0.996, 0.996]``, close enough to our ``/127.5 - 1``). The
network was trained at 160 px; when ``resolution`` is not 160 the wrapper resizes the input to
160×160 inside ``forward`` (bilinear, ``antialias=True`` when shrinking). Output: the 512-d
``last_bn`` features, *before* facenet-pytorch's L2 normalisation (every backbone here returns
unnormalised embeddings; `federated_core.models.embed` normalises).

facenet-pytorch is imported lazily (it is installed with ``--no-deps``; see the README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from federated_core.models._checks import check_positive_int

FACENET_RESOLUTION = 160
FACENET_EMBEDDING_DIM = 512


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights_path {str(path)!r} does not hold a state dict (a mapping name -> tensor)")
    return state


class InceptionResnetV1Backbone(nn.Module):
    """facenet-pytorch ``InceptionResnetV1`` as a privaudit backbone.

    Args:
        embedding_dim: must be 512 (the network's fixed embedding size).
        resolution: input side ``R`` (>= 16); resized to 160 inside when different.
        weights_path: optional local state-dict file (``.pt``/``.pth`` or ``.safetensors``);
            without it the weights are random.
        pretrained: refused when not ``None`` (hub downloads cannot work offline).
        dropout: dropout probability before the last linear layer (facenet-pytorch: 0.6).
    """

    def __init__(
        self,
        embedding_dim: int = FACENET_EMBEDDING_DIM,
        resolution: int = FACENET_RESOLUTION,
        weights_path: str | Path | None = None,
        pretrained: Any = None,
        dropout: float = 0.6,
    ) -> None:
        super().__init__()
        if pretrained is not None:
            raise ValueError(
                f"pretrained={pretrained!r} asks facenet-pytorch to download weights from a hub, which "
                "cannot work offline (no network here). Download the weights file once elsewhere (e.g. "
                "20180402-114759-vggface2.pt) and pass its local path: "
                "build_backbone('inception_resnet_v1', weights_path='/path/to/20180402-114759-vggface2.pt')"
            )
        embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        if embedding_dim != FACENET_EMBEDDING_DIM:
            raise ValueError(
                f"embedding_dim for backbone 'inception_resnet_v1' must be {FACENET_EMBEDDING_DIM} "
                f"(fixed by the network), got {embedding_dim}"
            )
        resolution = check_positive_int("resolution", resolution)
        if resolution < 16:
            raise ValueError(f"resolution for backbone 'inception_resnet_v1' must be >= 16, got {resolution}")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

        self.embedding_dim = embedding_dim
        self.resolution = resolution
        net = InceptionResnetV1(pretrained=None, classify=False, dropout_prob=float(dropout))
        # With `classify=True` facenet-pytorch returns `logits(last_bn(...))` without the final L2
        # normalisation; an identity `logits` therefore yields the unnormalised embedding.
        net.classify = True
        net.logits = nn.Identity()
        self.net = net
        if weights_path is not None:
            self.load_facenet_weights(weights_path)

    def load_facenet_weights(self, weights_path: str | Path) -> None:
        """Load a facenet-pytorch state dict from a local file (``logits.*`` keys are dropped)."""
        path = Path(weights_path)
        if not path.is_file():
            raise ValueError(f"weights_path must be an existing local file, got {str(weights_path)!r}")
        state = {k: v for k, v in _load_state_dict(path).items() if not k.startswith("logits.")}
        expected = set(self.net.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"weights_path {str(path)!r} does not match InceptionResnetV1: missing keys {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                f"{'...' if len(unexpected) > 5 else ''}"
            )
        self.net.load_state_dict(state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"x must have shape [B, 3, {self.resolution}, {self.resolution}], got {tuple(x.shape)}")
        if self.resolution != FACENET_RESOLUTION:
            x = F.interpolate(
                x,
                size=(FACENET_RESOLUTION, FACENET_RESOLUTION),
                mode="bilinear",
                align_corners=False,
                antialias=self.resolution > FACENET_RESOLUTION,
            )
        return self.net(x)
