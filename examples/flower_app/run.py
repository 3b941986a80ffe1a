"""Run the app on Flower's Simulation Engine.

python run.py --faces faces/ --supernodes 4 --rounds 2 [--wiretap audit/]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # task, client_app, server_app

import torch  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from client_app import make_client_app  # noqa: E402
from server_app import make_server_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="FedAvg face recognition on Flower's Simulation Engine")
    parser.add_argument("--faces", required=True, help="identity-per-folder face crops (FACES/<id>/<n>.png)")
    parser.add_argument("--supernodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--wiretap", default=None, help="record the wire here for privaudit")
    parser.add_argument(
        "--audit-folder",
        default=None,
        help="the auditor's photo tree (the app's identity folders and others): the attacks read faces from it",
    )
    parser.add_argument("--model-out", default=None, help="save the final global model (state dict) here")
    args = parser.parse_args()
    result: dict = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "num_gpus": 0}}
    run_simulation(
        server_app=make_server_app(args.faces, args.rounds, result),
        client_app=make_client_app(args.faces, args.wiretap, args.audit_folder),
        num_supernodes=args.supernodes,
        backend_config=backend,
    )
    if "model" not in result:
        sys.exit("the ServerApp did not finish (see Flower's log above)")
    if args.model_out:
        torch.save(result["model"], args.model_out)
    print(f"trained {args.rounds} rounds on {args.supernodes} SuperNodes")


if __name__ == "__main__":
    main()
