"""What the server sees with and without Flower's Secure Aggregation (SecAgg+), through the wire-tap.

    python examples/flower_app/secagg.py --faces faces --wiretap plain
    python examples/flower_app/secagg.py --faces faces --wiretap secure --secure
    privaudit attack plain --observer server --attacks gradient --gradient-aggregate always --out report-plain
    privaudit attack secure --observer server --attacks gradient --out report-secure

The same FedAvg app (the example's model, data and training loop, written with Flower's
NumPyClient and the DefaultWorkflow that SecAgg+ plugs into) on 3 SuperNodes for 2 rounds. The
client puts the wire-tap outermost (``mods=[wiretap(...), secaggplus_mod]``), so it records what
crosses the wire, with the model's names for the NumPyClient's positional arrays. Without SecAgg+
every client's reply carries its trained model: the server differences it against the broadcast
and attacks each client's update. With SecAgg+ the replies carry key shares and masked vectors
(bytes in config records); the server learns only the aggregate of the models, which it
broadcasts in the next round, so the gradient attacks target that aggregate (the difference of
consecutive broadcasts, scored against all participants' images, with a null of groups of
non-member identities). `summary` prints what the server's wire log holds in each case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # task

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import Context  # noqa: E402
from flwr.client import NumPyClient  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import ndarrays_to_parameters  # noqa: E402
from flwr.server import LegacyContext, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from task import BATCH_SIZE, EPOCHS, LR, FaceNet, identities, load_images, train  # noqa: E402


def _weights(model: FaceNet) -> list[np.ndarray]:
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


class FaceClient(NumPyClient):
    def __init__(self, faces: Path, partition: int, partitions: int) -> None:
        self.model = FaceNet(len(identities(faces)))
        self.x, self.y = load_images(faces, partition, partitions)
        self.partition = partition

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        keys = list(self.model.state_dict())
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in zip(keys, parameters)})
        train(self.model, self.x, self.y, LR, EPOCHS, BATCH_SIZE, seed=self.partition)
        return _weights(self.model), len(self.y), {}


def make_apps(faces: str, wire_dir: str, secure: bool, rounds: int) -> tuple[ServerApp, ClientApp]:
    from client_app import audit_tap  # the wire-tap, told what the audit needs (client_app.py)

    def client_fn(context: Context):
        return FaceClient(Path(faces), context.node_config["partition-id"], context.node_config["num-partitions"]).to_client()

    mods = [audit_tap(faces, wire_dir, positional=True)] + ([secaggplus_mod] if secure else [])
    client = ClientApp(client_fn=client_fn, mods=mods)
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(0)
        initial = ndarrays_to_parameters(_weights(FaceNet(len(identities(Path(faces))))))
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=3, min_available_clients=3,
                          initial_parameters=initial)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        fit = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2) if secure else None
        DefaultWorkflow(fit_workflow=fit)(grid, legacy)

    return server, client


def summary(wire_dir: str) -> dict:
    """What the server received from the clients in the wire log: per kind, how many messages
    carried a model (arrays) and how many only records (e.g. masked vectors)."""
    from federated_core.engine import WireLog

    log = WireLog.load(wire_dir)
    uploads = [m for m in log if m.sender != "server" and m.phase == "train"]
    return {
        "client_models_seen_by_server": sum(m.kind == "backbone" for m in uploads),
        "masked_or_key_messages": sum(m.kind == "flower_records" and len(m.tensors) > 0 for m in uploads),
        "broadcast_models": sum(m.kind == "backbone" for m in log if m.sender == "server"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", required=True)
    parser.add_argument("--wiretap", required=True)
    parser.add_argument("--secure", action="store_true", help="Secure Aggregation (SecAgg+)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server, client = make_apps(args.faces, args.wiretap, args.secure, args.rounds)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "num_gpus": 0}}
    run_simulation(server_app=server, client_app=client, num_supernodes=3, backend_config=backend)
    print(f"{'SecAgg+' if args.secure else 'plain FedAvg'}: {summary(args.wiretap)}")


if __name__ == "__main__":
    main()
