"""Round throughput of the in-process federated engine: client updates/s and images/s, with the raw
backbone training throughput (large batches, same model, same device) measured in the same run so
the engine's overhead is visible as a ratio.

    .venv/bin/python bench/bench_rounds.py                         # CPU, tiny scale (32 px tiny CNN)
    .venv/bin/python bench/bench_rounds.py --device cuda --backbone mobilefacenet --resolution 112 \
        --embedding-dim 512 --images-per-identity 10 --json out/bench_rounds_gpu.json

Scenarios: ``10x100`` (10 clients x 100 identities) and ``1000x1`` (1,000 one-identity clients).
Images are random uint8 tensors (the engine's cost does not depend on what they show). The wire
log keeps only metadata here (``keep_wire_tensors=False``): with 1,000 clients a full log holds
1,000 backbone copies per round; the figures are the engine's compute throughput, without disk.
Raw training is measured at ``--raw-batch`` and at the local batch size, so the ratio separates
the cost of small batches from the engine's own overhead. The first round is a warm-up
(allocations, cuDNN autotuning) and is not timed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine import ClientData, FederatedConfig, run_federated


def make_clients(num_clients: int, ids_per_client: int, images_per_identity: int, resolution: int, seed: int = 0) -> list[ClientData]:
    gen = torch.Generator().manual_seed(seed)
    clients = []
    for k in range(num_clients):
        ids = torch.arange(k * ids_per_client, (k + 1) * ids_per_client).repeat_interleave(images_per_identity)
        images = torch.randint(0, 256, (len(ids), 3, resolution, resolution), generator=gen, dtype=torch.uint8)
        clients.append(ClientData.from_faces(FaceSet(images, ids)))
    return clients


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_scenario(name: str, num_clients: int, ids_per_client: int, args: argparse.Namespace) -> dict:
    clients = make_clients(num_clients, ids_per_client, args.images_per_identity, args.resolution)
    images = sum(len(c) for c in clients)
    config = FederatedConfig(
        method=args.method, rounds=args.rounds + 1, batch_size=args.batch_size, lr=0.05, local_epochs=1,
        device=args.device, progress=False, backbone=args.backbone, embedding_dim=args.embedding_dim,
        resolution=args.resolution, eval_initial=False, eval_every=0, keep_wire_tensors=False,
    )
    result = run_federated(config, clients)
    timed = result.metrics["rounds"][1:]  # round 1 is the warm-up
    seconds = sum(r["seconds"]["round"] for r in timed)
    client_seconds = sum(r["seconds"]["clients"] for r in timed)
    updates = sum(len(r["participants"]) for r in timed)
    per_round_upload = timed[-1]["bytes"]["uploaded_per_participant"]
    return {
        "scenario": name,
        "clients": num_clients,
        "identities_per_client": ids_per_client,
        "images_per_round": images,
        "rounds_timed": len(timed),
        "seconds_per_round": seconds / len(timed),
        "client_updates_per_s": updates / seconds,
        "images_per_s": images * len(timed) / seconds,
        "client_share_of_round": client_seconds / seconds,
        "upload_bytes_per_client_per_round": per_round_upload,
    }


def bench_raw_training(args: argparse.Namespace, batch: int) -> dict:
    """Plain centralised training of the same backbone + a CosFace head, batches of ``batch``."""
    from federated_core.models import build_backbone
    from federated_core.models.heads import MarginHead

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_backbone(args.backbone, embedding_dim=args.embedding_dim, resolution=args.resolution).to(device).train()
    head = MarginHead(1000, args.embedding_dim, kind="cosface", s=30.0, m=0.35).to(device)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randint(0, 256, (batch, 3, args.resolution, args.resolution), dtype=torch.uint8)
    y = torch.randint(0, 1000, (batch,))

    def step() -> None:
        xb = x.to(device).float().div_(127.5).sub_(1.0)
        loss = head(model(xb), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.raw_warmup):
        step()
    _sync(args.device)
    start = time.perf_counter()
    for _ in range(args.raw_steps):
        step()
    _sync(args.device)
    seconds = time.perf_counter() - start
    return {"batch": batch, "steps": args.raw_steps, "images_per_s": batch * args.raw_steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--method", default="fedpe")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--images-per-identity", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="local batch size")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (after one warm-up round)")
    parser.add_argument("--scenarios", nargs="+", default=["10x100", "1000x1"], help="CLIENTSxIDENTITIES")
    parser.add_argument("--raw-batch", type=int, default=256, help="batch of the raw-training reference (also measured at --batch-size)")
    parser.add_argument("--raw-steps", type=int, default=10)
    parser.add_argument("--raw-warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rows = []
    for scenario in args.scenarios:
        clients, ids = (int(v) for v in scenario.split("x"))
        rows.append(bench_scenario(scenario, clients, ids, args))
    raw = bench_raw_training(args, args.raw_batch)
    raw_local = bench_raw_training(args, args.batch_size)
    for row in rows:
        row["ratio_to_raw_training"] = row["images_per_s"] / raw["images_per_s"]
        row["ratio_to_raw_at_local_batch"] = row["images_per_s"] / raw_local["images_per_s"]
    report = {
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(0),
        "torch_threads": torch.get_num_threads(),
        "method": args.method,
        "backbone": args.backbone,
        "resolution": args.resolution,
        "embedding_dim": args.embedding_dim,
        "images_per_identity": args.images_per_identity,
        "local_batch": args.batch_size,
        "scenarios": rows,
        "raw_training": raw,
        "raw_training_at_local_batch": raw_local,
    }
    print(f"device {report['device']} ({report['torch_threads']} threads), {args.method}, {args.backbone} "
          f"{args.resolution} px, d={args.embedding_dim}, {args.images_per_identity} images/identity, local batch {args.batch_size}")
    print(f"{'scenario':>9} {'s/round':>8} {'updates/s':>10} {'images/s':>9} {'vs raw':>7} {'vs raw@local':>12} {'upload B/client':>15}")
    for r in rows:
        print(f"{r['scenario']:>9} {r['seconds_per_round']:8.2f} {r['client_updates_per_s']:10.1f} {r['images_per_s']:9.0f} "
              f"{r['ratio_to_raw_training']:7.2f} {r['ratio_to_raw_at_local_batch']:12.2f} {r['upload_bytes_per_client_per_round']:15.0f}")
    print(f"raw training: {raw['images_per_s']:.0f} images/s at batch {raw['batch']}, "
          f"{raw_local['images_per_s']:.0f} images/s at the local batch {raw_local['batch']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
