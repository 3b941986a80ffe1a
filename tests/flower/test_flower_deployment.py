"""`flower-deployment`: a SuperLink and SuperNodes as processes on 127.0.0.1 (TLS with certificates
generated at start, SuperNode authentication). fedgc and privacyface give the in-process engine's
run bit for bit; a port already taken is a clear error before anything starts; a SuperNode killed
mid-run is a recorded dropout; every process started is gone afterwards (checked by PID)."""

import json
import os
import signal
import socket
import threading
import time

import pytest
import torch

from federated_core.engine import run_federated
from privaudit.flower.engine import run_jobs_on_flower, run_on_flower
from privaudit.flower.processes import Processes

from flower_helpers import assert_same_wire, bits_equal, make_clients, run_folder_bytes, tiny_config

SKIP = ("timings.json", "flower.json")


def _folder_bytes(folder):
    return {k: v for k, v in run_folder_bytes(folder, SKIP).items() if not k.startswith("flower/")}


def test_deployment_with_tls_equals_inprocess_for_fedgc_and_privacyface(tmp_path):
    clients = make_clients()
    methods = ("fedgc", "privacyface")
    keep = Processes({})
    jobs = [(tiny_config(method=m, rounds=1), clients, {"out_dir": tmp_path / "flower" / m}) for m in methods]
    results = run_jobs_on_flower("deployment", jobs, num_supernodes=2, timeout=120, keep=keep)
    assert len(keep.seen) >= 5 and keep.alive() == []  # SuperLink, 2 SuperNodes, their SuperExecs, apps: all gone
    for method, result in zip(methods, results):
        reference = run_federated(tiny_config(method=method, rounds=1), clients, out_dir=tmp_path / "inprocess" / method)
        for k, t in reference.backbone.state_dict().items():
            assert bits_equal(t, result.backbone.state_dict()[k])
        assert_same_wire(reference.wire, result.wire)
        assert _folder_bytes(tmp_path / "inprocess" / method) == _folder_bytes(tmp_path / "flower" / method)
    logs = tmp_path / "flower" / "fedgc" / "flower" / "logs"
    assert "Uvicorn running on https://127.0.0.1" in (logs / "superlink.log").read_text()  # TLS
    assert (logs / "register.log").read_text().count("registered successfully") == 2  # node authentication
    assert "SuperNode ID:" in (logs / "supernode-1.log").read_text()
    assert not (tmp_path / "flower" / "fedgc" / "flower" / "jobs.pt").exists()  # the clients' data is not left behind
    assert not (tmp_path / "flower" / "fedgc" / "flower" / "result.pt").exists()
    transport = json.loads((tmp_path / "flower" / "privacyface" / "flower.json").read_text())
    assert transport["engine"] == "flower-deployment" and transport["bytes_received"] > 0


def test_a_port_already_taken_is_a_clear_error_and_starts_nothing(tmp_path):
    keep = Processes({})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} on 127.0.0.1 is already taken"):
            run_on_flower("deployment", tiny_config(method="fedgc", rounds=1), make_clients(), superlink_port=port, keep=keep)
    assert keep.seen == {}


def test_a_supernode_killed_mid_run_is_a_recorded_dropout_and_nothing_is_left(tmp_path):
    clients = make_clients()
    config = tiny_config(method="fedgc", rounds=2, tolerate_client_failures=True)
    keep = Processes({})
    out = tmp_path / "run"

    def kill_node_after_round_1():
        deadline = time.monotonic() + 180
        while not (out / "metrics.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, proc, _ in keep.started:
            if name == "SuperNode 1":
                os.killpg(proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_node_after_round_1, daemon=True)
    killer.start()
    result = run_on_flower("deployment", config, clients, out_dir=out, num_supernodes=2, timeout=15, insecure=True, keep=keep)
    killer.join(timeout=5)
    rounds = result.metrics["rounds"]
    assert rounds[0]["failed"] == [] and rounds[0]["participants"] == [0, 1, 2, 3]
    assert {e["client"] for e in rounds[1]["failed"]} == {2, 3} and rounds[1]["participants"] == [0, 1]
    assert all("SuperNode" in e["error"] for e in rounds[1]["failed"])
    assert result.metrics["client_failures"]["count"] == 2
    assert keep.alive() == []
    assert "Uvicorn running on http://127.0.0.1" in (out / "flower" / "logs" / "superlink.log").read_text()  # --insecure


def test_ctrl_c_during_start_up_tears_everything_down(tmp_path):
    import _thread

    keep = Processes({})

    def interrupt_once_the_supernodes_start():
        deadline = time.monotonic() + 60
        while not any(name == "SuperNode 1" for name, _, _ in keep.started) and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()  # what Ctrl-C does to the main thread

    threading.Thread(target=interrupt_once_the_supernodes_start, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_on_flower("deployment", tiny_config(method="fedgc", rounds=1), make_clients(), insecure=True, keep=keep,
                      out_dir=tmp_path / "run")
    assert len(keep.seen) >= 3 and keep.alive() == []
    assert (tmp_path / "run" / "flower" / "logs" / "superlink.log").is_file()
