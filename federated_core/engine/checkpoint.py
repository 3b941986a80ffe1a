"""The engine's per-round checkpoint (``RUN/state/``) and the global-model checkpoint
(``RUN/checkpoint/``).

``RUN/state/`` holds what is needed to continue a run exactly: ``progress.json`` (completed
rounds, the config fingerprint, the method), ``server.{safetensors,json}`` and
``clients.{safetensors,json}`` (every party's state, `save_states`) and ``pending/`` (messages
sent by a ``server_step`` but not yet delivered, as a small wire log). Randomness needs no saving:
every random draw of round ``r`` comes from a generator seeded by ``(seed, r, ...)``.

The folder is replaced as a whole: written to ``state.tmp`` and swapped in, so an interruption
leaves either the previous or the new checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import nn

from federated_core.engine.messages import Message
from federated_core.engine.state import ClientState, ServerState, load_states, save_states
from federated_core.engine.wire import WireLog

STATE_DIRNAME = "state"
CHECKPOINT_DIRNAME = "checkpoint"


@dataclass
class EngineState:
    completed_rounds: int
    server_state: ServerState
    client_states: dict[int, ClientState]
    pending: dict[str, list[Message]]
    fingerprint: dict[str, Any]
    method: str


def save_engine_state(run_dir: str | Path, state: EngineState) -> Path:
    run_dir = Path(run_dir)
    final = run_dir / STATE_DIRNAME
    tmp = run_dir / (STATE_DIRNAME + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_states(tmp / "server", {"server": state.server_state})
    save_states(tmp / "clients", {f"client{cid}": s for cid, s in state.client_states.items()})
    pending_log = WireLog()
    inboxes = []
    entries = [(party, m) for party, messages in sorted(state.pending.items()) for m in messages]
    for party, m in sorted(entries, key=lambda e: e[1].round):  # stable: keeps each inbox's order
        pending_log.append(m)
        inboxes.append(party)
    pending_log.save(tmp / "pending", release_tensors=False)
    (tmp / "pending" / "inboxes.json").write_text(json.dumps(inboxes))
    (tmp / "progress.json").write_text(
        json.dumps(
            {
                "completed_rounds": state.completed_rounds,
                "fingerprint": state.fingerprint,
                "method": state.method,
            }
        )
    )
    old = run_dir / (STATE_DIRNAME + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def has_engine_state(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / STATE_DIRNAME / "progress.json").is_file() or (
        run_dir / (STATE_DIRNAME + ".old") / "progress.json"
    ).is_file()


def load_engine_state(run_dir: str | Path) -> EngineState:
    run_dir = Path(run_dir)
    folder = run_dir / STATE_DIRNAME
    if not (folder / "progress.json").is_file():
        folder = run_dir / (STATE_DIRNAME + ".old")  # interrupted between the two renames
    if not (folder / "progress.json").is_file():
        raise FileNotFoundError(f"no engine checkpoint under {str(run_dir)!r} (expected {STATE_DIRNAME}/progress.json)")
    progress = json.loads((folder / "progress.json").read_text())
    # save_engine_state wrote them from EngineState's fields, so each loads back as its own class
    server = cast(ServerState, load_states(folder / "server")["server"])
    clients = {int(k.removeprefix("client")): cast(ClientState, v) for k, v in load_states(folder / "clients").items()}
    pending: dict[str, list[Message]] = {}
    inboxes = json.loads((folder / "pending" / "inboxes.json").read_text())
    for party, m in zip(inboxes, WireLog.load(folder / "pending"), strict=True):
        eager = Message(m.kind, m.sender, m.receivers, m.round, m.phase, dict(m.tensors), m.event, m.meta)
        pending.setdefault(party, []).append(eager)
    return EngineState(
        completed_rounds=int(progress["completed_rounds"]),
        server_state=server,
        client_states=clients,
        pending=pending,
        fingerprint=progress["fingerprint"],
        method=progress["method"],
    )


def save_global_checkpoint(run_dir: str | Path, backbone: nn.Module, info: dict[str, Any]) -> Path:
    """``RUN/checkpoint/backbone.safetensors`` (`state_dict_to_safetensors`, loadable with
    `federated_core.models.load_backbone`) and ``RUN/checkpoint/config.json`` (``info``)."""
    from federated_core.models import state_dict_to_safetensors

    folder = Path(run_dir) / CHECKPOINT_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    path = state_dict_to_safetensors(folder / "backbone.safetensors", backbone, {"federated": info})
    (folder / "config.json").write_text(json.dumps(info, indent=2, default=str))
    return path
