"""Flower's Secure Aggregation seen through the wire-tap: with SecAgg+ the server receives no
client's model, only key shares and masked vectors (the plain FedAvg app's wire, with every
client's model, is checked by the README test in test_wiretap)."""

import os
import subprocess
import sys
from pathlib import Path

from federated_core.engine import WireLog

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "flower_app"


def test_with_secagg_the_server_sees_only_masked_vectors(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in (
        [sys.executable, str(EXAMPLE / "make_faces.py"), "--out", "faces", "--identities", "6", "--images", "4"],
        [sys.executable, str(EXAMPLE / "secagg.py"), "--faces", "faces", "--wiretap", "audit", "--secure"],
    ):
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "SecAgg+: {'client_models_seen_by_server': 0, 'masked_or_key_messages': 12, 'broadcast_models': 3}" in done.stdout
    wire = WireLog.load(tmp_path / "audit", verify_all=True)
    uploads = [m for m in wire if m.sender != "server"]
    assert sorted({m.sender for m in uploads}) == ["client:0", "client:1", "client:2"]
    assert {m.kind for m in uploads} == {"flower_records"}  # no client's arrays ever reach the server
    stages = [m.meta["flower"]["configs"]["secaggplus_configs"] for m in uploads if m.sender == "client:0"]
    masked = [m for m in uploads if any("masked" in name for name in m.tensors)]
    assert len(stages) == 4 and len(masked) == 3
    model_bytes = next(m.nbytes for m in wire if m.kind == "backbone")
    assert all(m.nbytes > 0 for m in masked) and all(m.round == 1 for m in uploads)
    assert model_bytes > 0
