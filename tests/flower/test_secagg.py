"""Flower's Secure Aggregation seen through the wire-tap, and the gradient attacks on what the
server then sees (issue #18, item 5): with SecAgg+ the server receives no client's model, only key
shares and masked vectors, and `privaudit attack` inverts the aggregate of a round's updates (the
difference of consecutive broadcasts); without it the same app's server attacks each client's
update, and the aggregate too when asked. The example scenario of examples/flower_app/secagg.py,
run both ways (the plain app's wire is also checked by the README test in test_wiretap)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attacks.views import observer_view
from federated_core.engine import WireLog

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "flower_app"
ATTACK = ["--observer", "server", "--attacks", "gradient", "--gradient-iterations", "20", "--gradient-dummies", "2"]


def _run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory):
    """The example app run with and without SecAgg+ (2 rounds, 3 SuperNodes), each wire attacked."""
    tmp = tmp_path_factory.mktemp("secagg")
    _run([sys.executable, str(EXAMPLE / "make_faces.py"), "--out", "faces", "--identities", "6", "--images", "4"], tmp)
    out = {}
    for name, flags in (("secure", ["--secure"]), ("plain", [])):
        out[name] = _run([sys.executable, str(EXAMPLE / "secagg.py"), "--faces", "faces", "--wiretap", name, *flags], tmp)
    secure = [sys.executable, "-m", "privaudit", "attack", "secure", *ATTACK, "--out", "report-secure", "--quiet"]
    _run([*secure, "--no-simulated-probes"], tmp)
    plain = [sys.executable, "-m", "privaudit", "attack", "plain", *ATTACK, "--out", "report-plain", "--quiet"]
    _run([*plain, "--no-simulated-probes", "--gradient-aggregate", "always"], tmp)
    return tmp, out


def test_with_secagg_the_server_sees_only_masked_vectors(both_ways):
    tmp, printed = both_ways
    expected = "SecAgg+: {'client_models_seen_by_server': 0, 'masked_or_key_messages': 24, 'broadcast_models': 6}"
    assert expected in printed["secure"]
    wire = WireLog.load(tmp / "secure", verify_all=True)
    uploads = [m for m in wire if m.sender != "server"]
    assert sorted({m.sender for m in uploads}) == ["client:0", "client:1", "client:2"]
    assert {m.kind for m in uploads} == {"flower_records"}  # no client's arrays ever reach the server
    stages = [m.meta["flower"]["configs"]["secaggplus_configs"] for m in uploads if m.sender == "client:0"]
    masked = [m for m in uploads if any("masked" in name for name in m.tensors)]
    assert len(stages) == 8 and len(masked) == 6 and all(m.nbytes > 0 for m in masked)
    assert sorted({m.round for m in uploads}) == [1, 2]
    # the legacy NumPyClient's positional arrays carry the model's names (wiretap's array_names)
    broadcast = next(m for m in wire if m.kind == "backbone")
    assert "features.0.weight" in broadcast.tensors and "head.weight" not in broadcast.tensors


def test_the_secagg_aggregate_is_the_plain_fedavg_mean_up_to_its_quantisation(both_ways):
    """The server's view under SecAgg+: the same aggregate as without it (the FedAvg mean of the
    clients' updates, to float rounding), perturbed by SecAgg+'s quantisation (each model scaled
    by num_examples / max_weight = 8/1000 before 2^22 levels over [-8, 8])."""
    tmp, _ = both_ways
    plain, secure = observer_view(tmp / "plain", "server"), observer_view(tmp / "secure", "server")
    clients = [u for u in plain.backbone_updates() if u.sender != "server" and u.round == 1]
    assert [u.num_samples for u in clients] == [8, 8, 8]
    assert not [u for u in secure.backbone_updates() if u.sender != "server"]
    (agg_plain,) = [u for u in plain.backbone_updates() if u.sender == "server"]
    (agg_secure,) = [u for u in secure.backbone_updates() if u.sender == "server"]
    names = sorted(agg_plain.delta)
    mean = {n: sum(u.delta[n] * u.num_samples for u in clients) / 24 for n in names}
    assert max(float((agg_plain.delta[n] - mean[n]).abs().max()) for n in names) < 1e-6
    a = torch.cat([agg_plain.delta[n].flatten() for n in names])
    b = torch.cat([agg_secure.delta[n].flatten() for n in names])
    assert 0.9 < float(torch.nn.functional.cosine_similarity(a, b, dim=0)) < 1.0  # measured 0.984


def test_gradient_attacks_target_each_update_or_only_the_aggregate(both_ways):
    """Without SecAgg+ the server inverts client:0's update of each round (null: the other two
    clients) and the aggregate; with it only the aggregate, scored against the three participants'
    24 images with a null of 19 groups of 6 non-member identities x 4 images."""
    tmp, _ = both_ways
    plain = json.loads((tmp / "report-plain" / "attacks.json").read_text())
    secure = json.loads((tmp / "report-secure" / "attacks.json").read_text())
    assert plain["failures"] == [] and secure["failures"] == []
    rows = {(r["client"], r["round"]): r for r in plain["gradient_logged"]}
    assert sorted(rows) == [("aggregate", 1), ("client:0", 1), ("client:0", 2)]
    assert rows[("client:0", 1)]["units"] == 3 and rows[("client:0", 1)]["num_samples"] == 8
    (row,) = secure["gradient_logged"]
    assert (row["client"], row["round"], row["participants"]) == ("aggregate", 1, ["client:0", "client:1", "client:2"])
    assert row["num_samples"] == 24 and row["granted_classes"] == 6 and row["units"] == 20
    assert row["local_steps"] is None  # each participant took its own steps: the aggregate states none
    assert row["null_clients"] == 19 and row["unit_name"].startswith("group of identities")
    assert row["permutation_statistic"] == "identity_similarity" and row["rank1"] is None
    # the permutation p by hand: the participants' group and every null group at least as similar, over 20
    others = [v["identity_similarity"] for v in row["null_by_client"].values()]
    assert row["permutation_p"] == (1 + sum(x >= row["identity_similarity"] for x in others)) / 20
    assert "secure aggregation" in row["threat_model"] and any("no oracle row" in n for n in row["notes"])
    assert row["grid"] == "gradient_logged_aggregate_round1.png" and (tmp / "report-secure" / row["grid"]).is_file()


def test_the_ledger_runs_unchanged_on_both_wire_taps(both_ways):
    """Item 4's "the ledger runs on it unchanged": `account_run` composes the wire-tapped uploads.
    Plain FedAvg uploads its backbone and its softmax head (one row per identity: class information)
    without noise, so no finite ε; under SecAgg+ the masked vectors carry the same models, masked
    but not noised: no finite ε either (the ledger files what it cannot read as class information,
    the conservative side). The guarantee says so, δ beside every ε."""
    from privaudit.privacy_stage import UnitCounts, account_run

    tmp, _ = both_ways
    counts = UnitCounts(images=8, identities=2, max_images_per_identity=4)
    plain = account_run(WireLog.load(tmp / "plain"), 1e-5, ["rdp"], 2, counts)
    assert plain.released_kinds == ["backbone", "flower_arrays"] and plain.backbone_private is False
    assert plain.centers_epsilon == {"rdp": float("inf")} and plain.per_person["status"] == "none"
    secure = account_run(WireLog.load(tmp / "secure"), 1e-5, ["rdp"], 2, counts)
    assert secure.released_kinds == ["flower_records"] and secure.backbone_private is None
    assert secure.per_person["epsilon"] == {"rdp": float("inf")} and secure.per_person["status"] == "none"
    assert plain.guarantee.startswith("no guarantee for class information (flower_arrays)")
    assert secure.guarantee.startswith("no guarantee for class information (flower_records)")
    assert all(g.delta == 1e-5 for g in plain.guarantees + secure.guarantees)  # δ beside every ε
