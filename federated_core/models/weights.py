"""A team's own pre-trained backbone weights as φ0 (issue #17, part 2: "Your backbone").

A config names an architecture (``model.backbone``) and a weights file (``model.weights``);
privaudit uses those weights as φ0 instead of pre-training:

- `read_state_dict(path)`: the tensors of a ``.safetensors`` file (`safetensors.torch.load_file`)
  or of a PyTorch file (``.pt``/``.pth``/``.bin``/``.ckpt``, read with
  ``torch.load(..., weights_only=True)``: nothing but tensors and plain containers is ever
  unpickled). The file may hold the state dict itself or a dict with it under ``"state_dict"``,
  ``"model"`` or ``"backbone"`` (a training checkpoint); a prefix shared by every key that
  ``nn.DataParallel`` (``module.``) or ``torch.compile`` (``_orig_mod.``) adds is stripped.
- `load_pretrained_backbone(name, weights, ...)`: `build_backbone` + a strict load whose failure
  says which keys are missing, unexpected or of the wrong shape (not torch's raw RuntimeError).
- `import_as_checkpoint(name, weights, out_path, ...)`: the same, saved with
  `state_dict_to_safetensors` so that `load_backbone` reads it like a pre-trained φ0.

``embedding_dim`` is read from the weights (see `EMBEDDING_KEYS`) and a different
``model.embedding_dim`` is refused. Every problem with the file is a `ValueError` naming it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from federated_core.integrity import file_sha256
from federated_core.models.checkpoint import state_dict_to_safetensors
from federated_core.models.registry import build_backbone

# User-facing ``model.backbone`` names -> `build_backbone` names.
BACKBONE_NAMES: dict[str, str] = {
    "tiny": "tiny",
    "mobilefacenet": "mobilefacenet",
    "iresnet18": "iresnet18",
    "iresnet34": "iresnet34",
    "inception-resnet-v1": "inception_resnet_v1",
    "inception_resnet_v1": "inception_resnet_v1",
}
# Per architecture, the parameter of the layer that outputs the embedding; its first dimension is
# ``embedding_dim`` (Linear weight ``[d, in]``, or the 1×1 Conv2d weight ``[d, 512, 1, 1]`` of
# MobileFaceNet). Checked against `build_backbone` in the tests.
EMBEDDING_KEYS: dict[str, str] = {
    "tiny": "embedding.weight",
    "mobilefacenet": "linear.weight",
    "iresnet18": "fc.weight",
    "iresnet34": "fc.weight",
    "inception_resnet_v1": "net.last_linear.weight",
}
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model", "backbone")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")
_DEFAULT_EMBEDDING_DIM = 512  # build_backbone's default, used when the file has no embedding key
_SHOWN = 5  # keys shown per list in error messages


class WeightsFileNotFoundError(FileNotFoundError, ValueError):
    """The weights file does not exist (both a FileNotFoundError and a ValueError)."""


def resolve_backbone_name(name: str) -> str:
    """The `build_backbone` name of a ``model.backbone`` name (`BACKBONE_NAMES`)."""
    if name not in BACKBONE_NAMES:
        raise ValueError(f"model.backbone must be one of {list(BACKBONE_NAMES)}, got {name!r}")
    return BACKBONE_NAMES[name]


def _torch_load(path: Path) -> Any:
    plain = (
        "it needs a plain state dict (a mapping name -> tensor, e.g. torch.save(model.state_dict(), path)); "
        "privaudit never unpickles arbitrary objects (torch.load(..., weights_only=True))"
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise ValueError(
                f"weights file {str(path)!r} holds objects other than tensors (it refers to {found.group(1)}): {plain}"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        raise ValueError(
            f"weights file {str(path)!r} could not be read as a PyTorch state dict "
            f"({reason.group(1).strip() if reason else 'refused by weights_only'}): {plain}"
        ) from None
    except Exception as err:  # torch raises many types for a corrupt or non-PyTorch file
        raise ValueError(f"weights file {str(path)!r} could not be read as a PyTorch file: {err!r}") from err


def _unwrap(path: Path, loaded: Any) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in ``loaded`` and the wrapper key it was found under (None: top level)."""
    if not isinstance(loaded, dict):
        raise ValueError(f"weights file {str(path)!r} holds a {type(loaded).__name__}, not a dict of tensors")
    key = None
    if not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        key = next((k for k in WRAPPER_KEYS if isinstance(loaded.get(k), dict)), None)
        if key is not None:
            loaded = loaded[key]
    where = f" (under key {key!r})" if key is not None else ""
    bad = [(k, v) for k, v in loaded.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        k, v = bad[0]
        raise ValueError(
            f"weights file {str(path)!r}{where} is not a dict of tensors: {k!r} holds a {type(v).__name__} "
            f"({len(bad)} such entries); a dict holding the state dict under one of {list(WRAPPER_KEYS)} "
            "is also accepted"
        )
    if not loaded:
        raise ValueError(f"weights file {str(path)!r}{where} holds no tensors")
    return dict(loaded), key


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a ``module.`` / ``_orig_mod.`` prefix shared by every key (repeatedly)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _STRIPPED_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """`read_state_dict` plus the wrapper key the state dict was found under (None: top level)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise ValueError(
            f"weights file {str(path)!r} has an unknown extension {path.suffix!r}; "
            f"allowed: {list(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}"
        )
    if not path.is_file():
        raise WeightsFileNotFoundError(f"weights file {str(path)!r} does not exist (or is not a file)")
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as err:  # SafetensorError, OSError, ...
            raise ValueError(f"weights file {str(path)!r} could not be read as safetensors: {err}") from err
    else:
        loaded = _torch_load(path)
    state, key = _unwrap(path, loaded)
    return _strip_prefixes(state), key


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors (name -> tensor, on CPU) of a weights file; see the module docstring for the
    accepted files.

    Raises:
        ValueError: naming the file — unknown extension (the allowed ones are listed), a pickle
            that ``weights_only`` refuses, a file that cannot be read, or not a dict of tensors.
            A missing file raises `WeightsFileNotFoundError` (a FileNotFoundError and a ValueError).
    """
    return _read_weights(path)[0]


def _adapt_keys(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """facenet-pytorch files for ``inception_resnet_v1`` name the network's keys without the
    wrapper's ``net.`` prefix and carry a classifier (``logits.*``), which is dropped, as
    `InceptionResnetV1Backbone.load_facenet_weights` does; insightface ``arcface_torch`` IResNet
    files (``conv1``, ``layer1``...) are renamed to privaudit's IResNet keys (`_insightface_key`)."""
    if name == "inception_resnet_v1" and not any(k.startswith("net.") for k in state):
        return {f"net.{k}": v for k, v in state.items() if not k.startswith("logits.")}
    if name.startswith("iresnet") and "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        return {_insightface_key(k): v for k, v in state.items()}
    return state


_INSIGHTFACE_STEM = {"conv1.": "stem.0.", "bn1.": "stem.1.", "prelu.": "stem.2."}


def _insightface_key(key: str) -> str:
    """insightface ``arcface_torch`` IResNet names -> privaudit's (the same layers, Deng et al.'s
    IResNet): the stem's ``conv1`` / ``bn1`` / ``prelu`` are ``stem.0`` / ``stem.1`` / ``stem.2``,
    ``layer<n>.`` is ``stages.<n-1>.``; ``bn2``, ``fc``, ``features`` keep their names."""
    for theirs, ours in _INSIGHTFACE_STEM.items():
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    match = re.match(r"layer(\d+)\.(.*)", key)
    return f"stages.{int(match.group(1)) - 1}.{match.group(2)}" if match else key


def _embedding_dim(path: Path, name: str, state: dict[str, torch.Tensor], requested: int | None) -> int:
    """``embedding_dim`` of the weights (first dimension of ``EMBEDDING_KEYS[name]``), checked
    against ``requested``; without that key, ``requested`` (or 512) and the fit check reports it."""
    key = EMBEDDING_KEYS[name]
    tensor = state.get(key)
    if tensor is None or tensor.dim() < 1:
        return _DEFAULT_EMBEDDING_DIM if requested is None else int(requested)
    found = int(tensor.shape[0])
    if requested is not None and int(requested) != found:
        raise ValueError(
            f"model.embedding_dim={requested} does not match the weights of {str(path)!r}: their "
            f"embedding layer {key!r} has shape {tuple(tensor.shape)}, i.e. embedding_dim={found}"
        )
    return found


def _shown(keys: list[str]) -> str:
    return f"{keys[:_SHOWN]}{' ...' if len(keys) > _SHOWN else ''} ({len(keys)} in all)"


def _check_fit(path: Path, name: str, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """ValueError listing missing / unexpected keys and shape mismatches between ``state`` and
    ``model``. A missing BatchNorm ``num_batches_tracked`` counter is not reported: torch sets it
    to 0 when loading a plain dict (it only matters for training with ``momentum=None``)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"missing keys {_shown(missing)}", f"unexpected keys {_shown(unexpected)}"]
    if mismatched:
        parts.append(f"shape mismatches {'; '.join(mismatched[:_SHOWN])} ({len(mismatched)} in all)")
    hints = []
    if mismatched:
        built = getattr(model, "build_config", {})
        hints.append(f"shapes depend on resolution={built.get('resolution')} and kwargs {built.get('kwargs')}")
    if missing and all(k.endswith((".running_mean", ".running_var")) for k in missing):
        hints.append("the file has no BatchNorm statistics: weights trained with norm='group' need norm='group'")
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise ValueError(f"weights of {str(path)!r} do not fit backbone {name!r}: {', '.join(parts)}{hint}")


def load_pretrained_backbone(
    name: str,
    weights: str | Path,
    embedding_dim: int | None = None,
    resolution: int = 112,
    **kwargs: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build backbone ``name`` (a `BACKBONE_NAMES` key) and load the weights file ``weights``
    into it, strictly (issue #17 part 2: a team's own backbone as φ0).

    Args:
        name: ``"tiny"``, ``"mobilefacenet"``, ``"iresnet18"``, ``"iresnet34"``,
            ``"inception-resnet-v1"`` (or ``"inception_resnet_v1"``).
        weights: a file `read_state_dict` accepts.
        embedding_dim: None to take it from the weights (first dimension of the embedding
            layer's weight, `EMBEDDING_KEYS`); otherwise it must equal that.
        resolution, kwargs: the other `build_backbone` arguments (e.g. ``norm``, ``dropout``).

    Returns:
        ``(model, info)``: the model on CPU in eval mode; ``info`` holds ``name`` (the registry
        name), ``embedding_dim``, ``resolution``, ``kwargs``, ``weights_path``,
        ``weights_sha256`` (`file_sha256`), ``weights_key`` (the wrapper key the state dict was
        under, or None) and ``num_tensors`` (tensors loaded into the model).

    Raises:
        ValueError: unknown name, a weight-source kwarg (``weights_path``/``pretrained``), any
            problem `read_state_dict` reports, an ``embedding_dim`` that contradicts the file
            (both numbers and the key named) or weights that do not fit the architecture.
    """
    registry_name = resolve_backbone_name(name)
    source_kwargs = sorted({"weights_path", "pretrained"} & set(kwargs))
    if source_kwargs:
        raise ValueError(f"{source_kwargs} cannot be combined with weights={str(weights)!r}: the weights come from it")
    path = Path(weights)
    state, key = _read_weights(path)
    state = _adapt_keys(registry_name, state)
    embedding_dim = _embedding_dim(path, registry_name, state, embedding_dim)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
        model = build_backbone(registry_name, embedding_dim=embedding_dim, resolution=resolution, **kwargs)
    _check_fit(path, name, model, state)
    model.load_state_dict(state, strict=True)
    info = {
        "name": registry_name,
        "embedding_dim": int(embedding_dim),
        "resolution": int(resolution),
        "kwargs": dict(kwargs),
        "weights_path": str(path),
        "weights_sha256": file_sha256(path),
        "weights_key": key,
        "num_tensors": len(state),
    }
    return model.to("cpu").eval(), info


def import_as_checkpoint(
    name: str,
    weights: str | Path,
    out_path: str | Path,
    embedding_dim: int | None = None,
    resolution: int = 112,
    **kwargs: Any,
) -> Path:
    """`load_pretrained_backbone`, saved with `state_dict_to_safetensors` as a privaudit
    checkpoint that `load_backbone` reads like a pre-trained φ0.

    The stored config adds ``source="imported"``, ``weights_sha256`` and ``weights_file`` (the
    file's name only: no absolute path goes into artifacts). Byte-reproducible: the same weights
    and arguments give the same bytes.
    """
    model, info = load_pretrained_backbone(name, weights, embedding_dim, resolution, **kwargs)
    config = {"source": "imported", "weights_sha256": info["weights_sha256"], "weights_file": Path(weights).name}
    return state_dict_to_safetensors(out_path, model, config)
