"""`privaudit attack RUN_DIR`: what one party can recover from what it observed in a run.

    privaudit attack out/privacyface --observer server --attacks knn,inversion,gradient --out out/attacks

Reads the run's wire log and ground truth (`attacks.views`), then runs the chosen attacks from
the observer's position (`attacks.run.run_attacks`): k-NN identity and membership attack on every
center-like kind observed (PrivacyFace A.2.4), embedding inversion scored by an independent
evaluation model (Table 5; by default a GAN decoder with held-out identities, and a white-box
optimisation inversion of the same vectors beside it, each scored the same way and compared), a
evaluator of another architecture than the attacked model's with a second of φ0's beside it and the
two evaluators' agreement, gradient-inversion
probes of a client's update (recovered labels where the head is observed, the granted-labels
upper bound beside them). Writes ``<out>/attacks.json`` and the image grids, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from privaudit.commands._common import add_run_arguments, positive_int, resolve_device


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
    p.add_argument(
        "--budget",
        choices=("auto", "tiny", "demo", "bench", "paper"),
        default="auto",
        help="the attacks' budgets of this scale's audit (the preset's [attacks]); auto (default): the scale "
        "the run was trained at (its config.json); the options below override single budgets",
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
        "--epoch-prior",
        choices=("none", "independent", "shared", "dimitrov"),
        default=None,
        help="how a logged update's local epochs are modelled: none (one step, the default), or unrolled with "
        "the run's epochs, batches and momentum: independent, shared, dimitrov (Dimitrov et al. 2022's prior)",
    )
    p.add_argument(
        "--gradient-aggregate",
        choices=("auto", "always", "never"),
        default=None,
        help="invert the aggregate of a round's updates (the difference of consecutive broadcasts: all the server "
        "learns under secure aggregation): auto (default) when the server saw no client's own update, always, never",
    )
    p.add_argument(
        "--no-simulated-probes",
        action="store_true",
        help="invert only the logged updates, not the simulated probes (Geiping et al.'s assumptions)",
    )
    _add_inversion_arguments(p)
    p.add_argument(
        "--bn-prior-weight",
        type=_non_negative_float,
        default=None,
        help="weight of GradInversion's BatchNorm-statistics prior in the simulated probes (default 0 = off; "
        "needs a backbone with BatchNorm — the default tiny backbone has none)",
    )
    p.add_argument(
        "--no-granted-labels-row",
        action="store_true",
        help="no granted-labels row (the same probe given the true labels, an upper bound) beside a probe "
        "with recovered labels",
    )
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="where the independent evaluator is cached (default: <out>/cache)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_run_arguments(p, default_out="out/attacks")
    p.set_defaults(func=run)


def _add_inversion_arguments(p: argparse.ArgumentParser) -> None:
    """The decoder's objective, the white-box inversion's budget and the second evaluator."""
    p.add_argument(
        "--decoder-objective",
        choices=("gan", "l1"),
        default=None,
        help="inversion decoder: gan (pixel L1 + feature loss + discriminator, held-out stop) or l1 "
        "(PrivacyFace's); default gan",
    )
    p.add_argument(
        "--whitebox-iterations",
        type=positive_int,
        default=None,
        help="Adam steps per restart of the white-box inversion of the same vectors (default 100)",
    )
    p.add_argument(
        "--whitebox-restarts", type=positive_int, default=None, help="restarts per vector of the white-box inversion"
    )
    p.add_argument("--no-whitebox", action="store_true", help="no white-box inversion beside the decoder")
    p.add_argument(
        "--evaluator-architecture",
        type=_architecture,
        default=None,
        help="the evaluator's architecture, another than the attacked model's, with a second evaluator of φ0's "
        "architecture beside it and their agreement: auto (MobileFaceNet, or IResNet-18 where φ0 is one; the "
        "default), a backbone name, or same (one evaluator, of φ0's architecture)",
    )


def _non_negative_float(text: str) -> float:
    """A finite number >= 0 (argparse type)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _architecture(text: str) -> str:
    """auto, same or a registered backbone name (argparse type)."""
    from attacks.run import EVALUATOR_CHOICES
    from federated_core.models.registry import BACKBONE_NAMES

    if text not in EVALUATOR_CHOICES + BACKBONE_NAMES:
        raise argparse.ArgumentTypeError(
            f"--evaluator-architecture must be auto, same or one of {', '.join(BACKBONE_NAMES)}; got {text!r}"
        )
    return text


def _rounds(text: str) -> tuple[str, ...]:
    rounds = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in rounds if r not in ("first", "last")]
    if bad or not rounds:
        raise argparse.ArgumentTypeError(f"--gradient-rounds takes first, last or first,last; got {text!r}")
    return rounds


def budget_of(args: argparse.Namespace) -> tuple[str, str]:
    """``(scale, where it came from)``: ``--budget``, else the scale the run folder's
    ``config.json`` names, else demo (said in the second element)."""
    if args.budget != "auto":
        return args.budget, "--budget"
    path = args.run_dir / "config.json"
    try:
        scale = json.loads(path.read_text()).get("scale") if path.is_file() else None
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{str(path)!r} is not a JSON object ({exc}); give --budget") from exc
    if scale in ("tiny", "demo", "bench", "paper"):
        return scale, f"the run's scale ({path.name})"
    return "demo", f"demo: {path.name} names no scale (give --budget to choose)"


def config_from_args(args: argparse.Namespace) -> Any:
    """The `attacks.run.AttackRunConfig` the command line asks for: the audit's attack budgets at
    `budget_of`'s scale (`privaudit.attack_stage.attack_config`), then the single overrides."""
    import dataclasses

    from privaudit.attack_stage import attack_config
    from privaudit.scenario import Scenario

    device = resolve_device(args.device)
    scale, _ = budget_of(args)
    base = attack_config(
        Scenario.preset(scale, seed=args.seed, device=device), tuple(args.attacks), not args.no_simulated_probes
    )
    overrides = {
        k: v
        for k, v in {
            "gallery_distractors": args.distractors,
            "decoder_epochs": args.decoder_epochs,
            "gradient_iterations": args.gradient_iterations,
            "gradient_logged_iterations": args.gradient_iterations,
            "gradient_logged_dummies": args.gradient_dummies,
            "gradient_logged_rounds": args.gradient_rounds,
            "decoder_objective": args.decoder_objective,
            "whitebox_iterations": args.whitebox_iterations,
            "whitebox_restarts": args.whitebox_restarts,
            "evaluator_architecture": args.evaluator_architecture,
            "gradient_bn_prior_weight": args.bn_prior_weight,
            "gradient_logged_epoch_prior": args.epoch_prior,
            "gradient_logged_aggregate": args.gradient_aggregate,
        }.items()
        if v is not None
    }
    if args.no_whitebox:
        overrides["whitebox"] = False
    if args.no_granted_labels_row:
        overrides["gradient_granted_labels_row"] = False
    return dataclasses.replace(base, observer=args.observer, progress=not args.quiet, **overrides)


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
    scale, source = budget_of(args)
    if not args.quiet:
        print(f"attack budgets of the {scale} audit ({source})")
    started = time.perf_counter()
    report = run_attacks(args.run_dir, config, out_dir=args.out, cache_dir=args.cache_dir)
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({**report.to_dict(), "total_seconds": seconds}))
    else:
        print(report.table())
        print(f"  ({seconds:.1f} s; results in {args.out / 'attacks.json'})")
    return 0
