"""The ServerApp: Flower's FedAvg over every SuperNode."""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from task import BATCH_SIZE, EPOCHS, LR, FaceNet, identities


def make_server_app(faces: str, rounds: int, result: dict) -> ServerApp:
    """FedAvg for ``rounds`` rounds; the final model's state dict is put in ``result["model"]``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(0)
        model = FaceNet(len(identities(Path(faces))))
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0)
        outcome = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({"lr": LR, "epochs": EPOCHS, "batch-size": BATCH_SIZE}),
        )
        result["model"] = outcome.arrays.to_torch_state_dict()

    return app
