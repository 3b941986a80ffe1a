"""The files a deployment's processes hand each other (`privaudit.flower.ipc`): read with
``weights_only=True``; a job and an outcome round-trip bit for bit, anything else is refused."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from flower_helpers import bits_equal, make_clients, tiny_config

from federated_core.engine import run_federated
from privaudit.flower import ipc
from privaudit.flower.server_app import Job, Outcome, Transport


def test_job_and_outcome_round_trip_bit_for_bit(tmp_path):
    clients = make_clients()
    job = Job(0, tiny_config(method="privacyface", rounds=1), dict(enumerate(clients)),
              {"out_dir": tmp_path / "run", "eval_faces": clients[0].faces, "resume": False})
    ipc.save({"jobs": [job], "threads": 1}, tmp_path / "jobs.pt")
    back = ipc.load(tmp_path / "jobs.pt")["jobs"][0]
    assert back.config == job.config and back.kwargs["out_dir"] == tmp_path / "run"
    assert torch.equal(back.clients[2].faces.images, clients[2].faces.images)
    assert back.clients[2].label_map == clients[2].label_map

    result = run_federated(tiny_config(method="privacyface", rounds=1), clients, out_dir=tmp_path / "inprocess")
    error = ValueError("a node's reply does not decode")
    ipc.save(ipc.portable_outcome(Outcome([result], [Transport(1, 2, 3)], error)), tmp_path / "result.pt")
    out = ipc.restore_outcome(ipc.load(tmp_path / "result.pt"))
    for k, t in result.backbone.state_dict().items():
        assert bits_equal(t, out.results[0].backbone.state_dict()[k]), k
    assert out.results[0].metrics == result.metrics and [m.kind for m in out.results[0].wire] == [
        m.kind for m in result.wire]
    assert type(out.error) is ValueError and str(out.error) == str(error) and out.transports == [Transport(1, 2, 3)]


def test_an_error_of_another_type_crosses_as_a_runtime_error():
    class Odd(Exception):
        pass

    out = ipc.portable_outcome(Outcome([], [], Odd("boom")))
    assert type(out.error) is RuntimeError and str(out.error) == "Odd: boom"


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_a_file_with_code_in_it_is_refused(tmp_path):
    path = tmp_path / "jobs.pt"
    torch.save({"jobs": [_Payload()]}, path)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        ipc.load(path)
