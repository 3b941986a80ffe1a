"""The ClientApp: local training and evaluation on this SuperNode's faces.

The one privaudit line is the wire-tap Mod (`make_client_app(wire_dir=...)`); without it this is a
plain Flower 1.42 Message-API ClientApp.
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from task import (
    BATCH_SIZE,
    EMBEDDING_DIM,
    EPOCHS,
    LR,
    RESOLUTION,
    FaceNet,
    evaluate,
    identities,
    load_images,
    my_identities,
    train,
)


def audit_tap(faces: str, wire_dir: str, positional: bool = False, audit_folder: str | None = None):  # noqa: ANN201
    """privaudit's wire-tap Mod recording under ``wire_dir``, told what the audit needs: each
    client's identities (ground truth), how the faces were made, the model's layout and the local
    training protocol; ``positional``: the app sends its model as a list (a legacy NumPyClient),
    named here by the model's state-dict keys. ``audit_folder``: the auditor's identity-per-folder
    photo tree (the app's identity folders and others, for galleries, non-members and evaluators):
    the attacks read faces from it rather than from the generator that made them."""
    from privaudit.flower import wiretap  # the audit: the only privaudit imports of the app

    audit = json.loads((Path(faces) / "faces.json").read_text())  # what the auditor knows about the faces
    data_spec, id_of = audit["data_spec"], int
    if audit_folder is not None:
        from federated_core.data.folder_source import FolderFaceSource

        tree = FolderFaceSource(audit_folder, RESOLUTION)
        data_spec, id_of = tree.data_spec(), lambda name: tree.identity_of(str(name))

    def truth(context: Context) -> dict:
        p, n = context.node_config["partition-id"], context.node_config["num-partitions"]
        ids = my_identities(Path(faces), p, n)
        count = len(load_images(Path(faces), p, n)[1])  # every image of its identities
        return {
            "identities": [id_of(i) for i in ids],
            "num_images": count,
            "images_per_identity": count // len(ids),
            "start_index": 0,
        }

    model = {"name": "tiny", "embedding_dim": EMBEDDING_DIM, "resolution": RESOLUTION, "kwargs": {}}  # our layers
    protocol = {"lr": LR, "local_epochs": EPOCHS, "batch_size": BATCH_SIZE}  # our clients' local training
    run_config = {**audit["run_config"], "federated": protocol}
    names = list(FaceNet(len(identities(Path(faces)))).state_dict()) if positional else None
    return wiretap(
        wire_dir,
        ground_truth=truth,
        data_spec=data_spec,
        model_spec=model,
        run_config=run_config,
        array_names=names,
    )


def make_client_app(faces: str, wire_dir: str | None = None, audit_folder: str | None = None) -> ClientApp:
    """The ClientApp over the faces in ``faces``; ``wire_dir``: record the wire there (privaudit),
    ``audit_folder``: the auditor's photo tree (`audit_tap`)."""
    app = ClientApp(mods=[] if wire_dir is None else [audit_tap(faces, wire_dir, audit_folder=audit_folder)])

    def _setup(msg: Message, context: Context) -> tuple[FaceNet, object, object]:
        p, n = context.node_config["partition-id"], context.node_config["num-partitions"]
        model = FaceNet(len(identities(Path(faces))))
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        x, y = load_images(Path(faces), p, n)
        return model, x, y

    @app.train()
    def fit(msg: Message, context: Context) -> Message:
        model, x, y = _setup(msg, context)
        config = msg.content["config"]
        seed = 1000 * int(config["server-round"]) + int(context.node_config["partition-id"])
        loss = train(model, x, y, float(config["lr"]), int(config["epochs"]), int(config["batch-size"]), seed)
        metrics = MetricRecord({"train_loss": loss, "num-examples": len(y)})
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def test(msg: Message, context: Context) -> Message:
        model, x, y = _setup(msg, context)
        loss, accuracy = evaluate(model, x, y)
        metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(y)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app
