"""The files a deployment's processes hand each other (the jobs for the ServerApp, its outcome for
the parent), read with ``torch.load(..., weights_only=True)``: only tensors, plain containers and
an explicit allowlist of privaudit's own data classes are ever rebuilt, never arbitrary code.

The allowlist is the data classes of the modules a job and an outcome are made of (configs, client
data, face sets, messages, DP events, states, the wire log), a few exception types, and
``pathlib``'s paths. A backbone crosses as its state dict and ``build_config`` and is rebuilt with
`federated_core.models.build_backbone` (bit for bit); an error of another type crosses as a
RuntimeError naming its type and message.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from privaudit.flower.codec import CodecError
from privaudit.flower.server_app import Outcome, RemoteClientError

_DATA_MODULES = (
    "federated_core.engine.config",
    "federated_core.engine.state",
    "federated_core.engine.messages",
    "federated_core.engine.wire",
    "federated_core.engine.simulation",
    "federated_core.data.faceset",
    "accountants.events",
    "privaudit.flower.server_app",
)
ERROR_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    RuntimeError,
    TimeoutError,
    KeyError,
    TypeError,
    OSError,
    FileNotFoundError,
    PermissionError,
    CodecError,
    RemoteClientError,
)


def _safe_classes() -> list[Any]:
    """The classes `load` may rebuild: the data classes defined in `_DATA_MODULES`, the error types,
    paths and ordered dicts."""
    import importlib

    classes: list[Any] = [OrderedDict, pathlib.PosixPath, pathlib.PurePosixPath, *ERROR_TYPES]
    for name in _DATA_MODULES:
        module = importlib.import_module(name)
        classes += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == name and not issubclass(c, BaseException)
        ]
    return classes


def save(obj: Any, path: Path) -> None:
    """Write ``obj`` for `load` (written to a temporary name, then renamed: never half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load(path: Path) -> Any:
    """Read a file `save` wrote, with ``weights_only=True`` and the allowlist of `_safe_classes`."""
    with torch.serialization.safe_globals(_safe_classes()):
        return torch.load(path, weights_only=True)


def portable_outcome(outcome: Outcome) -> Outcome:
    """``outcome`` as `load` can read it: each result's backbone as ``{"state", "spec"}``, an error
    not of `ERROR_TYPES` (or one that does not rebuild from its arguments) as a RuntimeError."""
    results = [
        dataclasses.replace(r, backbone={"state": dict(r.backbone.state_dict()), "spec": dict(r.backbone.build_config)})
        for r in outcome.results
    ]
    error = outcome.error
    if error is not None and not (type(error) in ERROR_TYPES and _rebuilds(error)):
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return Outcome(results, list(outcome.transports), error)


def _rebuilds(error: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(error))
    except (pickle.PicklingError, TypeError, AttributeError):
        return False
    return True


def restore_outcome(outcome: Outcome) -> Outcome:
    """The backbones of a `portable_outcome` rebuilt (CPU, eval mode, the same weights bit for bit)."""
    from federated_core.models import build_backbone

    results = []
    for r in outcome.results:
        spec = r.backbone["spec"]
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
            model = build_backbone(spec["name"], spec["embedding_dim"], spec["resolution"], **spec["kwargs"])
        model.load_state_dict(r.backbone["state"], strict=True)
        results.append(dataclasses.replace(r, backbone=model.eval()))
    return Outcome(results, outcome.transports, outcome.error)
