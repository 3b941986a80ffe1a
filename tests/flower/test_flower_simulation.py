"""Every method on Flower's Simulation Engine gives the in-process engine's run: the same
backbone, wire log (tensors bit for bit), metrics, client states and run-folder bytes
(tolerance `FLOAT_TOLERANCE` = 0: the SuperNodes run `run_client_update` with the same seeds and
thread count). All methods share one simulation start (one Ray start, two SuperNodes)."""

import json

import pytest
import torch

from federated_core.engine import run_federated
from privaudit.engines import run_with_engine
from privaudit.flower.engine import TRANSPORT_NAME, run_jobs_on_flower
from privaudit.scenario import METHOD_NAMES

from flower_helpers import (FLOAT_TOLERANCE, assert_same_wire, bits_equal, folder_difference, make_clients, random_faces,
                            run_folder_bytes, tiny_config)

SKIP_FILES = ("timings.json", TRANSPORT_NAME)  # wall-clock timings; Flower's own transport record


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    clients = make_clients()
    test = random_faces(list(range(20000, 20006)), 3, seed=77)
    root = tmp_path_factory.mktemp("engines")
    jobs = [
        (tiny_config(method=m, participation=0.75), clients, {"out_dir": root / "flower" / m, "eval_faces": test})
        for m in METHOD_NAMES
    ]
    # and a run split in two: stopped after round 1, then resumed from its checkpoint
    split = root / "flower-resumed" / "privacyface"
    config = tiny_config(method="privacyface", participation=0.75)
    jobs += [(config, clients, {"out_dir": split, "eval_faces": test, "stop_after": 1})]
    jobs += [(config, clients, {"out_dir": split, "eval_faces": test, "resume": True})]
    flower = run_jobs_on_flower("simulation", jobs, num_supernodes=2, timeout=300)
    inprocess = {
        m: run_federated(tiny_config(method=m, participation=0.75), clients, out_dir=root / "inprocess" / m, eval_faces=test)
        for m in METHOD_NAMES
    }
    return root, dict(zip(METHOD_NAMES, flower)), inprocess


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_simulation_equals_inprocess(runs, method):
    root, flower, inprocess = runs
    a, b = inprocess[method], flower[method]
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert bits_equal(sa[k], sb[k]) if FLOAT_TOLERANCE == 0 else torch.allclose(sa[k], sb[k], atol=FLOAT_TOLERANCE)
    assert_same_wire(a.wire, b.wire)
    assert len(b.wire.sent_by("client:0")) + len(b.wire.sent_by("client:3")) > 0  # clients did upload
    strip = lambda m: json.loads(json.dumps({k: v for k, v in m.items() if k != "init_seconds"}, default=float))  # noqa: E731
    ma, mb = strip(a.metrics), strip(b.metrics)
    for record in ma["rounds"] + mb["rounds"]:
        record.pop("seconds")
    assert ma == mb
    assert set(a.client_states) == set(b.client_states)
    for cid, state in a.client_states.items():
        other = b.client_states[cid]
        assert list(state.tensors) == list(other.tensors)
        assert all(bits_equal(t, other.tensors[n]) for n, t in state.tensors.items())
    same = run_folder_bytes(root / "inprocess" / method, SKIP_FILES) == run_folder_bytes(root / "flower" / method, SKIP_FILES)
    assert same, folder_difference(root / "inprocess" / method, root / "flower" / method, SKIP_FILES)
    transport = json.loads((root / "flower" / method / TRANSPORT_NAME).read_text())
    assert transport["engine"] == "flower-simulation" and transport["supernodes"] == 2
    assert transport["bytes_received"] > 0 and transport["bytes_sent"] > 0
    # the clients' private states cross with each job (counted apart); none is in the wire log
    assert 0 < transport["client_state_bytes_sent"] < transport["bytes_sent"]
    assert 0 < transport["client_state_bytes_received"] < transport["bytes_received"]


def test_a_run_resumed_on_flower_equals_an_uninterrupted_one(runs):
    root, _, _ = runs
    assert run_folder_bytes(root / "inprocess" / "privacyface", SKIP_FILES) == run_folder_bytes(
        root / "flower-resumed" / "privacyface", SKIP_FILES
    )


def test_flower_engines_check_their_arguments():
    # (run_with_engine reaching Flower is tested through `privaudit train --engine`: test_train_command)
    clients = make_clients(num_clients=2, ids_per_client=2, per_identity=2)
    config = tiny_config(method="fedavg-finetune", rounds=1)
    with pytest.raises(ValueError, match="num_supernodes must be an integer in \\[1, 2\\].*got 3"):
        run_with_engine("flower-simulation", config, clients, num_supernodes=3)
    with pytest.raises(ValueError, match="mode must be one of simulation, deployment, got 'cloud'"):
        run_jobs_on_flower("cloud", [(config, clients, {})])
    with pytest.raises(ValueError, match="option\\(s\\) \\['insecure'\\] apply to flower-deployment only"):
        run_with_engine("flower-simulation", config, clients, insecure=True)
    with pytest.raises(ValueError, match="method= .* cannot run on Flower"):
        run_with_engine("flower-simulation", config, clients, method=object())
