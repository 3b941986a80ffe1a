"""Faults on Flower: a SuperNode that stops answering mid-run, a reply whose records do not decode,
a node whose data shard is damaged. Each gives a clear error or a recorded dropout, never a hang.

They run the real ClientApp behind a loopback Grid (this process delivers each message to the
ClientApp of its node and, as Flower's runtimes do, turns an exception of the ClientApp into an
error reply; then it drops or damages the replies of one node): the faults are then exactly where
we want them. (A SuperNode killed mid-run on a real deployment: test_flower_deployment.)"""

import json

import pytest
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict

from federated_core.engine import ClientFailureError, run_federated
from privaudit.flower import protocol
from privaudit.flower.client_app import make_client_app
from privaudit.flower.server_app import FlowerExecutor, Job, host_map
from privaudit.flower.shards import assign_shards, shard_path, write_shard

from flower_helpers import make_clients, tiny_config


@pytest.fixture
def server_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _shards(root, clients, num_nodes, job=0):
    folder = root / f"job-{job}"
    for index, ids in enumerate(assign_shards(list(range(len(clients))), num_nodes)):
        write_shard(shard_path(folder, index), {cid: clients[cid] for cid in ids})


class LoopbackGrid:
    """Delivers each message to the real ClientApp of its node in this process; ``fault(round,
    node, reply)`` may drop (None) or change a reply."""

    def __init__(self, root, num_nodes, fault=None):
        self.app = make_client_app(str(root))
        self.partitions = {101 + i: i for i in range(num_nodes)}
        self.fault = fault

    def get_node_ids(self):
        return list(self.partitions)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            config = {"partition-id": self.partitions[node], "num-partitions": len(self.partitions)}
            try:
                reply = self.app(message, Context(1, node, config, RecordDict(), {}))
            except Exception as exc:  # what Flower's runtimes do with a ClientApp that raises
                reply = Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
            job = json.loads(message.content.config_records[protocol.JOB_KEY]["json"])
            if self.fault is not None and "round" in job:
                reply = self.fault(job["round"], node, reply)
            if reply is not None:
                replies.append(reply)
        return replies


def _run(tmp_path, fault, tolerate):
    clients = make_clients()
    _shards(tmp_path, clients, 2)
    grid = LoopbackGrid(tmp_path, 2, fault)
    config = tiny_config(method="fedgc", rounds=3, tolerate_client_failures=tolerate)
    job = Job(0, config, dict(enumerate(clients)), {})
    executor = FlowerExecutor(grid, job, host_map(grid, grid.get_node_ids(), job, 30.0), 30.0)
    return run_federated(config, clients, client_executor=executor)


def _dead_from_round_2(r, node, reply):
    return None if node == 102 and r >= 2 else reply


def _garbled_in_round_2(r, node, reply):
    if node == 101 and r == 2:
        reply.content["r.0"] = ConfigRecord({"json": "{not json"})
    return reply


def test_a_node_that_stops_answering_is_a_recorded_dropout(tmp_path, server_identity):
    result = _run(tmp_path, _dead_from_round_2, tolerate=True)
    rounds = result.metrics["rounds"]
    assert [r["participants"] for r in rounds] == [[0, 1, 2, 3], [0, 1], [0, 1]]
    assert {e["client"] for e in rounds[1]["failed"]} == {2, 3}
    assert all("SuperNode 102 did not answer within 30 s" in e["error"] for e in rounds[1]["failed"])
    assert result.metrics["client_failures"] == {"count": 4, "rounds": {"2": [2, 3], "3": [2, 3]}}
    assert result.completed_rounds == 3


def test_a_node_that_stops_answering_stops_the_run_without_tolerance(tmp_path, server_identity):
    with pytest.raises(ClientFailureError, match="client:2 failed in round 2 phase 'train'.*did not answer"):
        _run(tmp_path, _dead_from_round_2, tolerate=False)


def test_an_undecodable_reply_drops_its_nodes_clients_or_stops_the_run(tmp_path, server_identity):
    result = _run(tmp_path, _garbled_in_round_2, tolerate=True)
    failed = result.metrics["rounds"][1]["failed"]
    assert {e["client"] for e in failed} == {0, 1}
    assert all("SuperNode 101's reply does not decode: record 'r.0' is not JSON" in e["error"] for e in failed)
    assert result.metrics["rounds"][2]["participants"] == [0, 1, 2, 3]  # back in the next round
    with pytest.raises(ClientFailureError, match="client:0 failed in round 2.*does not decode"):
        _run(tmp_path, _garbled_in_round_2, tolerate=False)


def test_a_damaged_shard_is_a_clear_error_naming_node_and_file(tmp_path, server_identity):
    clients = make_clients()
    _shards(tmp_path, clients, 2)
    shard_path(tmp_path / "job-0", 1).write_bytes(b"this is not a torch file")
    grid = LoopbackGrid(tmp_path, 2)
    job = Job(0, tiny_config(method="fedgc", rounds=1), dict(enumerate(clients)), {})
    with pytest.raises(RuntimeError, match="SuperNode 102 could not say which clients it hosts: ValueError: data shard .*node-1.pt.* cannot be read"):
        host_map(grid, grid.get_node_ids(), job, 30.0)


def test_a_clientapp_that_fails_mid_run_drops_its_clients(tmp_path, server_identity):
    clients = make_clients()
    _shards(tmp_path, clients, 2)
    grid = LoopbackGrid(tmp_path, 2)
    config = tiny_config(method="fedgc", rounds=2, tolerate_client_failures=True)
    job = Job(0, config, dict(enumerate(clients)), {})
    executor = FlowerExecutor(grid, job, host_map(grid, grid.get_node_ids(), job, 30.0), 30.0)
    shard_path(tmp_path / "job-0", 1).write_bytes(b"damaged after start")  # read again by a fresh process
    from privaudit.flower import client_app

    client_app._SHARDS.clear()  # (the loopback's ClientApp shares this process's cache)
    result = run_federated(config, clients, client_executor=executor)
    assert result.metrics["client_failures"] == {"count": 4, "rounds": {"1": [2, 3], "2": [2, 3]}}
    assert all("SuperNode 102 failed: ValueError: data shard" in e["error"] for e in result.metrics["rounds"][0]["failed"])
