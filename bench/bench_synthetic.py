"""Throughput of the synthetic face generator `federated_core.data.SyntheticFaces`.

For each resolution, renders a batch of ``--identities x --images`` images (default 200 x 10 =
2,000) twice with a fresh generator: the first call renders every identity's canonical faces
(expression variants, alpha masks) and then the per-image nuisance; the second call renders other
image indices of the same identities, so the canonical faces come from the in-memory LRU cache.
Also reports the canonical rendering alone (identities / s) and checks that both calls are
deterministic (a second generator gives the same bytes).

    .venv/bin/python bench/bench_synthetic.py                      # CPU, 32 / 64 / 112 px
    .venv/bin/python bench/bench_synthetic.py --device cuda --json out/bench_synthetic.json

``--calibrate`` instead trains the tiny CNN centrally (`federated_core.pretrain`, the demo recipe:
32 px, 16 images per identity, CosFace, 10 epochs) for each ``--difficulties`` value and each
``--train-identities`` count, and prints the 1:1 verification accuracy (10-fold) and AUROC on 200
unseen identities -- the numbers to calibrate the generator's default difficulty with (target:
85-95 % at a few hundred identities, rising with more identities). Use a GPU if there is one:

    .venv/bin/python bench/bench_synthetic.py --calibrate --device cuda --difficulties 0.3 0.5 0.7
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_resolution(resolution: int, identities: int, images: int, device: str, seed: int, difficulty: float) -> dict:
    from federated_core.data import SyntheticFaces

    ids = torch.arange(identities, dtype=torch.int64).repeat_interleave(images)
    idx = torch.arange(images, dtype=torch.int64).repeat(identities)
    gen = SyntheticFaces(seed=seed, resolution=resolution, difficulty=difficulty, device=device)
    gen.render([0], [0])  # warm-up (allocator, kernels); identity 0 is then cached
    gen.clear_cache()
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    first = gen.render(ids, idx)
    _sync(device)
    c1, t1 = time.process_time(), time.perf_counter()
    cached = gen.render(ids, idx + images)
    _sync(device)
    c2, t2 = time.process_time(), time.perf_counter()

    canon_gen = SyntheticFaces(seed=seed, resolution=resolution, difficulty=difficulty, device=device)
    _sync(device)
    t3 = time.perf_counter()
    canon_gen._canonical_u8(torch.arange(identities))
    _sync(device)
    t4 = time.perf_counter()

    check = SyntheticFaces(seed=seed, resolution=resolution, difficulty=difficulty, device=device)
    deterministic = torch.equal(check.render(ids[:64], idx[:64]), first[:64]) and torch.equal(
        check.render(ids[-64:], idx[-64:] + images), cached[-64:]
    )
    n = ids.numel()
    return {
        "resolution": resolution,
        "images": n,
        "identities": identities,
        "first_render_images_per_s": n / (t1 - t0),
        "cached_images_per_s": n / (t2 - t1),
        "first_render_images_per_cpu_s": n / max(c1 - c0, 1e-9),
        "cached_images_per_cpu_s": n / max(c2 - c1, 1e-9),
        "canonical_identities_per_s": identities / (t4 - t3),
        "deterministic": bool(deterministic),
    }


def calibrate(
    difficulties: list[float], train_identities: list[int], device: str, seed: int, epochs: int
) -> list[dict]:
    """Central training of the tiny CNN per (difficulty, identity count); verification on unseen ids."""
    from federated_core.pretrain import PretrainConfig, SyntheticSpec, pretrain

    rows = []
    for d in difficulties:
        for n in train_identities:
            config = PretrainConfig(
                data=SyntheticSpec(seed=seed, resolution=32, difficulty=d),
                train_identities=(0, n), train_images_per_identity=16,
                eval_identities=(900_000, 900_200), eval_images_per_identity=8,
                eval_genuine_pairs=3000, eval_impostor_pairs=3000,
                backbone="tiny", embedding_dim=128, epochs=epochs, batch_size=128, seed=seed,
            )
            t0 = time.perf_counter()
            result = pretrain(config, cache_dir=None, device=device, progress=False)
            m = result.metrics
            row = {"difficulty": d, "train_identities": n, "accuracy": float(m["accuracy"]),
                   "auroc": float(m.get("auroc", float("nan"))), "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(f"difficulty={d:.2f} identities={n:>5} accuracy={row['accuracy']:.4f} "
                  f"auroc={row['auroc']:.4f} ({row['seconds']:.0f} s)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 112])
    ap.add_argument("--identities", type=int, default=200)
    ap.add_argument("--images", type=int, default=10, help="images per identity")
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--calibrate", action="store_true", help="train the tiny CNN per difficulty instead")
    ap.add_argument("--difficulties", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--train-identities", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.calibrate:
        rows = calibrate(args.difficulties, args.train_identities, args.device, args.seed, args.epochs)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"device": args.device, "calibration": rows}, indent=2))
        return

    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"cpu={platform.processor() or platform.machine()}")
    print("img/s: wall-clock throughput; img/cpu-s: per second of this process's CPU time (all threads),")
    print("which does not depend on what else the machine runs (on a busy machine read that column)")
    print(f"{'px':>4} {'images':>7} {'first img/s':>12} {'first img/cpu-s':>16} {'cached img/s':>13} "
          f"{'cached img/cpu-s':>17} {'canonical id/s':>15} {'deterministic':>14}")
    rows = []
    for r in args.resolutions:
        row = bench_resolution(r, args.identities, args.images, args.device, args.seed, args.difficulty)
        rows.append(row)
        print(f"{r:>4} {row['images']:>7} {row['first_render_images_per_s']:>12.0f} "
              f"{row['first_render_images_per_cpu_s']:>16.0f} {row['cached_images_per_s']:>13.0f} "
              f"{row['cached_images_per_cpu_s']:>17.0f} {row['canonical_identities_per_s']:>15.1f} "
              f"{str(row['deterministic']):>14}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"device": args.device, "threads": torch.get_num_threads(), "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
