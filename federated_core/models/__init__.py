"""Face-recognition backbones, margin heads, embedding and checkpoints.

- `build_backbone(name, embedding_dim, resolution, **kwargs)`: "tiny", "mobilefacenet",
  "iresnet18", "iresnet34", "inception_resnet_v1" (see `registry`).
- `embed(model, images)`: L2-normalised float32 embeddings (eval mode, no grad).
- `heads`: `margin_logits`, `margin_loss`, `MarginHead` (Softmax / CosFace / ArcFace).
- `count_parameters`, `state_dict_to_safetensors`, `load_backbone`, `read_checkpoint_config`.
- `read_state_dict`, `load_pretrained_backbone`, `import_as_checkpoint`: a team's own backbone
  weights as φ0 (see `weights`).
"""

from federated_core.models.checkpoint import (
    count_parameters,
    load_backbone,
    read_checkpoint_config,
    state_dict_to_safetensors,
)
from federated_core.models.embedding import embed
from federated_core.models.heads import HEAD_KINDS, MarginHead, margin_logits, margin_loss
from federated_core.models.registry import BACKBONE_NAMES, build_backbone
from federated_core.models.weights import import_as_checkpoint, load_pretrained_backbone, read_state_dict

__all__ = [
    "BACKBONE_NAMES",
    "HEAD_KINDS",
    "MarginHead",
    "build_backbone",
    "count_parameters",
    "embed",
    "import_as_checkpoint",
    "load_backbone",
    "load_pretrained_backbone",
    "margin_logits",
    "margin_loss",
    "read_checkpoint_config",
    "read_state_dict",
    "state_dict_to_safetensors",
]
