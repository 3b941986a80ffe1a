"""k-NN search throughput of the attacks' blocked torch search against a 100k × 512 gallery,
compared in the same run with scikit-learn's ``NearestNeighbors(algorithm="brute",
metric="cosine")`` on the same data, plus the full identity-level k-NN attack (top-k identities,
membership scores, ROC and TPR@FPR with bootstrap intervals).

    .venv/bin/python bench/bench_knn.py                               # CPU, 100k x 512, 1,000 queries
    .venv/bin/python bench/bench_knn.py --device cuda --queries 10000 --json out/bench_knn.json

The gallery imitates face embeddings: unit vectors around a few population directions, three
images per identity (PrivacyFace A.2.4 samples three faces per identity). Both searches return the
same neighbours (checked: the fraction of identical top-k index lists is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def make_gallery(n: int, d: int, per_identity: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n_ids = math.ceil(n / per_identity)
    groups = torch.randint(0, 4, (n_ids,), generator=gen)
    dirs = F.normalize(torch.randn(4, d, generator=gen), dim=1)
    centers = F.normalize(dirs[groups] + 2.0 * torch.randn(n_ids, d, generator=gen) / math.sqrt(d), dim=1)
    ids = torch.arange(n_ids).repeat_interleave(per_identity)[:n]
    emb = F.normalize(centers[ids] + 0.6 * torch.randn(n, d, generator=gen) / math.sqrt(d), dim=1)
    return emb, ids, centers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from attacks.knn import Gallery, KnnAttackConfig, KnnTruth, knn_identity_attack
    from attacks.search import topk_cosine

    gallery, gallery_ids, centers = make_gallery(args.gallery, args.dim, 3, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    member_rows = torch.randperm(len(centers), generator=gen)[: args.queries]
    queries = F.normalize(centers[member_rows] + 0.3 * torch.randn(args.queries, args.dim, generator=gen) / math.sqrt(args.dim), dim=1)
    g_dev = gallery.to(args.device)
    out = {"gallery": list(gallery.shape), "queries": args.queries, "k": args.k, "device": args.device,
           "torch_threads": torch.get_num_threads()}

    topk_cosine(queries[:8], g_dev, k=args.k, device=args.device)  # warm-up
    times = []
    for _ in range(args.repeats):
        _sync(args.device)
        t0 = time.perf_counter()
        _, idx = topk_cosine(queries, g_dev, k=args.k, device=args.device)
        _sync(args.device)
        times.append(time.perf_counter() - t0)
    best = min(times)
    out["torch_blocked"] = {"seconds": best, "queries_per_s": args.queries / best}
    print(f"blocked torch search ({args.device}): {args.queries / best:,.0f} queries/s  ({best:.3f} s for "
          f"{args.queries} queries against {args.gallery:,} x {args.dim})")

    if not args.skip_sklearn:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=args.k, algorithm="brute", metric="cosine").fit(gallery.numpy())
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, ski = nn.kneighbors(queries.numpy())
            times.append(time.perf_counter() - t0)
        best_sk = min(times)
        same = float(np.mean([set(a) == set(b) for a, b in zip(idx.numpy(), ski)]))
        out["sklearn_brute"] = {"seconds": best_sk, "queries_per_s": args.queries / best_sk,
                                "same_topk_fraction": same}
        print(f"sklearn NearestNeighbors brute (cosine): {args.queries / best_sk:,.0f} queries/s  ({best_sk:.3f} s); "
              f"speed-up {best_sk / best:.1f}x; identical top-{args.k} sets: {same:.4f}")

    member_ids = gallery_ids.unique()[member_rows.sort().values]
    truth = KnnTruth.from_row_ids(member_rows, member_ids)
    cfg = KnnAttackConfig(k=args.k, device=args.device, n_bootstrap=200)
    _sync(args.device)
    t0 = time.perf_counter()
    res = knn_identity_attack(queries, Gallery(gallery, gallery_ids), truth, cfg)
    _sync(args.device)
    sec = time.perf_counter() - t0
    t = {r.target_fpr: r for r in res.tpr_at_fpr}
    out["identity_attack"] = {"seconds": sec, "queries_per_s": args.queries / sec, "top1": res.top1_rate,
                              "auc": res.membership_auc, "tpr@1e-3": t[1e-3].tpr, "tpr@1e-2": t[1e-2].tpr}
    print(f"full identity-level attack ({res.num_gallery_identities:,} identities, membership ROC + 2x200 bootstrap): "
          f"{sec:.2f} s, {args.queries / sec:,.0f} queries/s; top-1 {res.top1_rate:.3f}, AUC {res.membership_auc:.3f}, "
          f"TPR@1e-3 {t[1e-3].tpr:.3f} [{t[1e-3].ci_low:.3f}, {t[1e-3].ci_high:.3f}]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
