"""Wire-log integrity: ``index.json`` records a SHA-256 per chunk, `WireLog.load` checks it."""

import hashlib
import json

import pytest
import torch

from federated_core.engine.messages import make_message
from federated_core.engine.wire import WireLog, WireLogIntegrityError

CHUNKS = ["chunk-00000000-00000001.safetensors", "chunk-00000002-00000002.safetensors"]


@pytest.fixture
def saved(tmp_path):
    log = WireLog()
    log.append(make_message("backbone", "server", ("client:0",), 1, "train", {"w": torch.arange(8.0)}))
    log.append(make_message("backbone", "client:0", ("server",), 1, "train", {"w": torch.ones(8)}), rejected="test: kept")
    log.save(tmp_path)
    log.append(make_message("backbone", "server", ("client:0",), 2, "train", {"w": torch.full((8,), 3.0)}))
    log.save(tmp_path)
    return tmp_path / "wire"


def _index(wire_dir):
    return json.loads((wire_dir / "index.json").read_text())


def test_index_records_each_chunks_sha256_and_a_good_log_loads(saved):
    index = _index(saved)
    assert sorted(index["chunks"]) == CHUNKS
    for name, info in index["chunks"].items():
        data = (saved / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    log = WireLog.load(saved)
    assert torch.equal(log[2].tensors["w"], torch.full((8,), 3.0))
    assert log.rejections() == {1: "test: kept"} and [r["rejected"] for r in index["messages"]] == [None, "test: kept", None]


def test_a_flipped_byte_is_caught_when_the_tensor_is_read(saved):
    path = saved / CHUNKS[1]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the payload: the file still parses
    path.write_bytes(bytes(data))
    log = WireLog.load(saved)  # lazily: same size, so loading the index passes
    assert torch.equal(log[0].tensors["w"], torch.arange(8.0))  # the other chunk is intact
    with pytest.raises(WireLogIntegrityError, match=rf"wire chunk .*{CHUNKS[1]}.* has SHA-256 [0-9a-f]{{64}}, index.json records"):
        log[2].tensors["w"]


def test_a_truncated_chunk_is_caught_at_load(saved):
    path = saved / CHUNKS[0]
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(WireLogIntegrityError, match=rf"wire chunk .*{CHUNKS[0]}.* has \d+ bytes, index.json records \d+"):
        WireLog.load(saved)


def test_a_deleted_chunk_is_caught_at_load(saved):
    (saved / CHUNKS[1]).unlink()
    with pytest.raises(WireLogIntegrityError, match=rf"wire chunk .*{CHUNKS[1]}.* is missing"):
        WireLog.load(saved)
    assert [m.round for m in WireLog.load(saved, upto_round=1)] == [1, 1]  # earlier rounds still load


def test_an_edited_checksum_in_the_index_is_caught(saved):
    index = _index(saved)
    index["chunks"][CHUNKS[0]]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    (saved / "index.json").write_text(json.dumps(index))
    log = WireLog.load(saved)
    with pytest.raises(WireLogIntegrityError, match=CHUNKS[0]):
        log[1].tensors["w"]
    del index["chunks"][CHUNKS[0]]
    (saved / "index.json").write_text(json.dumps(index))
    with pytest.raises(WireLogIntegrityError, match=rf"{CHUNKS[0]}.* has no SHA-256"):
        WireLog.load(saved)


def test_a_saved_log_verifies_its_own_chunks_on_read(saved, tmp_path):
    """A log released to lazy payloads by `save` checks the chunk too before reading it back."""
    log = WireLog()
    log.append(make_message("backbone", "client:3", ("server",), 1, "train", {"w": torch.ones(4)}))
    log.save(tmp_path / "other")
    chunk = next((tmp_path / "other" / "wire").glob("chunk-*.safetensors"))
    data = bytearray(chunk.read_bytes())
    data[-2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(WireLogIntegrityError, match=chunk.name):
        log[0].tensors["w"]


def test_an_older_format_is_refused_with_a_reason(saved):
    index = _index(saved)
    index["format"] = 1
    (saved / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="format must be 2, got 1.*no chunk checksums"):
        WireLog.load(saved)
