"""Benchmark of DPLC (Algorithm 1 of PrivacyFace): wall time of the blocked clustering versus the
number of class centers n (Property 1: O(Q n^2)), plus the Gaussian release.

    .venv/bin/python bench/bench_dplc.py                      # n = 1k, 7k on CPU, Q = 1 and 3
    .venv/bin/python bench/bench_dplc.py --sizes 1000 7000 50000 --device cuda --dtype float32
    .venv/bin/python bench/bench_dplc.py --json out/bench_dplc.json

Centers are synthetic but shaped like a face model's class centers: unit vectors scattered around a
few population directions (so the rho = 1.3 caps hold hundreds of centers, as in the paper), d = 512.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from federated_core.methods.dplc import local_clustering, release_clusters


def synthetic_centers(n: int, d: int, groups: int, spread: float, seed: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """``n`` unit vectors: a random group direction plus isotropic noise of norm ~``spread``."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(groups, d, generator=gen, dtype=torch.float64), dim=1)
    which = torch.randint(0, groups, (n,), generator=gen)
    w = means[which] + spread * torch.randn(n, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    return torch.nn.functional.normalize(w, dim=1).to(device=device, dtype=dtype)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_one(n: int, d: int, q: int, rho: float, t: float, device: str, dtype: torch.dtype, repeats: int) -> dict:
    w = synthetic_centers(n, d, groups=4, spread=1.6, seed=0, device=device, dtype=dtype)
    times = []
    clustering = None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        clustering = local_clustering(w, rho=rho, min_cluster_size=t, max_queries=q, dtype=dtype)
        _sync(device)
        times.append(time.perf_counter() - start)
    assert clustering is not None
    row = {
        "n": n,
        "d": d,
        "Q": q,
        "rho": rho,
        "T": clustering.min_cluster_size,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "clusters": clustering.num_clusters,
        "sizes": clustering.sizes.tolist(),
        "clustering_s_min": min(times),
        "clustering_s_all": times,
    }
    try:
        start = time.perf_counter()
        release_clusters(clustering, 1.0, 1.0 / (n * 40), generator=torch.Generator().manual_seed(0))
        row["release_s"] = time.perf_counter() - start
    except ImportError as err:  # accountants not installed yet
        row["release_s"] = None
        row["release_error"] = str(err)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 7000])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rho", type=float, default=1.3)
    parser.add_argument("--min-cluster-fraction", type=float, default=0.05)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    rows = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, dtype {args.dtype}")
    print(f"{'n':>7} {'Q':>2} {'clusters':>8} {'sizes':>24} {'clustering s':>13} {'release s':>10}")
    for n in args.sizes:
        for q in args.queries:
            row = bench_one(n, args.dim, q, args.rho, args.min_cluster_fraction, args.device, dtype, args.repeats)
            rows.append(row)
            rel = "n/a" if row["release_s"] is None else f"{row['release_s']:.4f}"
            print(
                f"{n:>7} {q:>2} {row['clusters']:>8} {str(row['sizes']):>24} {row['clustering_s_min']:>13.3f} {rel:>10}",
                flush=True,
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
