"""The generic ClientApp: a SuperNode that runs its logical clients' ``client_update``.

`make_client_app(root)` returns a Flower ``ClientApp`` that answers two message types (see
`privaudit.flower.protocol`): which logical clients this node hosts (read from its data shard),
and one phase of one round for the participants among them. Each participant runs through
`federated_core.engine.simulation.run_client_update`, the function the in-process engine runs,
with the same generator seeds, so the numbers are the same. A client whose update raises is
reported as failed (the server decides whether that stops the run or drops the client).

The node's data root is ``root`` (simulation: the folder the engine wrote the shards to) or its
node config ``privaudit-root`` (deployment); its shard index is its ``partition-id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from federated_core.engine.config import FederatedConfig
from federated_core.engine.simulation import run_client_update
from federated_core.engine.state import ClientData
from privaudit.flower import codec, protocol
from privaudit.flower.shards import read_shard, shard_path

_SHARDS: dict[str, dict[int, ClientData]] = {}  # process-local caches (a node's own data and code)
_METHODS: dict[str, Any] = {}


def _shard(root: str | None, context: Context, job: int) -> dict[int, ClientData]:
    base = root if root is not None else context.node_config.get(protocol.ROOT_CONFIG_KEY)
    if not isinstance(base, str):
        raise ValueError(f"this SuperNode has no data root: set its node config {protocol.ROOT_CONFIG_KEY!r}")
    index = int(context.node_config[protocol.PARTITION_KEY])
    path = shard_path(Path(protocol.job_folder(base, job)), index)
    key = str(path)
    if key not in _SHARDS:
        _SHARDS[key] = read_shard(path)
    return _SHARDS[key]


def _method(config: FederatedConfig, config_json: str) -> Any:
    from federated_core.methods import get_method

    if config_json not in _METHODS:
        _METHODS[config_json] = get_method(config.method, **config.method_params)
    return _METHODS[config_json]


def _run_phase(job: dict[str, Any], content: RecordDict, shard: dict[int, ClientData]) -> RecordDict:
    """Run the job's participants; their results, uploads and new states as a reply."""
    import json

    config = FederatedConfig.from_dict(job["config"])
    method = _method(config, json.dumps(job["config"], sort_keys=True))
    if torch.get_num_threads() != int(job["threads"]):
        torch.set_num_threads(int(job["threads"]))
    messages = {int(k): codec.get_message(content, protocol.message_key(int(k))) for k in job["messages"]}
    reply = RecordDict()
    for cid in job["clients"]:
        if cid not in shard:
            raise ValueError(f"client:{cid} is not hosted by this SuperNode (it hosts {sorted(shard)[:10]})")
        state = codec.get_state(content, protocol.state_key(cid))
        inbox = [messages[int(k)] for k in job["inbox"][str(cid)]]
        try:
            new_state, uploads = run_client_update(
                method, config, cid, state, inbox, shard[cid], job["round"], job["phase_index"], job["phase"]
            )
        except Exception as exc:  # reported to the server, which stops the run or drops the client
            codec.put_json(reply, protocol.result_key(cid), {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for k, upload in enumerate(uploads):
            codec.put_message(reply, protocol.upload_key(cid, k), upload)
        codec.put_state(reply, protocol.state_key(cid), new_state)
        codec.put_json(reply, protocol.result_key(cid), {"ok": True, "error": None, "uploads": len(uploads)})
    return reply


def make_client_app(root: str | None = None, mods: list[Any] | None = None) -> ClientApp:
    """The generic ClientApp; ``root`` is the data root (None: the node config's), ``mods`` Flower
    client-side Mods (e.g. `privaudit.flower.wiretap`)."""
    app = ClientApp(mods=mods or [])

    @app.query(protocol.HOSTS_TYPE.split(".")[1])
    def hosts(message: Message, context: Context) -> Message:
        job = codec.get_json(message.content, protocol.JOB_KEY)
        shard = _shard(root, context, int(job["job"]))
        reply = RecordDict()
        codec.put_json(reply, protocol.HOSTS_KEY, {"clients": sorted(shard)})
        return Message(reply, reply_to=message)

    @app.train(protocol.PHASE_TYPE.split(".")[1])
    def phase(message: Message, context: Context) -> Message:
        job = codec.get_json(message.content, protocol.JOB_KEY)
        shard = _shard(root, context, int(job["job"]))
        return Message(_run_phase(job, message.content, shard), reply_to=message)

    return app
