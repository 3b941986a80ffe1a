"""The method protocol: every federated method is a few functions over explicit state and
explicit messages (DESIGN §3), so the same code runs in the in-process engine, on Flower and on
batched clients.

A method object has

* ``name`` (its registry name) and ``phases: tuple[str, ...]`` (most ``("train",)``; PrivacyFace
  ``("clusters", "train")``: every phase of a round is one exchange);
* ``init(global_model, config, rng) -> ServerState`` — server side, once. ``global_model`` is a
  `GlobalModel` (the initial backbone and its build spec), ``config`` the `FederatedConfig`,
  ``rng`` a ``torch.Generator``;
* ``client_init(client_id, data, global_model, config, rng) -> ClientState`` — client side, once
  per client (e.g. initialise the private class embeddings ``W_k``; keep the local-training
  settings in ``meta["training"]``, see `local_training_config`);
* ``configure(phase, server_state, round, participants) -> list[Message]`` — server side, at the
  start of each phase: what the server sends to this phase's participants (Flower's
  ``configure_fit``). Receivers must be explicit party names among ``participants``;
* ``client_update(phase, client_state, broadcast, data, rng) -> (ClientState, list[Message])`` —
  client side: ``broadcast`` holds only the messages addressed to this client (from ``configure``
  and from earlier ``server_step`` broadcasts not yet delivered); the returned uploads must be sent
  by this client (``meta["client_id"]``) in the current round (``meta["round"]``; the engine keeps
  both keys of ``client_state.meta`` current before each call);
* ``server_step(phase, server_state, uploads) -> (ServerState, list[Message])`` — server side,
  after the phase: aggregate the uploads (incrementally: `FedAvg` is zero / accumulate(upload,
  weight) / finalize, so a shard of clients can be pre-reduced) and return messages to send now;
  they are delivered to their receivers' next ``client_update`` (often none: the next round's
  ``configure`` sends the new model).

Rules that keep the privacy audit honest: a method moves information between parties only in
messages (no attribute of the method object may carry data from one party to another; a process-
local scratch model that is fully overwritten from a message, like `BackboneWorkspace`, is fine);
client and server state are plain tensors + JSON-able metadata; a client reads only its own state,
its own data and its broadcast. Tag every message with the DP event of the noise it carries
(``None`` for no noise; raw private data such as class centers carry
``accountants.NonPrivateEvent()``, see `non_private_event`).

The global backbone lives in the server state under the tensor-name prefix ``"backbone."`` (see
`BACKBONE_PREFIX`); the engine reads it with `Method.global_backbone_state` for evaluation and the
final checkpoint. `Method.private_state` tells the engine which client tensors are private ground
truth to save for the attacks (default: all of them, with ``meta["row_identities"]`` naming the
identity of each row of 2-d tensors).

A short example — FedAvg of the backbone with a private linear head, written from this protocol
alone (`federated_core.methods.fedpe` is the full version)::

    from federated_core.engine.messages import SERVER, make_message, client_party
    from federated_core.methods.base import (BackboneMethod, FedAvg, register_method)

    @register_method("my-fedavg")
    class MyFedAvg(BackboneMethod):
        phases = ("train",)

        def client_init(self, client_id, data, global_model, config, rng):
            state = self.base_client_state(client_id, data, config)
            state.tensors["head"] = torch.randn(data.num_classes, global_model.spec["embedding_dim"],
                                                generator=rng) * 0.01
            return state

        def configure(self, phase, server_state, round, participants):
            return [self.backbone_broadcast(server_state, round, phase, participants)]

        def client_update(self, phase, client_state, broadcast, data, rng):
            backbone = self.workspace.load(self.find(broadcast, "backbone"))   # the global model
            ...  # build model(x, y) -> per-example losses over backbone + head; train_local(...)
            up = self.backbone_upload(client_state, backbone, phase, event=result.event,
                                      num_samples=len(data))
            return new_state, [up]

        def server_step(self, phase, server_state, uploads):
            avg = FedAvg()
            for m in uploads:
                if m.kind == "backbone":
                    avg.accumulate(m.tensors, weight=m.meta["num_samples"])
            return self.with_backbone(server_state, avg.finalize()), []

Register a method by decorating its class with ``@register_method("name", **default_params)``
in a module of `federated_core.methods`; `get_method(name, **hyperparams)` finds it (every
submodule of the package is imported on first use).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping, overload

import torch
from torch import nn

from federated_core.engine.config import FederatedConfig, local_training_config
from federated_core.engine.messages import SERVER, Message, client_party, make_message
from federated_core.engine.state import ClientData, ClientState, ServerState

BACKBONE_PREFIX = "backbone."


@dataclass
class GlobalModel:
    """The initial global model given to ``init``/``client_init``.

    Attributes:
        backbone: the module (CPU, eval mode).
        spec: its `build_backbone` arguments ``{"name", "embedding_dim", "resolution", "kwargs"}``
            so that any party can rebuild the architecture and load weights received in a message.
    """

    backbone: nn.Module
    spec: dict[str, Any]


class FedAvg:
    """Incremental weighted average of named tensors (McMahan et al. 2017; FedGC Alg. 1 line 11:
    ``θ = Σ_k (n_k / n) θ_k``).

    ``zero`` / ``accumulate(tensors, weight)`` / ``merge(other)`` / ``finalize()``. Floating-point
    tensors are averaged with float64 accumulators; integer tensors (e.g. BatchNorm's
    ``num_batches_tracked``) take the maximum. Accumulation follows call order, so the engine's
    sorted client order makes the result deterministic.
    """

    def __init__(self) -> None:
        self.zero()

    def zero(self) -> "FedAvg":
        self._sums: dict[str, torch.Tensor] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self.total_weight = 0.0
        self.count = 0
        return self

    def accumulate(self, tensors: Mapping[str, torch.Tensor], weight: float) -> None:
        weight = float(weight)
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        names = list(tensors.keys())
        if self.count and set(names) != set(self._sums):
            missing = sorted(set(self._sums) ^ set(names))[:5]
            raise ValueError(f"every accumulated upload must hold the same tensors; these differ: {missing}")
        for name in names:
            t = tensors[name]
            if t.is_floating_point():
                if name in self._sums:
                    self._sums[name].add_(t.detach().to(self._sums[name].device), alpha=weight)
                else:
                    self._sums[name] = t.detach().to(torch.float64) * weight
            else:
                v = t.detach().clone()
                self._sums[name] = v if name not in self._sums else torch.maximum(self._sums[name], v)
            self._dtypes[name] = t.dtype
        self.total_weight += weight
        self.count += 1

    def merge(self, other: "FedAvg") -> None:
        """Add a pre-reduced shard (same semantics as accumulating its uploads here)."""
        if other.count == 0:
            return
        for name, value in other._sums.items():
            if name not in self._sums:
                self._sums[name] = value.clone()
            elif value.is_floating_point():
                self._sums[name] += value
            else:
                self._sums[name] = torch.maximum(self._sums[name], value)
            self._dtypes[name] = other._dtypes[name]
        self.total_weight += other.total_weight
        self.count += other.count

    def finalize(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise ValueError("FedAvg.finalize() with nothing accumulated: no client upload reached the server")
        out = {}
        for name, value in self._sums.items():
            if value.is_floating_point():
                out[name] = (value / self.total_weight).to(self._dtypes[name])
            else:
                out[name] = value.to(self._dtypes[name])
        return out


class BackboneWorkspace:
    """A process-local scratch backbone, rebuilt only when the architecture changes and fully
    overwritten (`load_state_dict(strict=True)`) from each received state dict. It carries no
    information between parties: every load replaces all parameters and buffers."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._model: nn.Module | None = None
        self._device: torch.device | None = None
        self._targets: dict[str, torch.Tensor] = {}

    def build(self, spec: Mapping[str, Any], device: str | torch.device = "cpu") -> nn.Module:
        from federated_core.models import build_backbone

        key = repr(sorted((k, repr(v)) for k, v in spec.items()))
        device = torch.device(device)
        if self._model is None or self._key != key:
            with torch.random.fork_rng(devices=[]):  # weights are overwritten; keep global RNG untouched
                self._model = build_backbone(
                    spec["name"],
                    embedding_dim=spec["embedding_dim"],
                    resolution=spec["resolution"],
                    **spec.get("kwargs", {}),
                )
            self._key, self._device = key, None
        if self._device != device:
            self._model.to(device)
            self._device = device
            self._targets = dict(self._model.state_dict(keep_vars=True))
        return self._model

    def load(self, message: Message, device: str | torch.device = "cpu") -> nn.Module:
        """The backbone described by a ``"backbone"`` message (spec in ``meta["spec"]``), on
        ``device``: every parameter and buffer is overwritten from the message (strict)."""
        if message.kind != "backbone":
            raise ValueError(f"expected a 'backbone' message, got kind {message.kind!r}")
        model = self.build(message.meta["spec"], device)
        tensors = dict(message.tensors)
        if tensors.keys() != self._targets.keys():
            missing = sorted(set(self._targets) ^ set(tensors))[:5]
            raise ValueError(f"the backbone message does not match the architecture; differing entries: {missing}")
        with torch.no_grad():
            for name, target in self._targets.items():
                source = tensors[name]
                if source.shape != target.shape:
                    raise ValueError(
                        f"backbone entry {name!r} has shape {tuple(source.shape)}, expected {tuple(target.shape)}"
                    )
                target.copy_(source, non_blocking=True)
        return model


class Method:
    """Base class of a federated method (see the module docstring for the protocol)."""

    name: str = ""
    phases: ClassVar[tuple[str, ...]] = ("train",)
    #: The message kinds a client may upload, per phase: ``{phase: (kind, ...)}``. The engine
    #: rejects any other upload before ``server_step`` (`federated_core.engine.validation`).
    #: None (the default): not declared; `upload_kinds` says what is accepted then.
    client_upload_kinds: ClassVar[Mapping[str, tuple[str, ...]] | None] = None
    #: The hyper-parameters `get_method` built the instance with (unset on a direct construction).
    _hyperparameters: dict[str, Any]

    # -- the protocol --------------------------------------------------------------------------
    def init(self, global_model: GlobalModel, config: FederatedConfig, rng: torch.Generator) -> ServerState:
        raise NotImplementedError

    def client_init(
        self,
        client_id: int,
        data: ClientData,
        global_model: GlobalModel,
        config: FederatedConfig,
        rng: torch.Generator,
    ) -> ClientState:
        raise NotImplementedError

    def configure(self, phase: str, server_state: ServerState, round: int, participants: list[str]) -> list[Message]:
        raise NotImplementedError

    def client_update(
        self,
        phase: str,
        client_state: ClientState,
        broadcast: list[Message],
        data: ClientData,
        rng: torch.Generator,
    ) -> tuple[ClientState, list[Message]]:
        raise NotImplementedError

    def server_step(
        self, phase: str, server_state: ServerState, uploads: list[Message]
    ) -> tuple[ServerState, list[Message]]:
        raise NotImplementedError

    # -- what the engine reads -------------------------------------------------------------------
    def global_backbone_state(self, server_state: ServerState) -> dict[str, torch.Tensor]:
        """The global backbone's state dict (tensors under `BACKBONE_PREFIX`)."""
        state = server_state.with_prefix(BACKBONE_PREFIX)
        if not state:
            raise ValueError(
                f"method {self.name!r} keeps no global backbone under {BACKBONE_PREFIX!r} in its server state"
            )
        return state

    def upload_kinds(self, phase: str) -> frozenset[str] | None:
        """The kinds the server accepts from a client in ``phase`` (`client_upload_kinds` when
        declared; a phase it does not list accepts nothing). None: any registered kind."""
        if self.client_upload_kinds is None:
            return None
        return frozenset(self.client_upload_kinds.get(phase, ()))

    def private_state(self, client_state: ClientState) -> dict[str, torch.Tensor]:
        """Client tensors that are private ground truth (saved for the attacks, never sent)."""
        return dict(client_state.tensors)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able), recorded in the run's metrics; for a method with
        fidelity presets also every preset-controlled value as resolved, ``fidelity`` and
        ``fidelity_deviations`` (see `federated_core.methods.fidelity`)."""
        params = dict(getattr(self, "_hyperparameters", {}))
        resolved = getattr(self, "_fidelity_values", None)
        if resolved is not None:
            params.update(resolved)
            params["fidelity"] = self.fidelity
            params["fidelity_deviations"] = {k: dict(v) for k, v in self.fidelity_deviations.items()}
        return params

    # -- fidelity presets -----------------------------------------------------------------------
    fidelities: ClassVar[tuple[str, ...]] = ("default",)

    def apply_fidelity(
        self,
        fidelity: str,
        given: Mapping[str, Any],
        defaults: Mapping[str, Any],
        presets: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Resolve the preset-controlled constructor arguments ``given`` (``UNSET`` = not passed)
        under ``fidelity`` (`federated_core.methods.fidelity.resolve_fidelity`), remember the
        choice and the deviations for `hyperparameters`, and return the resolved values."""
        from federated_core.methods.fidelity import resolve_fidelity

        resolved, deviations = resolve_fidelity(
            self.name or type(self).__name__, fidelity, self.fidelities, given, defaults, presets
        )
        self.fidelity, self.fidelity_deviations, self._fidelity_values = fidelity, deviations, dict(resolved)
        return resolved

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        """One line on what ``fidelity`` means for registered name ``name`` (see `fidelity_note`)."""
        return f"{name}: this package's implementation; no paper or official-code preset exists."

    # -- helpers for subclasses --------------------------------------------------------------------
    @overload
    @staticmethod
    def find(broadcast: Iterable[Message], kind: str, required: Literal[True] = ...) -> Message: ...
    @overload
    @staticmethod
    def find(broadcast: Iterable[Message], kind: str, required: bool) -> Message | None: ...
    @staticmethod
    def find(broadcast: Iterable[Message], kind: str, required: bool = True) -> Message | None:
        """The single message of ``kind`` in ``broadcast`` (None if absent and not required)."""
        found = [m for m in broadcast if m.kind == kind]
        if len(found) > 1:
            raise ValueError(f"expected at most one {kind!r} message, got {len(found)}")
        if not found:
            if required:
                raise ValueError(
                    f"expected a {kind!r} message in the broadcast, got kinds {[m.kind for m in broadcast]}"
                )
            return None
        return found[0]


class BackboneMethod(Method):
    """Base of methods that FedAvg a shared backbone: keeps it in the server state under
    ``"backbone."`` and offers the broadcast/upload helpers."""

    def __init__(self) -> None:
        self.workspace = BackboneWorkspace()

    def init(self, global_model: GlobalModel, config: FederatedConfig, rng: torch.Generator) -> ServerState:
        state = {BACKBONE_PREFIX + k: v.detach().cpu().clone() for k, v in global_model.backbone.state_dict().items()}
        return ServerState(state, {"spec": dict(global_model.spec), "method": self.name})

    def upload_kinds(self, phase: str) -> frozenset[str] | None:
        """`Method.upload_kinds` when `client_upload_kinds` is declared. Otherwise derived from the
        attributes the methods written before that declaration carry, in every phase alike:
        ``"backbone"``, plus ``"class_centers"`` when ``uploads_centers`` (shared centers,
        FedFace, FedGC), the ``release_kind`` when set (PrivacyFace's clusters phase),
        ``"backbone_gradient"`` when ``aggregation == "fedsgd"`` (PrivacyFace FedSGD) and
        ``"public_class_embeddings"`` when ``public_data`` (FedFR's Φ)."""
        if self.client_upload_kinds is not None:
            return super().upload_kinds(phase)
        kinds = {"backbone"}
        if getattr(self, "uploads_centers", False) is True:
            kinds.add("class_centers")
        release = getattr(self, "release_kind", None)
        if isinstance(release, str):
            kinds.add(release)
        if getattr(self, "aggregation", None) == "fedsgd":
            kinds.add("backbone_gradient")
        if getattr(self, "public_data", False) is True:
            kinds.add("public_class_embeddings")
        return frozenset(kinds)

    @staticmethod
    def with_backbone(server_state: ServerState, backbone_state: Mapping[str, torch.Tensor]) -> ServerState:
        tensors = {k: v for k, v in server_state.tensors.items() if not k.startswith(BACKBONE_PREFIX)}
        tensors.update({BACKBONE_PREFIX + k: v for k, v in backbone_state.items()})
        return ServerState(tensors, server_state.meta)

    def backbone_broadcast(self, server_state: ServerState, round: int, phase: str, participants: list[str]) -> Message:
        """One ``"backbone"`` message from the server to every participant."""
        return make_message(
            "backbone",
            SERVER,
            tuple(participants),
            round,
            phase,
            server_state.with_prefix(BACKBONE_PREFIX),
            meta={"spec": server_state.meta["spec"]},
        )

    @staticmethod
    def base_client_state(client_id: int, data: ClientData, config: FederatedConfig) -> ClientState:
        """A client state with the engine's keys and the local-training settings."""
        return ClientState(
            {},
            {
                "client_id": int(client_id),
                "round": 0,
                "row_identities": list(data.identities),
                "training": local_training_config(config, len(data)).to_dict(),
            },
        )

    @staticmethod
    def party(client_state: ClientState) -> str:
        return client_party(int(client_state.meta["client_id"]))

    def backbone_upload(
        self,
        client_state: ClientState,
        backbone: nn.Module,
        phase: str,
        event: Any,
        num_samples: int,
        spec: Mapping[str, Any] | None = None,
    ) -> Message:
        """A client's ``"backbone"`` upload to the server (``meta["num_samples"]`` = n_k, the
        FedAvg weight of FedGC Alg. 1 line 11)."""
        return make_message(
            "backbone",
            self.party(client_state),
            (SERVER,),
            int(client_state.meta["round"]),
            phase,
            backbone.state_dict(),
            event=event,
            meta={"num_samples": int(num_samples), **({"spec": dict(spec)} if spec else {})},
        )


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, tuple[type, dict[str, Any]]] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_DISCOVERED = False


def register_method(name: str, **defaults: Any) -> Callable[[type], type]:
    """Class decorator: register ``cls`` under ``name`` with default hyper-parameters
    (``get_method(name, **params)`` calls ``cls(**{**defaults, **params})``). One class may be
    registered under several names (variants)."""
    if not isinstance(name, str) or not name or name != name.strip().lower():
        raise ValueError(f"name must be a non-empty lower-case string, got {name!r}")

    def decorate(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name][0].__qualname__ != cls.__qualname__:
            raise ValueError(f"method name {name!r} is already registered by {_REGISTRY[name][0].__qualname__}")
        _REGISTRY[name] = (cls, dict(defaults))
        return cls

    return decorate


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import importlib
    import pkgutil

    import federated_core.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = f"{package.__name__}.{info.name}"
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - reported when a name is not found
            _IMPORT_ERRORS[module] = f"{type(exc).__name__}: {exc}"
    _DISCOVERED = True


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    _discover()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (a `ValueError` listing the names if there is none)."""
    _discover()
    if name not in _REGISTRY:
        extra = ""
        if _IMPORT_ERRORS:
            extra = "; modules that failed to import: " + "; ".join(f"{k} ({v})" for k, v in _IMPORT_ERRORS.items())
        raise ValueError(f"method must be one of {sorted(_REGISTRY)}, got {name!r}{extra}")
    return _REGISTRY[name][0]


def get_method(name: str, **hyperparams: Any) -> Method:
    """Instantiate the method registered as ``name`` with ``hyperparams`` over its defaults.

    ``fidelity`` (see `federated_core.methods.fidelity`) is checked here first, so that an
    unsupported value's error names the registered method."""
    cls = method_class(name)
    defaults = _REGISTRY[name][1]
    params = {**defaults, **hyperparams}
    if "fidelity" in params:
        from federated_core.methods.fidelity import check_fidelity

        check_fidelity(name, params["fidelity"], tuple(getattr(cls, "fidelities", ("default",))))
    signature = inspect.signature(cls.__init__)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    allowed = [p for p in signature.parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown and not accepts_any:
        raise ValueError(f"method {name!r} takes no hyper-parameter(s) {unknown}; allowed: {sorted(allowed)}")
    method = cls(**params)
    method.name = name
    method._hyperparameters = {k: v for k, v in params.items()}
    return method
