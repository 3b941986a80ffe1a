"""`privaudit pretrain`: central training of φ0 on public synthetic identities, then evaluation
on unseen identities (cached by a hash of the config)."""

from __future__ import annotations

import argparse
import json
import time

from privaudit.commands._common import add_run_arguments, resolve_device
from privaudit.scenario import SCALES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="train φ0 centrally on public identities and evaluate it")
    p.add_argument("--scale", choices=SCALES, default="demo", help="preset (default: demo)")
    p.add_argument("--identities", type=int, default=None, help="number of training identities (overrides the preset)")
    p.add_argument("--difficulty", type=float, default=None, help="synthetic-face difficulty in [0, 1]")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_run_arguments(p, default_out="out/pretrain")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from privaudit.presets import pretrain_config

    device = resolve_device(args.device)
    config = pretrain_config(args.scale, seed=args.seed, identities=args.identities, difficulty=args.difficulty)
    result, seconds = timed_pretrain(config, args.out, device, progress=not args.quiet)
    print_pretrain_result(result, seconds, as_json=args.json)
    return 0


def timed_pretrain(config, out, device: str, progress: bool):
    from federated_core.pretrain import pretrain

    start = time.perf_counter()
    result = pretrain(config, cache_dir=out, device=device, progress=progress)
    return result, time.perf_counter() - start


def print_pretrain_result(result, seconds: float, as_json: bool = False) -> None:
    m = result.metrics
    if as_json:
        print(
            json.dumps(
                {"metrics": m, "checkpoint": str(result.path), "cached": result.cached, "seconds": seconds},
                default=float,
            )
        )
        return
    source = "loaded from cache" if result.cached else f"trained in {seconds:.1f} s"
    print(
        f"φ0 ({result.config['name']}, d={result.config['embedding_dim']}, {result.config['resolution']} px): {source}"
    )
    print(f"  checkpoint: {result.path}")
    print(f"  training: {m.get('train_identities')} identities, {m.get('train_images')} images")
    print(f"  verification on unseen identities: accuracy {m['accuracy']:.4f}, AUROC {m['auroc']:.4f}")
    for far, tar in sorted(m.get("tar_at_far", {}).items(), key=lambda kv: -float(kv[0])):
        print(f"  TAR@FAR={float(far):g}: {tar:.4f}")
    if m.get("unsupported_fars"):
        print(f"  (FAR targets the pair count cannot support: {', '.join(f'{f:g}' for f in m['unsupported_fars'])})")
