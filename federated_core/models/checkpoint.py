"""Backbone checkpoints as safetensors files with their build config in the metadata.

The file holds the backbone's ``state_dict`` (parameters and buffers) and two metadata strings:
``privaudit.format`` (the format version) and ``privaudit.config`` (a JSON object with at least
``name``, ``embedding_dim``, ``resolution`` and ``kwargs`` — the `build_backbone` arguments — plus
whatever else the caller stored, e.g. the pre-training config). Nothing is unpickled on load.

Files are byte-reproducible: the same weights and config give the same bytes (`save_safetensors`
writes the metadata in sorted key order; safetensors' own writer orders it at random).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from federated_core.models.registry import build_backbone

CHECKPOINT_FORMAT = "1"
_FORMAT_KEY = "privaudit.format"
_CONFIG_KEY = "privaudit.config"
_BUILD_KEYS = ("name", "embedding_dim", "resolution", "kwargs")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter entries (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _checkpoint_config(model: nn.Module, config: dict[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    built = getattr(model, "build_config", None)
    if built is not None:
        for key in _BUILD_KEYS:
            if key in config and config[key] != built[key]:
                raise ValueError(
                    f"config[{key!r}]={config[key]!r} contradicts the model, which was built with {key}={built[key]!r}"
                )
            config.setdefault(key, built[key])
    config.setdefault("kwargs", {})
    missing = [key for key in _BUILD_KEYS if key not in config]
    if missing:
        raise ValueError(
            f"config must give {missing} (the build_backbone arguments) for a model not made by build_backbone"
        )
    return config


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """`safetensors.torch.save_file` with a deterministic header: metadata keys sorted (the
    tensors' order and the data section are already deterministic), so equal inputs give equal
    bytes. Written to a temporary file and renamed into place."""
    import struct

    from safetensors.torch import save

    blob = save(tensors, metadata=metadata)
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob[8 + length :])
    tmp.replace(path)
    return path


def state_dict_to_safetensors(path: str | Path, model: nn.Module, config: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s state dict to ``path`` (safetensors) with ``config`` as JSON metadata.

    ``config`` may omit the build arguments (``name``, ``embedding_dim``, ``resolution``,
    ``kwargs``) for a model made by `build_backbone`; they are taken from the model. It must be
    JSON-serialisable.
    """
    config = _checkpoint_config(model, config)
    try:
        blob = json.dumps(config, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config must be JSON-serialisable: {err}") from err
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_safetensors(tensors, path, metadata={_FORMAT_KEY: CHECKPOINT_FORMAT, _CONFIG_KEY: blob})


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The config stored in a checkpoint written by `state_dict_to_safetensors`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must be an existing checkpoint file, got {str(path)!r}")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get(_FORMAT_KEY) != CHECKPOINT_FORMAT or _CONFIG_KEY not in metadata:
        raise ValueError(
            f"path {str(path)!r} is not a privaudit backbone checkpoint (format {CHECKPOINT_FORMAT}); "
            f"its metadata keys are {sorted(metadata)}"
        )
    return json.loads(metadata[_CONFIG_KEY])


def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the backbone stored at ``path`` and load its weights.

    Returns:
        ``(model, config)``: the model on ``device`` in eval mode, and the stored config.
    """
    from safetensors.torch import load_file

    config = read_checkpoint_config(path)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
        model = build_backbone(
            config["name"],
            embedding_dim=config["embedding_dim"],
            resolution=config["resolution"],
            **config.get("kwargs", {}),
        )
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device).eval(), config
