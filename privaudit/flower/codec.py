"""The codec between our `Message` (and a logical client's `ClientState`) and Flower's records.

A message ``m`` stored under the prefix ``p`` of a Flower ``RecordDict`` is two records:

* ``"<p>.h"``: a ``ConfigRecord`` whose ``"json"`` entry holds the header as JSON: ``kind``,
  ``sender``, ``receivers``, ``round``, ``phase``, ``event`` (the DP event's ``to_dict()`` or
  null), ``meta`` and ``names`` (the tensor names in order);
* ``"<p>.t"``: an ``ArrayRecord`` with one ``Array`` per tensor. The array's bytes are the
  tensor's own memory (``stype`` `RAW_STYPE`, ``dtype`` torch's name such as ``"float32"``), so
  decoding gives the tensor back bit for bit, for every dtype torch has (bfloat16 included).

A client state is stored the same way (``"<p>.h"`` holds its ``meta``). Anything that does not
decode (a missing record, a wrong dtype, a size that does not match the shape, bad JSON) raises
`CodecError` naming the record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from federated_core.engine.messages import Message, event_from_dict, event_to_dict
from federated_core.engine.state import ClientState
from federated_core.engine.wire import WIRE_DTYPES

RAW_STYPE = "privaudit.torch-raw"


class CodecError(ValueError):
    """A Flower record that does not decode into our `Message` or `ClientState`."""


def tensor_to_array(tensor: torch.Tensor) -> Array:
    """An ``Array`` holding ``tensor``'s bytes exactly (CPU, contiguous, any supported dtype)."""
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in WIRE_DTYPES:
        raise CodecError(f"tensors of dtype {name} cannot cross the wire; supported: {', '.join(WIRE_DTYPES)}")
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return Array(dtype=name, shape=tuple(int(s) for s in tensor.shape), stype=RAW_STYPE, data=data)


def array_to_tensor(array: Array, where: str) -> torch.Tensor:
    """The tensor of an ``Array`` made by `tensor_to_array` (``where`` names it in errors)."""
    if array.stype != RAW_STYPE:
        raise CodecError(f"{where}: array of stype {array.stype!r}, expected {RAW_STYPE!r}")
    dtype = WIRE_DTYPES.get(array.dtype)
    if dtype is None:
        raise CodecError(f"{where}: unknown dtype {array.dtype!r}")
    shape = tuple(int(s) for s in array.shape)
    numel = 1
    for size in shape:
        numel *= size
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(array.data) != numel * itemsize:
        raise CodecError(f"{where}: {len(array.data)} bytes for shape {shape} of {array.dtype} ({numel * itemsize})")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(bytearray(array.data), dtype=torch.uint8)
    return raw.view(dtype).reshape(shape).clone()


def tensors_to_record(tensors: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Named tensors as an ``ArrayRecord`` (bit-exact)."""
    record = ArrayRecord()
    for name, tensor in tensors.items():
        record[name] = tensor_to_array(tensor)
    return record


def record_to_tensors(record: ArrayRecord, names: list[str], where: str) -> dict[str, torch.Tensor]:
    """The tensors ``names`` (in that order) of an ``ArrayRecord`` of `tensors_to_record`."""
    if sorted(record.keys()) != sorted(names):
        raise CodecError(f"{where}: holds tensors {sorted(record.keys())}, its header names {sorted(names)}")
    return {name: array_to_tensor(record[name], f"{where}[{name!r}]") for name in names}


def _header(content: RecordDict, prefix: str) -> dict[str, Any]:
    key = f"{prefix}.h"
    record = content.config_records.get(key)
    if record is None or not isinstance(record.get("json"), str):
        raise CodecError(f"record {key!r} is missing or holds no 'json' header")
    try:
        header = json.loads(str(record["json"]))
    except json.JSONDecodeError as exc:
        raise CodecError(f"record {key!r}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CodecError(f"record {key!r}: header must be a JSON object, got {type(header).__name__}")
    return header


def _arrays(content: RecordDict, prefix: str) -> ArrayRecord:
    record = content.array_records.get(f"{prefix}.t")
    if record is None:
        raise CodecError(f"record {prefix + '.t'!r} is missing")
    return record


def put_message(content: RecordDict, prefix: str, message: Message) -> None:
    """Store ``message`` in ``content`` under ``prefix``."""
    header = {
        "kind": message.kind,
        "sender": message.sender,
        "receivers": list(message.receivers),
        "round": message.round,
        "phase": message.phase,
        "event": event_to_dict(message.event),
        "meta": message.meta,
        "names": list(message.tensors),
    }
    content[f"{prefix}.h"] = ConfigRecord({"json": json.dumps(header)})
    content[f"{prefix}.t"] = tensors_to_record(message.tensors)


def get_message(content: RecordDict, prefix: str) -> Message:
    """The `Message` stored under ``prefix`` by `put_message`."""
    header = _header(content, prefix)
    try:
        names = list(header["names"])
        tensors = record_to_tensors(_arrays(content, prefix), names, f"{prefix}.t")
        return Message(
            kind=header["kind"],
            sender=header["sender"],
            receivers=tuple(header["receivers"]),
            round=header["round"],
            phase=header["phase"],
            tensors=tensors,
            event=event_from_dict(header["event"]),
            meta=header["meta"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"message {prefix!r} does not decode: {type(exc).__name__}: {exc}") from exc


def put_state(content: RecordDict, prefix: str, state: ClientState) -> None:
    """Store a client state (tensors and JSON meta) under ``prefix``."""
    header = {"meta": state.meta, "names": list(state.tensors)}
    content[f"{prefix}.h"] = ConfigRecord({"json": json.dumps(header)})
    content[f"{prefix}.t"] = tensors_to_record(state.tensors)


def get_state(content: RecordDict, prefix: str) -> ClientState:
    """The `ClientState` stored under ``prefix`` by `put_state`."""
    header = _header(content, prefix)
    if not isinstance(header.get("names"), list) or not isinstance(header.get("meta"), dict):
        raise CodecError(f"state {prefix!r}: header needs 'names' (a list) and 'meta' (an object)")
    tensors = record_to_tensors(_arrays(content, prefix), header["names"], f"{prefix}.t")
    return ClientState(tensors, header["meta"])


def put_json(content: RecordDict, key: str, value: Any) -> None:
    """A JSON-able value as the ``ConfigRecord`` ``key`` (``{"json": ...}``)."""
    content[key] = ConfigRecord({"json": json.dumps(value)})


def get_json(content: RecordDict, key: str) -> Any:
    """The value `put_json` stored under ``key``."""
    record = content.config_records.get(key)
    if record is None or not isinstance(record.get("json"), str):
        raise CodecError(f"record {key!r} is missing or holds no 'json' entry")
    try:
        return json.loads(str(record["json"]))
    except json.JSONDecodeError as exc:
        raise CodecError(f"record {key!r} is not JSON ({exc})") from None
