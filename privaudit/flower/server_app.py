"""The generic ServerApp: the in-process engine's server loop, with the clients on SuperNodes.

`make_server_app(jobs, outcomes)` returns a Flower ``ServerApp`` whose ``main`` runs each `Job`
with `federated_core.engine.run_federated` — the same sampling, configure, upload checks,
``server_step``, wire log, metrics and checkpoints — and a `FlowerExecutor` in place of the
in-process client loop: each phase becomes one Flower message per SuperNode hosting a
participant, sent with ``Grid.send_and_receive``. Nothing is averaged by Flower (per-client class
centers and cluster releases do not average); the method's own ``server_step`` aggregates.

Faults: a node that does not answer within the timeout, a Flower error reply, or a reply that does
not decode fails that node's participants (`RemoteClientError`): the run stops with the engine's
`ClientFailureError`, or, with ``tolerate_client_failures``, records them as dropouts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from federated_core.engine.messages import client_party
from federated_core.engine.simulation import client_failed, client_inbox
from federated_core.engine.state import ClientState
from privaudit.flower import codec, protocol


class RemoteClientError(RuntimeError):
    """A logical client's update failed on its SuperNode, or its node failed or did not answer."""


@dataclass
class Job:
    """One federated run for the ServerApp: `run_federated`'s arguments."""

    job_id: int
    config: Any
    clients: dict[int, Any]
    kwargs: dict[str, Any]


@dataclass
class Transport:
    """Bytes of Flower record content that crossed, server -> nodes and nodes -> server, and of
    those the bytes of the logical clients' states (``state_sent`` / ``state_received``): the
    SuperNodes are stateless, so each participant's private state crosses with its job and back
    through the SuperLink — the harness's transport, not the method's protocol (the wire log)."""

    sent: int = 0
    received: int = 0
    messages: int = 0
    state_sent: int = 0
    state_received: int = 0


def content_bytes(content: RecordDict, prefix: str = "") -> int:
    """Bytes of a RecordDict's records (Flower's own ``count_bytes`` of each record); with
    ``prefix``, of the records whose key starts with it."""
    return int(sum(record.count_bytes() for key, record in content.items() if key.startswith(prefix)))


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    """The node ids once ``expected`` nodes are connected; a TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {expected} SuperNodes connected within {timeout:.0f} s")
        time.sleep(0.05)


def host_map(grid: Grid, nodes: list[int], job: Job, timeout: float) -> dict[int, int]:
    """Logical client id -> node id, from asking every node which clients it hosts."""
    out: list[Message] = []
    for node in nodes:
        content = RecordDict()
        codec.put_json(content, protocol.JOB_KEY, {"job": job.job_id})
        out.append(Message(content, dst_node_id=node, message_type=protocol.HOSTS_TYPE))
    hosted: dict[int, int] = {}
    replies = list(grid.send_and_receive(out, timeout=timeout))
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise RuntimeError(f"SuperNode {node} could not say which clients it hosts: {reply.error.reason}")
        for cid in codec.get_json(reply.content, protocol.HOSTS_KEY)["clients"]:
            if int(cid) in hosted:
                raise RuntimeError(f"client:{cid} is hosted by two SuperNodes ({hosted[int(cid)]} and {node})")
            hosted[int(cid)] = node
    missing = sorted(set(job.clients) - set(hosted))
    if missing:
        raise RuntimeError(
            f"no SuperNode answered for clients {missing[:10]} ({len(replies)}/{len(nodes)} nodes replied)"
        )
    return hosted


@dataclass
class FlowerExecutor:
    """Runs a phase's client updates on the SuperNodes (the engine's ``client_executor``)."""

    grid: Grid
    job: Job
    hosts: dict[int, int]
    timeout: float
    transport: Transport = field(default_factory=Transport)

    def _request(self, node: int, clients: list[int], inboxes: dict[int, list[Any]], run: Any, head: dict) -> Message:
        content = RecordDict()
        index: dict[int, int] = {}  # id(message) -> its key: a broadcast to many clients is sent once
        for cid in clients:
            for m in inboxes[cid]:
                if id(m) not in index:
                    index[id(m)] = len(index)
                    codec.put_message(content, protocol.message_key(index[id(m)]), m)
            codec.put_state(content, protocol.state_key(cid), run.client_states[cid])
        inbox = {str(cid): [index[id(m)] for m in inboxes[cid]] for cid in clients}
        codec.put_json(
            content, protocol.JOB_KEY, {**head, "clients": clients, "inbox": inbox, "messages": list(range(len(index)))}
        )
        self.transport.sent += content_bytes(content)
        self.transport.state_sent += content_bytes(content, protocol.STATE_PREFIX)
        self.transport.messages += 1
        return Message(content, dst_node_id=node, message_type=protocol.PHASE_TYPE)

    def _decode(self, reply: Message, clients: list[int], r: int, phase: str) -> dict[int, Any]:
        node = reply.metadata.src_node_id
        if reply.has_error():
            error = RemoteClientError(f"SuperNode {node} failed: {reply.error.reason}")
            return {cid: error for cid in clients}
        self.transport.received += content_bytes(reply.content)
        self.transport.state_received += content_bytes(reply.content, protocol.STATE_PREFIX)
        out: dict[int, Any] = {}
        try:
            for cid in clients:
                result = codec.get_json(reply.content, protocol.result_key(cid))
                if not result["ok"]:
                    out[cid] = RemoteClientError(f"on SuperNode {node}: {result['error']}")
                    continue
                ups = [codec.get_message(reply.content, protocol.upload_key(cid, k)) for k in range(result["uploads"])]
                bad = [m for m in ups if m.sender != client_party(cid) or m.round != r or m.phase != phase]
                if bad:
                    raise codec.CodecError(f"SuperNode {node} returned {bad[0]!r} as client:{cid}'s upload")
                out[cid] = (codec.get_state(reply.content, protocol.state_key(cid)), ups)
        except (codec.CodecError, KeyError, TypeError) as exc:
            error = RemoteClientError(f"SuperNode {node}'s reply does not decode: {exc}")
            return {cid: error for cid in clients}
        return out

    def __call__(
        self, run: Any, r: int, phase_index: int, phase: str, participants: list[int], broadcasts: list[Any], log: Any
    ) -> list[tuple[int, list[Any]]]:
        inboxes = {cid: client_inbox(run, cid, broadcasts) for cid in participants}
        by_node: dict[int, list[int]] = {}
        for cid in participants:
            by_node.setdefault(self.hosts[cid], []).append(cid)
        head = {
            "job": self.job.job_id,
            "round": r,
            "phase": phase,
            "phase_index": phase_index,
            "config": run.config.to_dict(),
            "threads": torch.get_num_threads(),
        }
        requests = [self._request(node, cids, inboxes, run, head) for node, cids in by_node.items()]
        results: dict[int, Any] = {}
        for reply in self.grid.send_and_receive(requests, timeout=self.timeout):
            results.update(self._decode(reply, by_node.get(reply.metadata.src_node_id, []), r, phase))
        out: list[tuple[int, list[Any]]] = []
        for cid in participants:
            outcome = results.get(cid)
            if outcome is None:
                outcome = RemoteClientError(f"SuperNode {self.hosts[cid]} did not answer within {self.timeout:.0f} s")
            if isinstance(outcome, BaseException):
                client_failed(run, log, cid, r, phase, outcome)
                continue
            state, ups = outcome
            run.client_states[cid] = ClientState(state.tensors, state.meta)
            out.append((cid, ups))
        return out


@dataclass
class Outcome:
    """What the ServerApp hands back: one result per job, or the exception that stopped it."""

    results: list[Any] = field(default_factory=list)
    transports: list[Transport] = field(default_factory=list)
    error: BaseException | None = None


def run_jobs(grid: Grid, jobs: list[Job], outcome: Outcome, num_nodes: int, timeout: float) -> None:
    """Run ``jobs`` one after another on ``num_nodes`` SuperNodes; results (or the exception that
    stopped them) into ``outcome``."""
    from federated_core.engine import run_federated

    try:
        nodes = wait_for_nodes(grid, num_nodes, timeout)
        hosts: dict[tuple[int, ...], dict[int, int]] = {}  # the same clients are sharded the same way
        for job in jobs:
            key = tuple(sorted(job.clients))
            if key not in hosts:
                hosts[key] = host_map(grid, nodes, job, timeout)
            executor = FlowerExecutor(grid, job, hosts[key], timeout)
            outcome.results.append(run_federated(job.config, job.clients, client_executor=executor, **job.kwargs))
            outcome.transports.append(executor.transport)
    except BaseException as exc:  # handed to the caller, which re-raises it after Flower shut down
        outcome.error = exc


def make_server_app(jobs: list[Job], outcome: Outcome, num_nodes: int, timeout: float) -> ServerApp:
    """The generic ServerApp running ``jobs`` one after another on ``num_nodes`` SuperNodes."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_jobs(grid, jobs, outcome, num_nodes, timeout)

    return app
