"""`wiretap(out_dir)`: a Flower client-side Mod that records what a client receives and sends.

Add it to any Flower app's ``ClientApp(mods=[wiretap("audit/")])``. For every message the client
receives and every reply it sends it writes our `Message` (sender ``"server"`` or the client's
party ``"client:<partition-id>"`` — its node id where there is no partition id —, receivers,
round, phase = the Flower message type's category, tensors, the config and metric records in
``meta["flower"]``) and rebuilds ``out_dir/wire/`` (`federated_core.engine.wire.WireLog`), so
`privaudit attack out_dir` and the ledger read it unchanged. The Mod only reads: the message
and the reply pass through untouched (the same objects, the same bytes).

Kinds: a message with one ``ArrayRecord`` is a ``backbone`` (its arrays under their own names;
arrays named with ``head_prefix`` go to a ``flower_arrays`` message beside it, since a classifier
head is no backbone); other arrays are ``flower_arrays``; a message without arrays is
``flower_records`` (the bytes values of its config records as uint8 tensors, e.g. SecAgg+'s
masked vectors). Positional arrays (``"0"``, ``"1"``, ...: a legacy NumPyClient's list) take the
names ``array_names`` gives. The round is the ``"server-round"`` of a config record (Flower's strategies
send it), else the message's numeric ``group_id``, else the count of train messages so far.

Several ClientApp processes write to one folder: each message is spooled to its own file
(``out_dir/wiretap/``) and ``wire/`` is rebuilt from the spool under a file lock, in the order
round, phase, received-before-sent, client. What privaudit's attacks need beside the wire comes
from the app: ``ground_truth(context)`` -> ``{"identities": [...], "num_images": n}`` of the
client (its partition, observed by no party; with ``images_per_identity`` and ``start_index`` when
``data_spec``'s generator renders its images), ``data_spec`` (how to render faces of an identity,
as `privaudit train` writes it) and ``model_spec`` (a privaudit backbone the model's arrays load
into: ``{"name", "embedding_dim", "resolution", "kwargs"}``; the gradient attacks rebuild the
model from it) and ``run_config`` (written as ``out_dir/config.json``, what `privaudit train`
writes there: its ``"pretrain"`` recipe is the one the attacks' independent evaluator is trained
with).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.app import Array, Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod
from safetensors.torch import load_file, save_file

from federated_core.engine.messages import SERVER, client_party, register_message_kind
from federated_core.engine.messages import Message as WireMessage
from federated_core.engine.wire import WIRE_DIRNAME, WireLog
from privaudit.flower import codec

register_message_kind("flower_arrays", "arrays of a Flower message that privaudit has no kind for (wire-tap)")
register_message_kind("flower_records", "a Flower message without arrays: config and metric records only (wire-tap)")

SPOOL_DIRNAME = "wiretap"
PHASES = ("train", "evaluate", "query")


def _check_writable(folder: Path) -> Path:
    """``folder`` created if needed and writable; otherwise a clear error naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".wiretap-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"wiretap: cannot write to {str(folder)!r}: {exc.strerror or exc}") from exc
    return folder


def _tensor(array: Array, where: str) -> torch.Tensor:
    if array.stype == codec.RAW_STYPE:
        return codec.array_to_tensor(array, where)
    if array.stype == "numpy.ndarray":
        return torch.from_numpy(array.numpy().copy())
    return torch.frombuffer(bytearray(array.data), dtype=torch.uint8).clone() if array.data else torch.empty(0)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _round(message: Message, counter: int) -> int:
    for record in message.content.config_records.values():
        value = record.get("server-round")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    group = message.metadata.group_id
    return int(group) if group.isdigit() else counter


def _config_bytes(message: Message) -> dict[str, torch.Tensor]:
    """The bytes values of the message's config records (e.g. Secure Aggregation's masked vectors
    and shares) as uint8 tensors ``"<record>/<key>"`` (``"/<i>"`` for lists): they crossed too."""
    out: dict[str, torch.Tensor] = {}
    for key, record in message.content.config_records.items():
        for name, value in record.items():
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, bytes):
                    where = f"{key}/{name}" + (f"/{i}" if isinstance(value, list) else "")
                    out[where] = (
                        torch.frombuffer(bytearray(item), dtype=torch.uint8).clone() if item else torch.empty(0)
                    )
    return out


def _named_arrays(key: str, record: Any, array_names: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """The arrays of ``record`` by name; positional arrays (``"0"``, ``"1"``, ... as Flower's legacy
    NumPyClient sends its list) take ``array_names`` when given (a count that differs is an error)."""
    items = list(record.items())
    positional = [n for n, _ in items] == [str(i) for i in range(len(items))]
    if array_names is None or not positional:
        return {n: _tensor(a, f"{key}[{n!r}]") for n, a in items}
    if len(array_names) != len(items):
        raise ValueError(
            f"wiretap: the message carries {len(items)} positional arrays in {key!r}, array_names names "
            f"{len(array_names)}"
        )
    return {name: _tensor(a, f"{key}[{n!r}]") for name, (n, a) in zip(array_names, items)}


def _payloads(
    message: Message, head_prefix: str, array_names: Sequence[str] | None = None
) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """(kind, tensors) of a Flower message: see the module docstring."""
    arrays = {k: r for k, r in message.content.array_records.items() if len(r)}
    if not arrays:
        return [("flower_records", _config_bytes(message))]
    if len(arrays) == 1:
        key, record = next(iter(arrays.items()))
        named = _named_arrays(key, record, array_names)
        body = {n: t for n, t in named.items() if not n.startswith(head_prefix)}
        head = {n: t for n, t in named.items() if n.startswith(head_prefix)}
        return [("backbone", body)] + ([("flower_arrays", head)] if head else [])
    tensors = {f"{k}/{n}": _tensor(a, f"{k}[{n!r}]") for k, r in arrays.items() for n, a in r.items()}
    return [("flower_arrays", tensors)]


def _records(message: Message) -> dict[str, Any]:
    content = message.content
    return {
        "message_type": message.metadata.message_type,
        "configs": {k: {n: _jsonable(v) for n, v in r.items()} for k, r in content.config_records.items()},
        "metrics": {k: dict(r) for k, r in content.metric_records.items()},
    }


def _party(context: Context, message: Message) -> str:
    partition = context.node_config.get("partition-id")
    if isinstance(partition, int) and not isinstance(partition, bool):
        return client_party(partition)
    return client_party(int(message.metadata.dst_node_id))


class _Spool:
    """One client's spooled messages and the shared rebuild of ``wire/``."""

    def __init__(self, folder: Path, data_spec: Mapping[str, Any] | None, run_config: Mapping[str, Any] | None) -> None:
        self.folder = folder
        self.data_spec = dict(data_spec) if data_spec is not None else None
        self.run_config = dict(run_config) if run_config is not None else None

    def train_messages(self, party: str) -> int:
        """How many train messages ``party`` has received so far (spooled by any process)."""
        spool = self.folder / SPOOL_DIRNAME / party.replace(":", "-")
        return sum(1 for p in spool.glob("*-in-0.json") if json.loads(p.read_text())["phase"] == "train")

    def write(self, party: str, name: str, key: tuple[int, int, int, float], messages: list[WireMessage]) -> None:
        spool = self.folder / SPOOL_DIRNAME / party.replace(":", "-")
        spool.mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(messages):
            stem = spool / f"{name}-{k}"
            save_file({n: t.contiguous() for n, t in m.tensors.items()}, str(stem) + ".safetensors")
            header = {
                "key": [*key[:3], int(party.split(":")[1]), key[3], k],
                "kind": m.kind,
                "sender": m.sender,
                "receivers": list(m.receivers),
                "round": m.round,
                "phase": m.phase,
                "meta": m.meta,
                "names": list(m.tensors),
            }
            Path(str(stem) + ".json").write_text(json.dumps(header))

    def rebuild(self) -> None:
        """``wire/`` and ``ground_truth/`` from every client's spool (under a file lock)."""
        with open(self.folder / ".wiretap.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            headers = [(json.loads(p.read_text()), p) for p in (self.folder / SPOOL_DIRNAME).glob("*/*-[0-9]*.json")]
            log = WireLog()
            for header, path in sorted(headers, key=lambda h: h[0]["key"]):
                tensors = load_file(str(path.with_suffix(".safetensors")))
                log.append(
                    WireMessage(
                        header["kind"],
                        header["sender"],
                        tuple(header["receivers"]),
                        header["round"],
                        header["phase"],
                        {n: tensors[n] for n in header["names"]},
                        None,
                        header["meta"],
                    )
                )
            building = self.folder / ".wire-building"
            shutil.rmtree(building, ignore_errors=True)
            log.save(building)
            shutil.rmtree(self.folder / WIRE_DIRNAME, ignore_errors=True)
            (building / WIRE_DIRNAME).rename(self.folder / WIRE_DIRNAME)
            shutil.rmtree(building)
            self._ground_truth()

    def _ground_truth(self) -> None:
        folder = self.folder / "ground_truth"
        folder.mkdir(exist_ok=True)
        partition: dict[str, Any] = {}
        for path in sorted((self.folder / SPOOL_DIRNAME).glob("*/partition.json")):
            partition.update(json.loads(path.read_text()))
        partition = dict(sorted(partition.items(), key=lambda item: int(item[0].split(":")[1])))
        (folder / "partition.json").write_text(
            json.dumps({p: {k: v[k] for k in ("identities", "num_images")} for p, v in partition.items()})
        )
        spec = dict(self.data_spec or {"source": "unknown (the wiretap was given no data_spec)"})
        rendered = {p: v["render"] for p, v in partition.items() if v.get("render") is not None}
        if rendered:
            spec["clients"] = rendered
        (folder / "data_spec.json").write_text(json.dumps(spec))
        if self.run_config is not None:
            (self.folder / "config.json").write_text(
                json.dumps({"command": "privaudit.flower.wiretap", **self.run_config})
            )


def _write_truth(path: Path, party: str, truth: Mapping[str, Any]) -> None:
    """A client's ground truth: its identities and image count and, when ``truth`` says how its
    images are rendered (``images_per_identity``, ``start_index``), the data spec's entry."""
    try:
        entry: dict[str, Any] = {
            "identities": [int(i) for i in truth["identities"]],
            "num_images": int(truth["num_images"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"wiretap: ground_truth(context) must return {{'identities': [ids], 'num_images': n}}, got {truth!r}"
        ) from exc
    if truth.get("images_per_identity") is not None:
        entry["render"] = {
            "identities": entry["identities"],
            "images_per_identity": int(truth["images_per_identity"]),
            "start_index": int(truth.get("start_index", 0)),
        }
    path.write_text(json.dumps({party: entry}))


def wiretap(
    out_dir: str | os.PathLike[str],
    ground_truth: Callable[[Context], Mapping[str, Any]] | None = None,
    data_spec: Mapping[str, Any] | None = None,
    model_spec: Mapping[str, Any] | None = None,
    head_prefix: str = "head.",
    run_config: Mapping[str, Any] | None = None,
    array_names: Sequence[str] | None = None,
) -> Mod:
    """A client-side Mod recording every message into a WireLog under ``out_dir`` (see the module
    docstring). ``array_names``: the names of a message's positional arrays (Flower's legacy
    NumPyClient, e.g. under Secure Aggregation's workflow, sends its model as a list, keys
    ``"0"``, ``"1"``, ...): the model's state-dict keys in order. An unwritable ``out_dir`` is a
    PermissionError naming it, here and not mid-run."""
    folder = _check_writable(Path(out_dir))
    names = None if array_names is None else [str(n) for n in array_names]
    spool = _Spool(folder, data_spec, run_config)
    spec = dict(model_spec) if model_spec is not None else None

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        _check_writable(folder)
        party = _party(context, message)
        category = message.metadata.message_type.split(".")[0]
        rnd = _round(message, spool.train_messages(party) + (category == "train"))
        phase = category if category in PHASES else "other"
        reply = call_next(message, context)
        key = (rnd, PHASES.index(phase) if phase in PHASES else len(PHASES))
        meta_in = {"flower": _records(message), **({"spec": spec} if spec else {})}
        received = [
            WireMessage(kind, SERVER, (party,), rnd, phase, t, None, meta_in)
            for kind, t in _payloads(message, head_prefix, names)
        ]
        sent: list[WireMessage] = []
        if not reply.has_error():
            meta_out: dict[str, Any] = {"flower": _records(reply), **({"spec": spec} if spec else {})}
            examples = [  # the Message API's "num-examples", or a legacy client's fit result
                r[key]
                for r in reply.content.metric_records.values()
                for key in ("num-examples", "num_examples")
                if key in r
            ]
            if examples:
                meta_out["num_samples"] = examples[0]
            sent = [
                WireMessage(kind, party, (SERVER,), rnd, phase, t, None, meta_out)
                for kind, t in _payloads(reply, head_prefix, names)
            ]
        # one file per Flower message id: ClientApps in several processes never overwrite each other
        stamp, name = float(message.metadata.created_at), message.metadata.message_id or message.object_id
        spool.write(party, f"{name}-in", (*key, 0, stamp), received)
        spool.write(party, f"{name}-out", (*key, 1, stamp), sent)
        if ground_truth is not None:
            _write_truth(
                folder / SPOOL_DIRNAME / party.replace(":", "-") / "partition.json", party, ground_truth(context)
            )
        spool.rebuild()
        return reply

    return mod
