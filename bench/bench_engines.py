"""The same workload on the in-process engine, Flower's Simulation Engine and a Flower deployment
on loopback (SuperLink + SuperNodes as processes, TLS): wall time and bytes on the wire, as
ratios, in one run.

    .venv/bin/python bench/bench_engines.py                       # 20 clients x 5 ids, 5 rounds, fedgc
    .venv/bin/python bench/bench_engines.py --method privacyface --json out/bench_engines.json

Workload: ``--clients`` clients x ``--ids`` identities x ``--images`` random 32-px images each, the
tiny backbone (d=32), ``--rounds`` rounds, no evaluation. The engines run the same method code
with the same seed; the bench checks that they end with the same backbone, bit for bit.

Bytes: "wire" is what the method sends (the wire log's payload, per receiver; the same on every
engine); "flower" is the Flower record content that crossed between the ServerApp and the
SuperNodes (``flower.json``: the method's messages once per SuperNode, plus each logical client's
state travelling with its job and back). Time: each run once, in one process, the Flower runs
including their start and stop (Ray and its actors; the SuperLink, SuperNodes, certificates,
``flwr run``), and on a deployment each phase starts a ClientApp process per SuperNode.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine import ClientData, FederatedConfig, run_federated
from privaudit.flower.engine import run_on_flower


def make_clients(num_clients: int, ids: int, images: int, resolution: int = 32) -> list[ClientData]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for k in range(num_clients):
        labels = torch.arange(k * ids, (k + 1) * ids).repeat_interleave(images)
        pixels = torch.randint(0, 256, (len(labels), 3, resolution, resolution), generator=gen, dtype=torch.uint8)
        out.append(ClientData.from_faces(FaceSet(pixels, labels)))
    return out


def wire_bytes(metrics: dict) -> int:
    return int(sum(r["server_sent"] + r["clients_sent"] for r in metrics["bytes_per_round"].values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="fedgc")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--ids", type=int, default=5)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--supernodes", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    clients = make_clients(args.clients, args.ids, args.images)
    config = FederatedConfig(
        method=args.method, rounds=args.rounds, batch_size=8, lr=0.05, local_epochs=1, embedding_dim=32,
        resolution=32, progress=False, eval_initial=False, eval_every=0,
    )
    with TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        inprocess = run_federated(config, clients, out_dir=Path(tmp) / "inprocess")
        t_in = time.perf_counter() - t0
        seconds, results, transports = {"inprocess": t_in}, {}, {}
        for mode in ("simulation", "deployment"):
            t0 = time.perf_counter()
            folder = Path(tmp) / mode
            results[mode] = run_on_flower(mode, config, clients, out_dir=folder, num_supernodes=args.supernodes)
            seconds[f"flower-{mode}"] = time.perf_counter() - t0
            transports[mode] = json.loads((folder / "flower.json").read_text())
    reference = inprocess.backbone.state_dict()
    wire = wire_bytes(inprocess.metrics)
    result = {
        "workload": vars(args) | {"json": None},
        "seconds": seconds,
        "time_ratios_over_inprocess": {k: v / t_in for k, v in seconds.items()},
        "wire_bytes": {"inprocess": wire, **{f"flower-{m}": wire_bytes(r.metrics) for m, r in results.items()}},
        "flower_record_bytes": {f"flower-{m}": t["bytes_sent"] + t["bytes_received"] for m, t in transports.items()},
        "bytes_ratios_flower_records_over_wire": {
            f"flower-{m}": (t["bytes_sent"] + t["bytes_received"]) / wire for m, t in transports.items()
        },
        "flower_client_state_bytes": {  # of the record bytes: the clients' states, crossing with each job
            f"flower-{m}": t["client_state_bytes_sent"] + t["client_state_bytes_received"] for m, t in transports.items()
        },
        "flower_messages": {f"flower-{m}": t["flower_messages"] for m, t in transports.items()},
        "same_backbone_bit_for_bit": {
            f"flower-{m}": all(torch.equal(v, r.backbone.state_dict()[k]) for k, v in reference.items())
            for m, r in results.items()
        },
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
