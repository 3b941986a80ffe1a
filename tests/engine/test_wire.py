import pytest
import torch

from federated_core.engine.messages import make_message
from federated_core.engine.wire import WireLog


def _log() -> WireLog:
    log = WireLog()
    log.append(make_message("backbone", "server", ("client:0", "client:1"), 1, "train", {"w": torch.zeros(10)}))
    log.append(make_message("backbone", "client:0", ("server",), 1, "train", {"w": torch.ones(10)}, meta={"num_samples": 3}))
    log.append(make_message("class_centers", "client:0", ("server",), 1, "train", {"centers": torch.ones(2, 3)}))
    log.append(make_message("backbone", "client:1", ("server",), 1, "train", {"w": torch.full((10,), 2.0)}))
    log.append(make_message("class_centers", "server", ("client:1",), 2, "train", {"centers": torch.arange(6.0).view(2, 3)}))
    return log


def test_observed_by_and_kinds():
    log = _log()
    assert len(log.observed_by("server")) == 5
    seen0 = log.observed_by("client:0")
    assert [(m.kind, m.sender) for m in seen0] == [("backbone", "server"), ("backbone", "client:0"), ("class_centers", "client:0")]
    seen1 = log.observed_by("client:1")
    assert [(m.kind, m.sender, m.round) for m in seen1] == [
        ("backbone", "server", 1), ("backbone", "client:1", 1), ("class_centers", "server", 2)]
    assert log.kinds_sent_by("client:0") == ["backbone", "class_centers"]
    assert log.kinds_sent_by("client:1") == ["backbone"]
    assert log.kinds_sent_by("server") == ["backbone", "class_centers"]
    assert log.observed_by("client:9") == []
    with pytest.raises(ValueError, match="party"):
        log.observed_by("client:*")


def test_bytes_per_round():
    log = _log()
    # round 1: server broadcast 40 B to 2 receivers = 80; client uploads 40 + 24 + 40
    assert log.bytes_per_round() == {1: 80 + 40 + 24 + 40, 2: 24}
    assert log.bytes_per_round(per_receiver=False) == {1: 40 + 40 + 24 + 40, 2: 24}
    assert log.bytes_per_round("client:0") == {1: 64}
    assert log.bytes_per_round("server") == {1: 80, 2: 24}


def test_save_load_roundtrip_lazy_and_incremental(tmp_path):
    log = WireLog()
    first = _log()
    for m in list(first)[:3]:
        log.append(m)
    log.save(tmp_path)
    for m in list(first)[3:]:
        log.append(m)
    log.save(tmp_path)
    chunks = sorted(p.name for p in (tmp_path / "wire").glob("chunk-*.safetensors"))
    assert chunks == ["chunk-00000000-00000002.safetensors", "chunk-00000003-00000004.safetensors"]
    loaded = WireLog.load(tmp_path)
    assert len(loaded) == 5
    for a, b in zip(first, loaded):
        assert (a.kind, a.sender, a.receivers, a.round, a.phase, a.meta) == (b.kind, b.sender, b.receivers, b.round, b.phase, b.meta)
        assert set(a.tensors) == set(b.tensors)
        for name in a.tensors:
            assert torch.equal(a.tensors[name], b.tensors[name])
        assert a.nbytes == b.nbytes
    # the in-memory log released its payloads but still reads them
    assert torch.equal(log[4].tensors["centers"], torch.arange(6.0).view(2, 3))
    assert [m.round for m in WireLog.load(tmp_path, upto_round=1)] == [1, 1, 1, 1]


def test_metadata_only_log(tmp_path):
    log = WireLog(keep_tensors=False)
    log.append(make_message("backbone", "client:0", ("server",), 1, "train", {"w": torch.ones(5)}))
    assert log[0].nbytes == 20
    with pytest.raises(RuntimeError, match="not kept"):
        log[0].tensors["w"]
    log.save(tmp_path)
    loaded = WireLog.load(tmp_path)
    assert loaded[0].nbytes == 20 and loaded[0].shapes() == {"w": (5,)}


def test_append_rejects_out_of_order_rounds():
    log = _log()
    with pytest.raises(ValueError, match="round order"):
        log.append(make_message("backbone", "client:0", ("server",), 1, "train", {"w": torch.ones(1)}))
    with pytest.raises(FileNotFoundError):
        WireLog.load("/nonexistent/run")


def test_load_registers_method_kinds_in_a_fresh_process(tmp_path):
    """A saved log holding a kind a method registers at import (FedFR's) loads in a process that
    never imported that method: the log carries the meaning of each kind it holds."""
    import subprocess
    import sys

    import federated_core.methods.fedfr  # noqa: F401  (registers its kinds here, to write the log)
    from federated_core.engine.messages import make_message
    from federated_core.engine.wire import WireLog

    log = WireLog()
    log.append(make_message("public_class_embeddings", "client:0", ("server",), 1, "train",
                            {"centers": torch.zeros(2, 4)}))
    log.save(tmp_path)
    code = ("from federated_core.engine.wire import WireLog; import sys; "
            f"log = WireLog.load({str(tmp_path)!r}); print([m.kind for m in log]); "
            "print(any(name.startswith('federated_core.methods') for name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kinds, methods_imported = out.stdout.strip().split("\n")
    assert "public_class_embeddings" in kinds and methods_imported == "False"
