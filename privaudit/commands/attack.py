"""`privaudit attack RUN_DIR`: what one party can recover from what it observed in a run.

    privaudit attack out/privacyface --observer server --attacks knn,inversion,gradient --out out/attacks

Reads the run's wire log and ground truth (`attacks.views`), then runs the chosen attacks from
the observer's position (`attacks.run.run_attacks`): k-NN identity and membership attack on every
center-like kind observed (PrivacyFace A.2.4), embedding inversion scored by an independent
evaluation model (Table 5), gradient-inversion probes of a client's update. Writes
``<out>/attacks.json`` and the image grids, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from privaudit.commands._common import add_run_arguments, resolve_device


def _observer(text: str) -> str:
    if text in ("server", "outsider") or re.fullmatch(r"client:(0|[1-9][0-9]*)", text):
        return text
    raise argparse.ArgumentTypeError(f"--observer must be server, client:<id> or outsider, got {text!r}")


def _attacks(text: str) -> tuple[str, ...]:
    from attacks.run import ATTACKS

    names = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in names if a not in ATTACKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"--attacks must be a comma-separated subset of {','.join(ATTACKS)}, got {text!r}"
        )
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("attack", help="run the attacks of one observer on a federated run folder")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder written by `privaudit train`")
    p.add_argument(
        "--observer", type=_observer, default="server", help="server, client:<id> or outsider (default: server)"
    )
    p.add_argument(
        "--attacks",
        type=_attacks,
        default=("knn", "inversion", "gradient"),
        help="comma-separated: knn,inversion,gradient (default: all)",
    )
    p.add_argument("--distractors", type=int, default=None, help="distractor identities in the attacker's gallery")
    p.add_argument("--decoder-epochs", type=int, default=None, help="epochs of the inversion decoder")
    p.add_argument(
        "--gradient-iterations",
        type=int,
        default=None,
        help="iterations of each gradient-inversion attack (logged updates and simulated probes)",
    )
    p.add_argument(
        "--gradient-dummies",
        type=int,
        default=None,
        help="images reconstructed from each logged client update (default: 8)",
    )
    p.add_argument(
        "--gradient-rounds",
        type=_rounds,
        default=None,
        help="which logged updates of a client to invert: first, last or first,last (default)",
    )
    p.add_argument(
        "--no-simulated-probes",
        action="store_true",
        help="invert only the logged updates, not the simulated probes (Geiping et al.'s assumptions)",
    )
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="where the independent evaluator is cached (default: <out>/cache)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_run_arguments(p, default_out="out/attacks")
    p.set_defaults(func=run)


def _rounds(text: str) -> tuple[str, ...]:
    rounds = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in rounds if r not in ("first", "last")]
    if bad or not rounds:
        raise argparse.ArgumentTypeError(f"--gradient-rounds takes first, last or first,last; got {text!r}")
    return rounds


def config_from_args(args: argparse.Namespace) -> Any:
    """The `attacks.run.AttackRunConfig` the command line asks for."""
    from attacks.run import AttackRunConfig

    device = resolve_device(args.device)
    overrides = {
        k: v
        for k, v in {
            "gallery_distractors": args.distractors,
            "decoder_epochs": args.decoder_epochs,
            "gradient_iterations": args.gradient_iterations,
            "gradient_logged_iterations": args.gradient_iterations,
            "gradient_logged_dummies": args.gradient_dummies,
            "gradient_logged_rounds": args.gradient_rounds,
        }.items()
        if v is not None
    }
    if args.no_simulated_probes:
        overrides["gradient_simulated"] = False
    return AttackRunConfig(
        observer=args.observer,
        attacks=args.attacks,
        seed=args.seed,
        device=device,
        progress=not args.quiet,
        **overrides,
    )


def run(args: argparse.Namespace) -> int:
    from attacks.run import run_attacks

    if not (args.run_dir / "wire").is_dir():
        raise FileNotFoundError(
            f"RUN_DIR {str(args.run_dir)!r} holds no wire log (expected {str(args.run_dir / 'wire')!r})"
        )
    from federated_core.engine import WireLog

    wire = WireLog.load(args.run_dir, verify_all=True)  # a saved log cannot be recomputed: a damaged one is refused
    parties = sorted({m.sender for m in wire} | {r for m in wire for r in m.receivers})
    if args.observer != "outsider" and args.observer not in parties:
        raise ValueError(
            f"--observer {args.observer!r} took no part in this run; its parties are {', '.join(parties)} (or outsider)"
        )
    config = config_from_args(args)
    started = time.perf_counter()
    report = run_attacks(args.run_dir, config, out_dir=args.out, cache_dir=args.cache_dir)
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({**report.to_dict(), "total_seconds": seconds}))
    else:
        print(report.table())
        print(f"  ({seconds:.1f} s; results in {args.out / 'attacks.json'})")
    return 0
