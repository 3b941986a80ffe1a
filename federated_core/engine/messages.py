"""Messages: the only thing that crosses between a client and the server (DESIGN §3).

A `Message` is a frozen record of named tensors with a kind tag, its sender and its explicit
receivers, the round and phase it belongs to, the DP event describing any noise it carries, and a
small JSON-able ``meta`` dict (e.g. the sample count FedAvg weights by). The in-process engine,
the wire log and a future Flower adapter move only messages, so the privacy audit can trust the
log: whatever a party could learn, it learnt from messages it observed.

Party names are ``"server"`` and ``"client:<id>"`` (``id`` a non-negative integer). Receivers are
always explicit party names, never a wildcard, so "who observed what" is a plain lookup.

Kinds are registered in `MESSAGE_KINDS` (kind -> one-line meaning). A method that needs a new kind
calls `register_message_kind` at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch

SERVER = "server"
_CLIENT_RE = re.compile(r"^client:(0|[1-9][0-9]*)$")

MESSAGE_KINDS: dict[str, str] = {
    "backbone": "a backbone's state dict as named tensors (global model down, local model up)",
    "class_centers": "a client's class embeddings W_k (rows = its local classes), raw unless an event says otherwise",
    "global_class_embeddings": "class embeddings of several clients broadcast by the server (rows tagged with their owner)",
    "cluster_centers": "centers of clusters of a client's class embeddings, without noise",
    "noisy_cluster_centers": "cluster centers released with Gaussian noise (PrivacyFace DPLC p-hat)",
    "noisy_class_centers": "class embeddings released with Gaussian noise (the naive DP baseline W-tilde)",
}


def register_message_kind(kind: str, meaning: str) -> None:
    """Add a message kind (a method's own payload type) with a one-line meaning.

    Registering the same kind twice with the same meaning is a no-op; a different meaning is an
    error (two methods must not give one kind two meanings).
    """
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        raise ValueError(f"kind must be a lower-case identifier like 'class_centers', got {kind!r}")
    if not isinstance(meaning, str) or not meaning.strip():
        raise ValueError(f"meaning of kind {kind!r} must be a non-empty string, got {meaning!r}")
    if kind in MESSAGE_KINDS and MESSAGE_KINDS[kind] != meaning:
        raise ValueError(
            f"message kind {kind!r} is already registered with meaning {MESSAGE_KINDS[kind]!r}; "
            f"choose another name for {meaning!r}"
        )
    MESSAGE_KINDS[kind] = meaning


def client_party(client_id: int) -> str:
    """The party name of client ``client_id``: ``"client:<id>"``."""
    if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
        raise ValueError(f"client_id must be an integer >= 0, got {client_id!r}")
    return f"client:{client_id}"


def is_party(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and (name == SERVER or _CLIENT_RE.match(name) is not None)


def check_party(name: object, what: str = "party") -> str:
    if not is_party(name):
        raise ValueError(f"{what} must be 'server' or 'client:<id>' with id an integer >= 0, got {name!r}")
    return name


def client_id_of(party: str) -> int:
    """The integer id of a ``"client:<id>"`` party name."""
    m = _CLIENT_RE.match(party) if isinstance(party, str) else None
    if m is None:
        raise ValueError(f"party must be a client name 'client:<id>', got {party!r}")
    return int(m.group(1))


def tensors_nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Payload size in bytes (lazy mappings answer from their index without loading)."""
    known = getattr(tensors, "nbytes", None)
    if isinstance(known, int):
        return known
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


@dataclass(frozen=True)
class Message:
    """One transmission: named tensors sent by ``sender`` to each of ``receivers``.

    Attributes:
        kind: a key of `MESSAGE_KINDS`.
        sender: ``"server"`` or ``"client:<id>"``.
        receivers: explicit party names (never a wildcard), at least one.
        round: communication round (1-based; 0 is reserved for set-up traffic).
        phase: the method phase this message belongs to (e.g. ``"train"``, ``"clusters"``).
        tensors: name -> tensor. In memory a dict of CPU tensors; a message read back from a saved
            `WireLog` holds a lazy mapping that loads each tensor on first access.
        event: the `accountants` DP event of the noise this message carries (``None`` when no
            noise was added; raw class centers carry ``accountants.NonPrivateEvent()``).
        meta: small JSON-able facts that cross the wire with the tensors (e.g. ``num_samples``).
    """

    kind: str
    sender: str
    receivers: tuple[str, ...]
    round: int
    phase: str
    tensors: Mapping[str, torch.Tensor]
    event: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MESSAGE_KINDS:
            raise ValueError(
                f"kind must be a registered message kind ({', '.join(sorted(MESSAGE_KINDS))}), got {self.kind!r}; "
                "a method adds its own with register_message_kind()"
            )
        check_party(self.sender, "sender")
        if isinstance(self.receivers, str) or not isinstance(self.receivers, tuple) or not self.receivers:
            raise ValueError(f"receivers must be a non-empty tuple of party names, got {self.receivers!r}")
        for r in self.receivers:
            check_party(r, "each receiver")
        if len(set(self.receivers)) != len(self.receivers):
            raise ValueError(f"receivers must not repeat a party, got {self.receivers!r}")
        if self.sender in self.receivers:
            raise ValueError(f"a message is not sent to its own sender {self.sender!r}")
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 0:
            raise ValueError(f"round must be an integer >= 0, got {self.round!r}")
        if not isinstance(self.phase, str) or not self.phase:
            raise ValueError(f"phase must be a non-empty string, got {self.phase!r}")
        if not isinstance(self.tensors, Mapping):
            raise ValueError(f"tensors must be a mapping name -> tensor, got {type(self.tensors).__name__}")
        if isinstance(self.tensors, dict):
            for name, t in self.tensors.items():
                if not isinstance(name, str) or not name:
                    raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
                if not isinstance(t, torch.Tensor):
                    raise ValueError(f"tensor {name!r} must be a torch.Tensor, got {type(t).__name__}")
        if self.event is not None and not callable(getattr(self.event, "to_dict", None)):
            raise ValueError(f"event must be None or an accountants DP event with .to_dict(), got {self.event!r}")
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON-serialisable, got {self.meta!r}: {exc}") from None

    @property
    def nbytes(self) -> int:
        """Bytes of tensor payload (one copy; multiply by len(receivers) for unicast cost)."""
        return tensors_nbytes(self.tensors)

    def observed_by(self, party: str) -> bool:
        """Whether ``party`` sent or received this message."""
        return party == self.sender or party in self.receivers

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = getattr(self.tensors, "shapes", None)
        if callable(shapes):
            return shapes()
        return {k: tuple(v.shape) for k, v in self.tensors.items()}

    def __repr__(self) -> str:  # short: tensors as shapes
        return (
            f"Message(kind={self.kind!r}, sender={self.sender!r}, receivers={_short(self.receivers)}, "
            f"round={self.round}, phase={self.phase!r}, tensors={self.shapes()}, "
            f"event={None if self.event is None else type(self.event).__name__}, nbytes={self.nbytes})"
        )


def _short(receivers: tuple[str, ...]) -> str:
    if len(receivers) <= 4:
        return repr(receivers)
    return f"({receivers[0]!r}, {receivers[1]!r}, ... {len(receivers)} parties)"


def make_message(
    kind: str,
    sender: str,
    receivers: tuple[str, ...] | list[str],
    round: int,
    phase: str,
    tensors: Mapping[str, torch.Tensor],
    event: Any = None,
    meta: dict[str, Any] | None = None,
) -> Message:
    """Build a `Message`, copying every tensor to a detached contiguous CPU tensor.

    The copy matters: a message must never alias a live parameter of the sender (a later local
    step would otherwise change what the log says was sent).
    """
    payload = cpu_copies(tensors)
    return Message(
        kind=kind,
        sender=sender,
        receivers=tuple(receivers),
        round=round,
        phase=phase,
        tensors=payload,
        event=event,
        meta=dict(meta or {}),
    )


def cpu_copies(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Independent contiguous CPU copies of ``tensors`` (same keys, same order). Tensors on an
    accelerator are gathered per dtype into one buffer and moved with one transfer, instead of
    one synchronising transfer per tensor."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[tuple[torch.device, torch.dtype], list[str]] = {}
    for name, t in tensors.items():
        if t.device.type == "cpu":
            out[name] = t.detach().clone().contiguous()
        else:
            groups.setdefault((t.device, t.dtype), []).append(name)
    for names in groups.values():
        flat = torch.cat([tensors[n].detach().reshape(-1) for n in names]).cpu()
        offset = 0
        for n in names:
            count = tensors[n].numel()
            out[n] = flat[offset : offset + count].view(tensors[n].shape).clone()
            offset += count
    return {name: out[name] for name in tensors}


def event_to_dict(event: Any) -> dict[str, Any] | None:
    return None if event is None else event.to_dict()


def event_from_dict(d: dict[str, Any] | None) -> Any:
    """Rebuild a DP event with `accountants.event_from_dict` (imported lazily: accountants sits
    below federated_core and is optional for runs that carry no events)."""
    if d is None:
        return None
    from accountants import event_from_dict as _from_dict

    return _from_dict(d)


def non_private_event() -> Any:
    """``accountants.NonPrivateEvent()``: the event of raw (noise-free) private data such as
    class centers."""
    from accountants import NonPrivateEvent

    return NonPrivateEvent()
