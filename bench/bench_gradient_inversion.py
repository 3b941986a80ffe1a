"""Iterations per second of the inversion attacks: Inverting Gradients (single- and multi-step
FedAvg unrolling), DLG (L-BFGS), and the embedding-inversion decoder's training steps.

    .venv/bin/python bench/bench_gradient_inversion.py                     # CPU, tiny backbone
    .venv/bin/python bench/bench_gradient_inversion.py --device cuda --backbone mobilefacenet \
        --resolutions 112 --batch-sizes 1 8 --json out/bench_inversion_gpu.json

Images are random (the cost of an attack iteration does not depend on what they show); the
numbers are wall-clock iterations/s after one warm-up iteration.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--embedding-dim", type=int, default=128)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--local-steps", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from attacks.gradient import (ClientModel, DlgConfig, InvertingGradientsConfig, LocalSgd, dlg,
                                  inverting_gradients, simulate_local_update)
    from attacks.inversion import EmbeddingDecoder
    from federated_core.models import build_backbone

    rows = []
    dev = args.device
    for res, bs, steps in itertools.product(args.resolutions, args.batch_sizes, args.local_steps):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            backbone = build_backbone(args.backbone, embedding_dim=args.embedding_dim, resolution=res)
        if bs < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
            print(f"skip {args.backbone} R={res} batch={bs}: BatchNorm cannot train on one image per batch")
            continue
        gen = torch.Generator().manual_seed(0)
        model = ClientModel(backbone, 0.01 * torch.randn(4, args.embedding_dim, generator=gen), "cosface").to(dev)
        n = bs * steps
        x = (torch.rand(n, 3, res, res, generator=gen) * 2 - 1).to(dev)
        y = (torch.arange(n) % 4).to(dev)
        sgd = LocalSgd(steps=steps, batch_size=bs, lr=0.1)
        observed = simulate_local_update(model, x, y, sgd)
        start = {k: p.detach().clone() for k, p in model.named_parameters()}
        for name, fn in (
            ("inverting_gradients", lambda it: inverting_gradients(
                model, start, observed, y, tuple(x.shape), sgd, InvertingGradientsConfig(iterations=it), device=dev)),
            ("dlg", lambda it: dlg(model, start, observed, tuple(x.shape), 4, sgd,
                                   DlgConfig(iterations=max(1, it // 5), inner_iterations=5), labels=y, device=dev)),
        ):
            fn(1)  # warm-up
            _sync(dev)
            out = fn(args.iterations)
            _sync(dev)
            evals = out.iterations  # gradient-matching evaluations (L-BFGS: closure calls)
            row = {"attack": name, "resolution": res, "batch_size": bs, "local_steps": steps, "images": n,
                   "iterations_per_s": evals / out.seconds}
            rows.append(row)
            print(f"{name:20s} R={res:3d} batch={bs:2d} steps={steps}: {row['iterations_per_s']:8.1f} it/s"
                  + ("  (L-BFGS closure evaluations)" if name == "dlg" else ""))

    for res in args.resolutions:
        dec = EmbeddingDecoder(args.embedding_dim, res, base_channels=128).to(dev)
        opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
        z = torch.nn.functional.normalize(torch.randn(128, args.embedding_dim), dim=1).to(dev)
        target = torch.rand(128, 3, res, res).to(dev)
        times = []
        for i in range(args.iterations + 1):
            _sync(dev)
            t0 = time.perf_counter()
            loss = torch.nn.functional.l1_loss(dec(z), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            _sync(dev)
            if i:
                times.append(time.perf_counter() - t0)
        rate = len(times) / sum(times)
        rows.append({"attack": "decoder_training", "resolution": res, "batch_size": 128, "iterations_per_s": rate})
        print(f"{'decoder training':20s} R={res:3d} batch=128 (C0=128): {rate:8.1f} steps/s ({128 * rate:,.0f} images/s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": dev, "backbone": args.backbone, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
