"""`run_on_flower`: run a federated method on Flower, with the in-process engine's result.

``mode="simulation"`` runs privaudit's generic ServerApp and ClientApp (`privaudit.flower.
server_app`, `privaudit.flower.client_app`) on Flower's Simulation Engine
(``flwr.simulation.run_simulation``, Ray backend, one CPU per ClientApp actor). The ServerApp
runs `run_federated` with the clients' updates on the SuperNodes, so the result, the run folder
and the numbers are the in-process engine's. ``mode="deployment"`` runs the same apps on a
SuperLink and SuperNodes started as processes on 127.0.0.1 (`privaudit.flower.deployment`).
The run folder gains ``flower.json``: the engine, the SuperNodes and the bytes of Flower record
content that crossed (and, for a deployment, ``flower/``: its logs, certificates and keys).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from federated_core.engine.state import ClientData
from privaudit.flower import protocol
from privaudit.flower.server_app import Job, Outcome, Transport, make_server_app
from privaudit.flower.shards import assign_shards, shard_path, write_shard

MODES = ("simulation", "deployment")
DEFAULT_TIMEOUT = 600.0
TRANSPORT_NAME = "flower.json"


def _client_map(clients: Sequence[ClientData] | Mapping[int, ClientData]) -> dict[int, ClientData]:
    if isinstance(clients, Mapping):
        return {int(k): v for k, v in sorted(clients.items())}
    return dict(enumerate(clients))


def _prepare(root: Path, jobs: list[Job], num_nodes: int) -> None:
    """Write every job's data shards under ``root`` (``job-<j>/node-<i>.pt``)."""
    for job in jobs:
        folder = Path(protocol.job_folder(str(root), job.job_id))
        for index, ids in enumerate(assign_shards(list(job.clients), num_nodes)):
            write_shard(shard_path(folder, index), {cid: job.clients[cid] for cid in ids})


def _write_transport(job: Job, transport: Transport, mode: str, num_nodes: int) -> None:
    out = job.kwargs.get("out_dir")
    if out is None:
        return
    record = {
        "engine": f"flower-{mode}",
        "supernodes": num_nodes,
        "flower_messages": transport.messages,
        "bytes_sent": transport.sent,
        "bytes_received": transport.received,
        # of those, the logical clients' private states: the SuperNodes are stateless, so each state
        # crosses with its job and back through the SuperLink (the harness, not the method's protocol)
        "client_state_bytes_sent": transport.state_sent,
        "client_state_bytes_received": transport.state_received,
        "note": "bytes of Flower record content; the client states cross the SuperLink with each job: a real "
        "deployment's server would see them (the wire log records the method's messages only)",
    }
    (Path(out) / TRANSPORT_NAME).write_text(json.dumps(record, indent=1))


def _simulate(root: Path, jobs: list[Job], num_nodes: int, timeout: float) -> Outcome:
    from flwr.simulation import run_simulation

    from privaudit.flower.client_app import make_client_app

    outcome = Outcome()
    server_app = make_server_app(jobs, outcome, num_nodes, timeout)
    client_app = make_client_app(str(root))
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": max(1, min(num_nodes, 2)), "num_gpus": 0},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Ray's notice about accelerator variables
        run_simulation(server_app, client_app, num_supernodes=num_nodes, backend_config=backend)  # type: ignore[arg-type]
    return outcome


def run_jobs_on_flower(
    mode: str,
    runs: list[tuple[Any, Sequence[ClientData] | Mapping[int, ClientData], dict[str, Any]]],
    num_supernodes: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **deployment: Any,
) -> list[Any]:
    """Several federated runs ``(config, clients, run_federated kwargs)`` one after another on one
    Flower federation (one Simulation Engine start, or one SuperLink with its SuperNodes)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "simulation" and deployment:
        raise ValueError(f"option(s) {sorted(deployment)} apply to flower-deployment only")
    if not runs:
        raise ValueError("runs must hold at least one (config, clients, kwargs)")
    jobs = []
    for j, (config, clients, kwargs) in enumerate(runs):
        if kwargs.get("method") is not None:
            raise ValueError("method= (a method object) cannot run on Flower: its SuperNodes build the method by name")
        jobs.append(Job(j, config, _client_map(clients), dict(kwargs)))
    smallest = min(len(job.clients) for job in jobs)
    nodes = num_supernodes if num_supernodes is not None else min(2, smallest)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= smallest:
        raise ValueError(f"num_supernodes must be an integer in [1, {smallest}] (the clients of a run), got {nodes!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    with tempfile.TemporaryDirectory(prefix="privaudit-flower-") as tmp:
        root = Path(tmp)
        _prepare(root, jobs, nodes)
        if mode == "simulation":
            outcome = _simulate(root, jobs, nodes, timeout)
        else:
            from privaudit.flower.deployment import deploy, deploy_options

            outcome = deploy(root, jobs, nodes, timeout, **deploy_options(deployment))
    if outcome.error is not None:
        raise outcome.error
    if len(outcome.results) != len(jobs):
        raise RuntimeError(f"Flower {mode} ended after {len(outcome.results)} of {len(jobs)} runs without an error")
    for job, transport in zip(jobs, outcome.transports):
        _write_transport(job, transport, mode, nodes)
    return outcome.results


def run_on_flower(
    mode: str,
    config: Any,
    clients: Sequence[ClientData] | Mapping[int, ClientData],
    num_supernodes: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **kwargs: Any,
) -> Any:
    """Train ``config.method`` over ``clients`` on Flower (``mode`` "simulation" or "deployment");
    ``kwargs`` as `run_federated` takes them (out_dir, eval_faces, data_spec, resume, ...), plus,
    for a deployment, ``insecure`` and ``superlink_port`` (`privaudit.flower.deployment.deploy`).
    Returns the `FederatedResult` the in-process engine returns for the same arguments."""
    options = {k: kwargs.pop(k) for k in ("insecure", "superlink_port", "keep") if k in kwargs}
    return run_jobs_on_flower(mode, [(config, clients, kwargs)], num_supernodes, timeout, **options)[0]
