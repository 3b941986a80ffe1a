"""Faults on Flower: a SuperNode that stops answering mid-run, a reply whose records do not decode,
a node whose data shard is damaged. Each gives a clear error or a recorded dropout, never a hang.

The mid-run faults run the real ClientApp behind a loopback Grid (this process delivers each
message to the ClientApp of its node, then drops or damages the replies of one node): the faults
are then exactly where we want them. The damaged shard runs on Flower's Simulation Engine."""

import json

import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.simulation import run_simulation

from federated_core.engine import ClientFailureError, run_federated
from privaudit.flower import protocol
from privaudit.flower.client_app import make_client_app
from privaudit.flower.server_app import FlowerExecutor, Job, Outcome, host_map, make_server_app
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
            reply = self.app(message, Context(1, node, config, RecordDict(), {}))
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


def test_a_damaged_shard_on_the_simulation_engine_is_a_clear_error(tmp_path):
    clients = make_clients()
    _shards(tmp_path, clients, 2)
    shard_path(tmp_path / "job-0", 1).write_bytes(b"this is not a torch file")
    outcome = Outcome()
    job = Job(0, tiny_config(method="fedgc", rounds=1), dict(enumerate(clients)), {})
    server = make_server_app([job], outcome, num_nodes=2, timeout=60.0)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "num_gpus": 0}}
    run_simulation(server, make_client_app(str(tmp_path)), num_supernodes=2, backend_config=backend)
    assert isinstance(outcome.error, RuntimeError) and outcome.results == []
    message = str(outcome.error)
    assert "could not say which clients it hosts" in message and "node-1.pt" in message and "cannot be read" in message
