"""The wire-tap Mod: replies byte-identical with and without it, what it records, a clear error for
an unwritable folder, and the README's "Audit your own Flower app in three steps" followed
literally (the example Flower app on the Simulation Engine, then `privaudit attack`)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federated_core.engine import WireLog
from privaudit.flower import wiretap

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server_identity(monkeypatch):
    """Messages are made outside a Flower run here: give this process a run and node identity."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _app(mods):
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        state = msg.content["arrays"].to_torch_state_dict()
        new = {k: v * 0.5 + 1.0 for k, v in state.items()}
        metrics = MetricRecord({"loss": 0.25, "num-examples": 6})
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": metrics}), reply_to=msg)

    return app


def _message(server_round: int) -> Message:
    gen = torch.Generator().manual_seed(server_round)
    arrays = ArrayRecord({"embedding.weight": torch.randn(4, 3, generator=gen), "head.bias": torch.randn(2, generator=gen)})
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round, "lr": 0.1})})
    return Message(content, dst_node_id=11, message_type="train")


def _context() -> Context:
    return Context(run_id=1, node_id=11, node_config={"partition-id": 2, "num-partitions": 3}, state=RecordDict(), run_config={})


def test_replies_are_byte_identical_with_the_mod_and_everything_is_recorded(tmp_path, server_identity):
    truth = lambda context: {"identities": [70, 71], "num_images": 6}  # noqa: E731
    tapped = _app([wiretap(tmp_path / "audit", ground_truth=truth, model_spec={"name": "tiny"})])
    plain = _app([])
    for r in (1, 2):
        message = _message(r)
        before = message.content.object_id
        a, b = plain(message, _context()), tapped(_message(r), _context())
        assert message.content.object_id == before
        assert a.content.object_id == b.content.object_id  # Flower's content hash: every record's bytes
        assert a.content.deflate() == b.content.deflate()
        for key in a.content.array_records:
            for name, array in a.content.array_records[key].items():
                assert array.data == b.content.array_records[key][name].data
    wire = WireLog.load(tmp_path / "audit", verify_all=True)
    seen = [(m.round, m.kind, m.sender, m.receivers) for m in wire]
    assert seen == [
        (r, kind, sender, receivers)
        for r in (1, 2)
        for sender, receivers in (("server", ("client:2",)), ("client:2", ("server",)))
        for kind in ("backbone", "flower_arrays")
    ]
    sent = wire[2]
    expected = _message(1).content["arrays"].to_torch_state_dict()["embedding.weight"] * 0.5 + 1.0
    assert torch.equal(sent.tensors["embedding.weight"], expected)
    assert sent.meta["num_samples"] == 6 and sent.meta["spec"] == {"name": "tiny"}
    assert sent.meta["flower"]["metrics"]["metrics"] == {"loss": 0.25, "num-examples": 6}
    assert wire[0].meta["flower"]["configs"]["config"] == {"server-round": 1, "lr": 0.1}
    partition = json.loads((tmp_path / "audit" / "ground_truth" / "partition.json").read_text())
    assert partition == {"client:2": {"identities": [70, 71], "num_images": 6}}


def test_unwritable_folder_is_a_clear_error_when_the_mod_is_made(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match=f"wiretap: cannot write to {re.escape(repr(str(blocker / 'audit')))}"):
        wiretap(blocker / "audit")


def test_bad_ground_truth_names_what_it_must_return(tmp_path, server_identity):
    app = _app([wiretap(tmp_path / "audit", ground_truth=lambda context: {"ids": [1]})])
    with pytest.raises(ValueError, match="ground_truth\\(context\\) must return .*got \\{'ids': \\[1\\]\\}"):
        app(_message(1), _context())


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Audit your own Flower app in three steps", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_three_steps_audit_the_example_app(tmp_path):
    commands = _readme_commands()
    assert [c.split()[:2] for c in commands] == [
        ["python", "examples/flower_app/make_faces.py"],
        ["python", "examples/flower_app/run.py"],
        ["privaudit", "attack"],
    ]
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    table = done.stdout
    assert "gradient inversion of logged client updates (what the server received)" in table
    report = json.loads((tmp_path / "report" / "attacks.json").read_text())
    assert report["observer"] == "server" and report["failures"] == []
    logged = report["gradient_logged"]
    assert {r["round"] for r in logged} == {1, 2} and all(r["client"] == "client:0" and r["num_samples"] == 18 for r in logged)
    wire = WireLog.load(tmp_path / "audit", verify_all=True)
    uploads = [m for m in wire if m.kind == "backbone" and m.sender != "server" and m.phase == "train"]
    assert sorted({m.sender for m in uploads}) == [f"client:{k}" for k in range(4)] and len(uploads) == 8


def test_config_bytes_and_emptied_arrays_are_recorded_as_records(tmp_path, server_identity):
    """What Secure Aggregation sends: masked vectors as bytes in a config record, arrays emptied."""
    app = ClientApp(mods=[wiretap(tmp_path / "audit")])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        masked = ConfigRecord({"masked": [b"\x01\x02\x03", b""], "stage": "collect"})
        return Message(RecordDict({"arrays": ArrayRecord(), "secagg": masked}), reply_to=msg)

    app(_message(1), _context())
    sent = [m for m in WireLog.load(tmp_path / "audit") if m.sender == "client:2"]
    assert [m.kind for m in sent] == ["flower_records"]
    assert sent[0].tensors["secagg/masked/0"].tolist() == [1, 2, 3] and sent[0].tensors["secagg/masked/1"].numel() == 0
    assert sent[0].meta["flower"]["configs"]["secagg"] == {"masked": [{"bytes": 3}, {"bytes": 0}], "stage": "collect"}


def test_positional_arrays_take_the_given_names(tmp_path, server_identity):
    """A legacy NumPyClient sends its model as a list (keys "0", "1", ...): `array_names` names them
    (head arrays still kept apart), and a count that differs is an error naming both counts."""
    gen = torch.Generator().manual_seed(0)
    weights = {"0": torch.randn(4, 3, generator=gen), "1": torch.randn(2, generator=gen)}
    content = RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({"server-round": 1})})
    message = Message(content, dst_node_id=11, message_type="train")
    named = _app([wiretap(tmp_path / "named", array_names=["embedding.weight", "head.bias"])])
    named(message, _context())
    received = [m for m in WireLog.load(tmp_path / "named") if m.sender == "server"]
    assert [(m.kind, list(m.tensors)) for m in received] == [("backbone", ["embedding.weight"]), ("flower_arrays", ["head.bias"])]
    assert torch.equal(received[0].tensors["embedding.weight"], weights["0"])
    wrong = _app([wiretap(tmp_path / "wrong", array_names=["only.one"])])
    with pytest.raises(ValueError, match="carries 2 positional arrays in 'arrays', array_names names 1"):
        wrong(Message(content, dst_node_id=11, message_type="train"), _context())


def test_a_wire_tapped_app_is_attacked_on_the_auditors_photo_tree(tmp_path):
    """The example app with `--audit-folder`: the wire-tap's data spec is the auditor's photo tree
    (the app's 12 identity folders and 28 others), the ground truth names the tree's ids of the
    app's folders, and `privaudit attack` reads every face from that tree: the clients' training
    images for scoring, the others dealt into public and distractor identities, the evaluator
    trained on some of them."""
    import numpy as np
    from PIL import Image

    from federated_core.data.folder_source import FolderFaceSource

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    example = REPO / "examples" / "flower_app"
    commands = [
        [sys.executable, str(example / "make_faces.py"), "--out", "faces", "--identities", "12", "--images", "6"],
        [sys.executable, str(example / "make_faces.py"), "--out", "auditor", "--identities", "40", "--images", "6"],
        [sys.executable, str(example / "run.py"), "--faces", "faces", "--supernodes", "4", "--rounds", "2",
         "--wiretap", "audit", "--audit-folder", "auditor"],
        [sys.executable, "-m", "privaudit", "attack", "audit", "--observer", "server", "--attacks", "gradient",
         "--gradient-iterations", "5", "--gradient-dummies", "2", "--no-simulated-probes", "--out", "report"],
    ]  # fmt: skip
    for command in commands:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    tree = FolderFaceSource(tmp_path / "auditor", 32)
    spec = json.loads((tmp_path / "audit" / "ground_truth" / "data_spec.json").read_text())
    assert spec["source"] == "folder" and spec["fingerprint"] == tree.fingerprint()
    partition = json.loads((tmp_path / "audit" / "ground_truth" / "partition.json").read_text())
    app_folders = sorted(p.name for p in (tmp_path / "faces").iterdir() if p.is_dir())
    for k in range(4):  # SuperNode k holds the app's identities sorted(ids)[k::4]: their folders in the tree
        assert [tree.names[i] for i in partition[f"client:{k}"]["identities"]] == app_folders[k::4]
    report = json.loads((tmp_path / "report" / "attacks.json").read_text())
    # the app trains on every image of its identities: none is left unseen for a gallery (flagged, not hidden)
    (flag,) = report["failures"]
    assert flag.startswith("face folder: 12 of 12 client identities have no image their client did not train on")
    assert {r["round"] for r in report["gradient_logged"]} == {1, 2}
    assert any(n.startswith("face folder roles: 14 gallery distractors") for n in report["notes"])
    assert "of the face folder 'auditor'" in report["evaluator"]
    row = report["gradient_logged"][0]
    assert row["client"] == "client:0" and row["num_samples"] == 18
    # what the attacks render as client:0's training images (the tap's entry, read from the tree) are
    # exactly the images the app trained client:0 on (its folders' files)
    entry = spec["clients"]["client:0"]
    rendered = tree.render(entry["identities"], entry["images_per_identity"], entry["start_index"])
    files = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
             for name in app_folders[0::4] for f in sorted((tmp_path / "faces" / name).glob("*.png"))]  # fmt: skip
    as_bytes = lambda images: sorted(bytes(x.contiguous().numpy().tobytes()) for x in images)  # noqa: E731
    assert len(rendered) == len(files) == 18 and as_bytes(rendered.images) == as_bytes(files)
