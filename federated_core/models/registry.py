"""`build_backbone`: the one entry point that makes a backbone by name.

Every backbone maps float images ``[B, 3, R, R]`` in ``[-1, 1]`` to unnormalised embeddings
``[B, embedding_dim]`` and carries ``embedding_dim``, ``resolution`` and ``build_config`` (the
name and arguments it was built with, which `state_dict_to_safetensors` stores so that
`load_backbone` can rebuild it).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from federated_core.models.inception import InceptionResnetV1Backbone
from federated_core.models.iresnet import iresnet
from federated_core.models.mobilefacenet import MobileFaceNet
from federated_core.models.tiny import TinyFaceNet

# name -> (constructor(embedding_dim, resolution, **kwargs), allowed extra keyword arguments)
_BACKBONES: dict[str, tuple[Callable[..., nn.Module], frozenset[str]]] = {
    "tiny": (lambda d, r: TinyFaceNet(d, r), frozenset()),
    "mobilefacenet": (lambda d, r, **kw: MobileFaceNet(d, r, **kw), frozenset({"norm"})),
    "iresnet18": (lambda d, r, **kw: iresnet("iresnet18", d, r, **kw), frozenset({"dropout", "norm"})),
    "iresnet34": (lambda d, r, **kw: iresnet("iresnet34", d, r, **kw), frozenset({"dropout", "norm"})),
    "inception_resnet_v1": (
        lambda d, r, **kw: InceptionResnetV1Backbone(d, r, **kw),
        frozenset({"weights_path", "pretrained", "dropout"}),
    ),
}
BACKBONE_NAMES: tuple[str, ...] = tuple(_BACKBONES)
# Arguments that say where initial weights come from, not what the architecture is: they are not
# stored in checkpoints (the checkpoint holds the weights themselves).
_WEIGHT_SOURCE_KWARGS = frozenset({"weights_path", "pretrained"})


def build_backbone(name: str, embedding_dim: int = 512, resolution: int = 64, **kwargs: Any) -> nn.Module:
    """Build a backbone by name.

    Names: ``"tiny"`` (GroupNorm CNN for CPU scale, opacus-compatible; resolution a multiple of 8,
    >= 16), ``"mobilefacenet"`` (Chen et al. 2018; multiple of 16, >= 32; paper 112; kwarg
    ``norm``), ``"iresnet18"``, ``"iresnet34"`` (insightface IResNet; multiple of 16; paper 112;
    kwargs ``dropout``, ``norm``), ``"inception_resnet_v1"`` (facenet-pytorch; embedding_dim 512;
    resized to 160 inside; kwargs ``weights_path`` (local file), ``dropout``).

    ``norm``: ``"batch"`` (default; the papers' BatchNorm) or ``"group"`` (GroupNorm + LayerNorm
    on the embedding), which makes MobileFaceNet / IResNet trainable with opacus DP-SGD; it is
    recorded in ``build_config`` (and so in checkpoints) when given.

    Parameter initialisation draws from torch's default generator; wrap the call in
    ``torch.random.fork_rng()`` + ``torch.manual_seed(seed)`` for a seeded, side-effect-free build.

    Raises:
        ValueError: unknown name, an argument the backbone does not take, or a bad value.
    """
    if name not in _BACKBONES:
        raise ValueError(f"name must be one of {list(BACKBONE_NAMES)}, got {name!r}")
    constructor, allowed = _BACKBONES[name]
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"backbone {name!r} takes no argument(s) {unknown}; its extra arguments are {sorted(allowed)}")
    model = constructor(embedding_dim, resolution, **kwargs)
    model.build_config = {  # type: ignore[assignment]  # torch stub: Module attributes typed Tensor | Module
        "name": name,
        "embedding_dim": int(embedding_dim),
        "resolution": int(resolution),
        "kwargs": {k: v for k, v in kwargs.items() if k not in _WEIGHT_SOURCE_KWARGS},
    }
    return model
