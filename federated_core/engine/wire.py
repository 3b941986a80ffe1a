"""`WireLog`: the append-only record of every message of a run.

What each party could observe is a lookup in this log (`WireLog.observed_by`), which the privacy
ledger and the attacks read. On disk (``RUN/wire/``):

* ``index.json``: ``{"format": 2, "keep_tensors", "kinds": {kind: meaning}, "chunks": {file:
  {"sha256", "bytes"}}, "messages": [record, ...]}``: the meaning of every message kind the log
  holds (so a method's own kinds load in any process), the SHA-256 and size of every chunk file,
  and one record per message in send order: ``index, round, phase, kind, sender, receivers,
  event`` (the DP event's ``to_dict()`` or null), ``meta``, ``nbytes``, ``tensors`` (name ->
  ``{"shape", "dtype", "file", "key"}``; ``file`` is null when the payload was not kept) and
  ``rejected`` (null, or the reason the server rejected this upload before aggregation, see
  `federated_core.engine.validation`; a rejected message was still sent and observed).
* ``chunk-<first>-<last>.safetensors``: the tensors of messages ``first..last`` under the keys
  ``"<index>/<tensor name>"``. Chunks are written incrementally (one per `save` call, the engine
  saves after every round), so a long run never holds every payload in memory.

The folder holds no absolute path, timestamp or timing: the same messages give the same bytes.

A log loaded back (`WireLog.load`) gives messages whose ``tensors`` load lazily on access. Every
chunk it refers to must exist with the recorded size (checked by `load`) and SHA-256 (checked
before the first tensor is read from it); otherwise `WireLogIntegrityError` names the file.
With ``keep_tensors=False`` (benchmarks) only shapes, sizes and events are recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from federated_core.engine.messages import (
    MESSAGE_KINDS,
    SERVER,
    Message,
    check_party,
    event_from_dict,
    event_to_dict,
    register_message_kind,
)
from federated_core.integrity import file_sha256

WIRE_FORMAT_VERSION = 2
WIRE_DIRNAME = "wire"
INDEX_NAME = "index.json"

WIRE_DTYPES = {  # the tensor dtypes a message may carry, by name (also Flower's codec)
    str(d).removeprefix("torch."): d
    for d in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    )
}


_ITEMSIZE = {name: torch.empty((), dtype=dtype).element_size() for name, dtype in WIRE_DTYPES.items()}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class WireLogIntegrityError(ValueError):
    """A chunk file of a saved wire log is missing, truncated, or its bytes differ from the
    SHA-256 recorded in ``index.json``."""


class ChunkVerifier:
    """The recorded ``{"sha256", "bytes"}`` of each chunk of one wire folder; `verify` checks a
    chunk once (then remembers it) and raises `WireLogIntegrityError` naming the file."""

    def __init__(self, wire_dir: Path, chunks: Mapping[str, Mapping[str, Any]]) -> None:
        self.wire_dir = wire_dir
        self.chunks = {name: dict(info) for name, info in chunks.items()}
        self._verified: set[str] = set()
        self._present: set[str] = set()

    def check_present(self, name: str) -> Path:
        """The chunk's path, after checking it is recorded, exists and has the recorded size
        (checked once; `verify` checks the size again with the bytes)."""
        path = self.wire_dir / name
        if name in self._present:
            return path
        info = self.chunks.get(name)
        if info is None or not isinstance(info.get("sha256"), str):
            raise WireLogIntegrityError(f"wire chunk {str(path)!r} has no SHA-256 in {INDEX_NAME}")
        if not path.is_file():
            raise WireLogIntegrityError(f"wire chunk {str(path)!r} is missing")
        size = path.stat().st_size
        if size != info.get("bytes"):
            raise WireLogIntegrityError(
                f"wire chunk {str(path)!r} has {size} bytes, {INDEX_NAME} records {info.get('bytes')} (truncated or replaced)"
            )
        self._present.add(name)
        return path

    def verify(self, name: str) -> Path:
        """The chunk's path once its bytes match the recorded SHA-256."""
        if name not in self._verified:
            self._present.discard(name)
        path = self.check_present(name)
        if name not in self._verified:
            actual = file_sha256(path)
            if actual != self.chunks[name]["sha256"]:
                raise WireLogIntegrityError(
                    f"wire chunk {str(path)!r} has SHA-256 {actual}, {INDEX_NAME} records {self.chunks[name]['sha256']}"
                )
            self._verified.add(name)
        return path


class LazyTensors(Mapping):
    """Read-only name -> tensor mapping backed by a safetensors file; loads each tensor on access.

    ``file=None`` means the payload was not kept (``keep_tensors=False``): shapes and sizes are
    known, reading a tensor raises.
    """

    def __init__(
        self, file: Path | None, specs: dict[str, dict[str, Any]], verifier: ChunkVerifier | None = None
    ) -> None:
        self._file = file
        self._verifier = verifier
        self._specs = specs
        self._cache: dict[str, torch.Tensor] = {}
        total = 0
        for spec in specs.values():
            n = 1
            for size in spec["shape"]:
                n *= int(size)
            total += n * _ITEMSIZE[spec["dtype"]]
        self._nbytes = total

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._specs:
            raise KeyError(name)
        if name not in self._cache:
            if self._file is None:
                raise RuntimeError(
                    f"tensor {name!r} of this message was not kept (the run used keep_tensors=False); "
                    "only its shape and size are known"
                )
            if self._verifier is not None:
                self._verifier.verify(self._file.name)
            with safe_open(str(self._file), framework="pt") as f:
                self._cache[name] = f.get_tensor(self._specs[name]["key"])
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v["shape"]) for k, v in self._specs.items()}

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def kept(self) -> bool:
        return self._file is not None


def _replace_tensors(message: Message, tensors: Mapping[str, torch.Tensor]) -> Message:
    # Bypass __post_init__'s dict checks for lazy mappings: build through object.__new__.
    new = object.__new__(Message)
    for name in ("kind", "sender", "receivers", "round", "phase", "event", "meta"):
        object.__setattr__(new, name, getattr(message, name))
    object.__setattr__(new, "tensors", tensors)
    return new


class WireLog:
    """Append-only list of `Message` with observer views and byte counts.

    Args:
        keep_tensors: keep payloads (default). ``False`` records only metadata (benchmarks).
    """

    def __init__(self, keep_tensors: bool = True) -> None:
        self.keep_tensors = bool(keep_tensors)
        self._messages: list[Message] = []
        self._records: list[dict[str, Any] | None] = []  # saved record per message, None if unsaved
        self._rejected: list[str | None] = []
        self._chunks: dict[str, dict[str, Any]] = {}  # chunk file -> {"sha256", "bytes"}
        self._saved_dir: Path | None = None

    # ------------------------------------------------------------------ building
    def append(self, message: Message, rejected: str | None = None) -> int:
        """Record ``message``; returns its index. ``rejected``: the reason the server rejected
        this upload before aggregation (it was still sent and observed), or None."""
        if not isinstance(message, Message):
            raise ValueError(f"WireLog.append takes a Message, got {type(message).__name__}")
        if rejected is not None and (not isinstance(rejected, str) or not rejected):
            raise ValueError(f"rejected must be None or a non-empty reason string, got {rejected!r}")
        if self._messages and message.round < self._messages[-1].round:
            raise ValueError(
                f"messages must be appended in round order: got round {message.round} after round "
                f"{self._messages[-1].round}"
            )
        if not self.keep_tensors and isinstance(message.tensors, dict):
            specs = {
                k: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype), "key": None}
                for k, t in message.tensors.items()
            }
            message = _replace_tensors(message, LazyTensors(None, specs))
        self._messages.append(message)
        self._records.append(None)
        self._rejected.append(rejected)
        return len(self._messages) - 1

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[Message]:
        return iter(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: int) -> Message:
        return self._messages[index]

    def rejection(self, index: int) -> str | None:
        """Why the server rejected message ``index`` (None: not rejected)."""
        return self._rejected[index]

    def rejections(self) -> dict[int, str]:
        """Index -> reason of every rejected upload."""
        return {i: r for i, r in enumerate(self._rejected) if r is not None}

    def observed_by(self, party: str) -> list[Message]:
        """Messages ``party`` sent or received. The server receives every upload, so
        ``observed_by("server")`` is every message of a star-topology run."""
        check_party(party)
        return [m for m in self._messages if m.observed_by(party)]

    def sent_by(self, party: str) -> list[Message]:
        check_party(party)
        return [m for m in self._messages if m.sender == party]

    def kinds_sent_by(self, party: str) -> list[str]:
        """Sorted distinct kinds ``party`` sent."""
        return sorted({m.kind for m in self.sent_by(party)})

    def kinds_received_by(self, party: str) -> list[str]:
        check_party(party)
        return sorted({m.kind for m in self._messages if party in m.receivers})

    def parties(self) -> list[str]:
        names = {m.sender for m in self._messages}
        for m in self._messages:
            names.update(m.receivers)
        return sorted(names, key=lambda p: (p != SERVER, len(p), p))

    def rounds(self) -> list[int]:
        return sorted({m.round for m in self._messages})

    def bytes_per_round(self, party: str | None = None, per_receiver: bool = True) -> dict[int, int]:
        """Bytes sent per round by ``party`` (every party when ``None``).

        With ``per_receiver`` (default) a message counts once per receiver, i.e. the unicast
        traffic of a star network (a broadcast to 100 clients costs 100 copies); otherwise once.
        """
        if party is not None:
            check_party(party)
        out: dict[int, int] = {}
        for m in self._messages:
            if party is not None and m.sender != party:
                continue
            copies = len(m.receivers) if per_receiver else 1
            out[m.round] = out.get(m.round, 0) + m.nbytes * copies
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, Any]:
        """Per kind: message count, senders' roles, total payload bytes (one copy)."""
        kinds: dict[str, dict[str, Any]] = {}
        for m in self._messages:
            k = kinds.setdefault(m.kind, {"messages": 0, "bytes": 0, "sent_by": set()})
            k["messages"] += 1
            k["bytes"] += m.nbytes
            k["sent_by"].add("server" if m.sender == SERVER else "clients")
        return {k: {**v, "sent_by": sorted(v["sent_by"])} for k, v in sorted(kinds.items())}

    # ------------------------------------------------------------------ disk
    @staticmethod
    def _wire_dir(directory: str | Path) -> Path:
        directory = Path(directory)
        return directory if directory.name == WIRE_DIRNAME else directory / WIRE_DIRNAME

    def save(self, directory: str | Path, release_tensors: bool = True) -> Path:
        """Write the log under ``directory/wire/`` (incrementally: only messages not yet written
        there go to a new chunk). With ``release_tensors`` the in-memory payloads are replaced by
        lazy references to the written chunk. Returns the wire folder."""
        wire_dir = self._wire_dir(directory)
        wire_dir.mkdir(parents=True, exist_ok=True)
        if self._saved_dir is not None and self._saved_dir.resolve() != wire_dir.resolve():
            self._records = [None] * len(self._messages)  # a new place: write everything
        pending = [i for i, r in enumerate(self._records) if r is None]
        if pending:
            self._write_pending(wire_dir, pending, release_tensors)
        # every message has its record now: the pending ones were just written
        self._write_index(wire_dir)
        self._saved_dir = wire_dir
        self._remove_orphan_chunks(wire_dir)
        return wire_dir

    def _write_pending(self, wire_dir: Path, pending: list[int], release_tensors: bool) -> None:
        """Record messages ``pending`` and write their kept tensors to one new chunk file."""
        first, last = pending[0], pending[-1]
        chunk_name = f"chunk-{first:08d}-{last:08d}.safetensors"
        payload: dict[str, torch.Tensor] = {}
        storages: set[int] = set()
        written: dict[int, dict[str, Any]] = {}
        for i in pending:
            specs = self._tensor_specs(i, chunk_name, payload, storages)
            written[i] = self._records[i] = self._message_record(i, specs)
        if payload:
            self._write_chunk(wire_dir / chunk_name, payload)
        if release_tensors:
            verifier = ChunkVerifier(wire_dir, self._chunks)
            for i in pending:
                self._messages[i] = _replace_tensors(
                    self._messages[i],
                    _lazy_from_record(wire_dir, written[i], verifier),
                )

    def _tensor_specs(
        self, i: int, chunk_name: str, payload: dict[str, torch.Tensor], storages: set[int]
    ) -> dict[str, dict[str, Any]]:
        """Message ``i``'s tensor specs; its kept tensors are added to ``payload`` (under ``"i/name"``)."""
        m = self._messages[i]
        kept = self.keep_tensors and not (isinstance(m.tensors, LazyTensors) and not m.tensors.kept)
        specs: dict[str, dict[str, Any]] = {}
        for name in m.tensors.keys() if kept else m.shapes().keys():
            if kept:
                t = m.tensors[name].detach().to("cpu").contiguous()
                key = f"{i}/{name}"
                if t.numel() and t.untyped_storage().data_ptr() in storages:
                    t = t.clone()  # safetensors refuses tensors that share memory
                storages.add(t.untyped_storage().data_ptr())
                payload[key] = t
                specs[name] = {
                    "shape": list(t.shape),
                    "dtype": _dtype_name(t.dtype),
                    "file": chunk_name,
                    "key": key,
                }
            else:
                # not kept: append() made the payload a LazyTensors, or it was read back as one
                assert isinstance(m.tensors, LazyTensors)
                spec = m.tensors._specs[name]
                specs[name] = {"shape": list(spec["shape"]), "dtype": spec["dtype"], "file": None, "key": None}
        return specs

    def _message_record(self, i: int, specs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The index record of message ``i`` whose tensors are described by ``specs``."""
        m = self._messages[i]
        return {
            "index": i,
            "round": m.round,
            "phase": m.phase,
            "kind": m.kind,
            "sender": m.sender,
            "receivers": list(m.receivers),
            "event": event_to_dict(m.event),
            "meta": m.meta,
            "nbytes": m.nbytes,
            "tensors": specs,
            "rejected": self._rejected[i],
        }

    def _write_chunk(self, chunk_path: Path, payload: dict[str, torch.Tensor]) -> None:
        """Write ``payload`` atomically to ``chunk_path`` and record its SHA-256 and size."""
        tmp = chunk_path.with_suffix(".tmp")
        save_file(payload, str(tmp))
        self._chunks[chunk_path.name] = {"sha256": file_sha256(tmp), "bytes": tmp.stat().st_size}
        os.replace(tmp, chunk_path)

    def _write_index(self, wire_dir: Path) -> None:
        """Write ``index.json`` atomically, keeping only the chunks the records use."""
        records = cast(list[dict[str, Any]], self._records)
        kinds = {r["kind"]: MESSAGE_KINDS[r["kind"]] for r in records}
        used = sorted(self._used_chunks())
        self._chunks = {name: self._chunks[name] for name in used}
        index = {
            "format": WIRE_FORMAT_VERSION,
            "keep_tensors": self.keep_tensors,
            "kinds": kinds,
            "chunks": self._chunks,
            "messages": self._records,
        }
        tmp_index = wire_dir / (INDEX_NAME + ".tmp")
        tmp_index.write_text(json.dumps(index))
        os.replace(tmp_index, wire_dir / INDEX_NAME)

    def _used_chunks(self) -> set[str]:
        return {spec["file"] for r in self._records if r for spec in r["tensors"].values() if spec["file"]}

    def _remove_orphan_chunks(self, wire_dir: Path) -> None:
        used = self._used_chunks()
        for path in wire_dir.glob("chunk-*.safetensors"):
            if path.name not in used:
                path.unlink()

    @classmethod
    def load(cls, directory: str | Path, upto_round: int | None = None, verify_all: bool = False) -> "WireLog":
        """Read a saved log (``directory`` is the run folder or its ``wire/`` folder). Tensors load
        lazily. ``upto_round`` drops messages of later rounds (used by resume). ``verify_all``
        checks every chunk's SHA-256 now (`WireLogIntegrityError` naming the first bad one)
        instead of before each chunk's first read."""
        wire_dir = cls._wire_dir(directory)
        index_path = wire_dir / INDEX_NAME
        if not index_path.is_file():
            raise FileNotFoundError(f"no wire log at {str(wire_dir)!r} (missing {INDEX_NAME})")
        index = json.loads(index_path.read_text())
        if index.get("format") != WIRE_FORMAT_VERSION:
            raise ValueError(
                f"wire log format must be {WIRE_FORMAT_VERSION}, got {index.get('format')!r} in {str(index_path)!r} "
                "(format 1 logs carry no chunk checksums; re-run to write a verifiable log)"
            )
        log = cls(keep_tensors=bool(index.get("keep_tensors", True)))
        verifier = ChunkVerifier(wire_dir, index.get("chunks", {}))
        # a log describes the kinds it holds: a method's own kind loads without importing the method
        for kind, meaning in index.get("kinds", {}).items():
            if kind not in MESSAGE_KINDS:
                register_message_kind(kind, meaning)
        for record in index["messages"]:
            if upto_round is not None and record["round"] > upto_round:
                break
            message = _replace_tensors(
                Message(
                    kind=record["kind"],
                    sender=record["sender"],
                    receivers=tuple(record["receivers"]),
                    round=record["round"],
                    phase=record["phase"],
                    tensors={},
                    event=event_from_dict(record["event"]),
                    meta=record["meta"],
                ),
                _lazy_from_record(wire_dir, record, verifier),
            )
            log._messages.append(message)
            log._records.append(record)
            log._rejected.append(record.get("rejected"))
        log._chunks = {name: verifier.chunks[name] for name in sorted(log._used_chunks())}
        log._saved_dir = wire_dir
        if verify_all:
            for name in sorted(log._chunks):
                verifier.verify(name)
        return log


def _lazy_from_record(wire_dir: Path, record: dict[str, Any], verifier: ChunkVerifier) -> LazyTensors:
    files = {spec["file"] for spec in record["tensors"].values()}
    file = None
    if files and None not in files:
        if len(files) != 1:
            raise ValueError(f"message {record['index']} spreads over several chunk files: {sorted(files)}")
        file = wire_dir / files.pop()
        verifier.check_present(file.name)
    return LazyTensors(file, record["tensors"], verifier)
