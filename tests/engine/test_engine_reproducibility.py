"""Byte-reproducible run folders: the same seed and thread count give identical bytes in every
file but ``timings.json`` (which holds every wall-clock timing), and no file names the folder."""

import json
from pathlib import Path

import pytest
import torch

from federated_core.engine import run_federated
from federated_core.engine.simulation import TIMINGS_NAME
from federated_core.models import build_backbone, state_dict_to_safetensors

from engine_helpers import tiny_config

TIMING_FILES = {TIMINGS_NAME}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_bytes(a: Path, b: Path) -> dict[str, bytes]:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    differing = sorted(name for name in fa if fa[name] != fb[name] and name not in TIMING_FILES)
    assert differing == []
    for folder, files in ((a, fa), (b, fb)):
        for name, data in files.items():
            assert str(folder).encode() not in data, f"{name} holds the absolute run path"
            assert str(folder.resolve()).encode() not in data, f"{name} holds the absolute run path"
    return fa


@pytest.mark.parametrize("method", ["fedpe", "fedgc"])
def test_two_runs_write_identical_bytes(method, clients, test_faces, tmp_path):
    config = tiny_config(method=method, rounds=2, participation=0.75, eval_initial=True, eval_every=1)
    threads = torch.get_num_threads()
    results = [run_federated(config, clients, tmp_path / name, eval_faces=test_faces) for name in ("a", "b")]
    assert torch.get_num_threads() == threads
    files = _assert_same_bytes(tmp_path / "a", tmp_path / "b")
    expected = {"metrics.json", TIMINGS_NAME, "checkpoint/backbone.safetensors", "checkpoint/config.json",
                "wire/index.json", "state/progress.json", "ground_truth/client_states.safetensors"}
    assert expected <= set(files)
    assert sum(name.startswith("wire/chunk-") for name in files) == 2
    # timings live only in timings.json, and the returned metrics still carry them
    metrics = json.loads(files["metrics.json"])
    assert "init_seconds" not in metrics and all("seconds" not in r for r in metrics["rounds"])
    timings = json.loads(files[TIMINGS_NAME])
    assert set(timings) == {"init_seconds", "rounds"} and set(timings["rounds"]) == {"1", "2"}
    timings_b = json.loads((tmp_path / "b" / TIMINGS_NAME).read_text())
    assert timings_b["rounds"]["2"] == results[1].metrics["rounds"][1]["seconds"]
    assert timings_b["init_seconds"] == results[1].metrics["init_seconds"]
    assert set(results[0].metrics["rounds"][1]["seconds"]) == {"clients", "server", "evaluation", "round"}


def test_a_resumed_run_writes_the_same_bytes_as_an_uninterrupted_one(clients, tmp_path):
    config = tiny_config(rounds=3, participation=0.5)
    run_federated(config, clients, tmp_path / "full")
    run_federated(config, clients, tmp_path / "split", stop_after=1)
    run_federated(config, clients, tmp_path / "split", resume=True)
    _assert_same_bytes(tmp_path / "full", tmp_path / "split")


def test_backbone_checkpoints_are_byte_identical(tmp_path):
    """safetensors' writer orders the metadata at random; `state_dict_to_safetensors` must not."""
    model = build_backbone("tiny", 16, 16)
    info = {"z": 1, "a": {"nested": [1, 2]}, "m": "text"}
    paths = [state_dict_to_safetensors(tmp_path / f"{i}.safetensors", model, info) for i in range(4)]
    assert len({p.read_bytes() for p in paths}) == 1
