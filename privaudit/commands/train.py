"""`privaudit train`: train one federated method on synthetic faces and write its run folder.

    privaudit train --method fedgc --scale demo --rounds 8 --seed 0 --out out/fedgc

Builds the data of the scale (`federated_core.scales`): public identities for φ0, client and test
identities, all disjoint; pre-trains φ0 on the public identities (cached by config hash under
``--cache-dir``, default ``<out>/../cache``) unless ``--from-scratch``; runs the method on the
engine ``--engine`` (``inprocess``, the default; ``flower-simulation``: Flower's Simulation
Engine; ``flower-deployment``: a SuperLink and SuperNodes as processes on 127.0.0.1, TLS unless
``--insecure``; see `privaudit.flower`: every engine gives the same numbers and run folder); writes the checkpoint, ``metrics.json``, the
wire log and the ground truth to ``--out`` (layout: `federated_core.engine`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from privaudit.commands._common import add_run_arguments, positive_int, resolve_device
from privaudit.engines import ENGINE_NAMES, run_with_engine


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train one federated method (checkpoint, metrics, wire log)")
    p.add_argument(
        "--method",
        required=True,
        help="method name (fedpe, fedpe-fixed, shared-centers, fedface, fedgc, fedgc-cos, ...)",
    )
    p.add_argument("--scale", choices=("tiny", "demo", "paper"), default="demo", help="preset (default: demo)")
    p.add_argument("--rounds", type=int, default=None, help="communication rounds (default: the scale's)")
    p.add_argument(
        "--param",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="method hyper-parameter, value parsed as JSON when it is JSON, e.g. --param lam=20 --param loss=softmax",
    )
    p.add_argument(
        "--from-scratch", action="store_true", help="start from a random backbone instead of φ0 (FedGC's setting)"
    )
    p.add_argument("--clients", type=int, default=None, help="number of clients (default: the scale's)")
    p.add_argument("--identities-per-client", type=int, default=None)
    p.add_argument("--images-per-identity", type=int, default=None)
    p.add_argument("--partition", choices=("balanced", "lognormal", "one-identity"), default=None)
    p.add_argument("--participation", type=float, default=None, help="fraction C of clients per round (FedGC Table 1)")
    p.add_argument("--offline-probability", type=float, default=None, help="PrivacyFace App. A.2.7")
    p.add_argument("--offline-policy", choices=("one-client", "independent"), default=None)
    p.add_argument("--local-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--dp-noise-multiplier", type=float, default=None, help="DP-SGD on every client")
    p.add_argument("--dp-max-grad-norm", type=float, default=1.0, help="DP-SGD clipping norm (default: 1.0)")
    p.add_argument("--dp-target-epsilon", type=float, default=None, help="calibrate DP-SGD noise to this epsilon")
    p.add_argument("--dp-delta", type=float, default=None, help="delta of --dp-target-epsilon")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N rounds (0: only at the end)")
    p.add_argument("--cache-dir", type=Path, default=None, help="φ0 cache (default: <out>/../cache)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default="inprocess",
        help="where the federation runs: inprocess (default), flower-simulation or flower-deployment "
        "(Flower engines need the extra privaudit[flower]; same numbers on every engine)",
    )
    p.add_argument(
        "--supernodes",
        type=positive_int,
        default=None,
        help="Flower engines: SuperNodes hosting the logical clients (default: 2, at most the clients)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="flower-deployment: no TLS and no SuperNode authentication (default: TLS with certificates "
        "generated at start, authenticated SuperNodes)",
    )

    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the run's config, φ0's cache state and a disk estimate; write nothing",
    )
    add_run_arguments(p, default_out="out/train")
    p.set_defaults(func=run)


def _dp_config(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.dp_noise_multiplier is None and args.dp_target_epsilon is None:
        if args.dp_delta is not None:
            raise ValueError("--dp-delta is only used with --dp-target-epsilon")
        return None
    return {
        "noise_multiplier": args.dp_noise_multiplier,
        "max_grad_norm": args.dp_max_grad_norm,
        "target_epsilon": args.dp_target_epsilon,
        "delta": args.dp_delta,
    }


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine-specific arguments of the command line (none for the in-process engine)."""
    if args.engine == "inprocess" and args.supernodes is not None:
        raise ValueError("--supernodes applies to the Flower engines only (--engine flower-...)")
    if args.insecure and args.engine != "flower-deployment":
        raise ValueError("--insecure applies to --engine flower-deployment only")
    options: dict[str, Any] = {} if args.supernodes is None else {"num_supernodes": args.supernodes}
    if args.insecure:
        options["insecure"] = True
    return options


def run(args: argparse.Namespace) -> int:
    from federated_core.scales import build_federated_data, federated_scale
    from privaudit.presets import pretrain_config

    device = resolve_device(args.device)
    scale = federated_scale(
        args.scale,
        rounds=args.rounds,
        num_clients=args.clients,
        identities_per_client=1 if args.partition == "one-identity" else args.identities_per_client,
        images_per_identity=args.images_per_identity,
        partition=args.partition,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    pcfg = pretrain_config(args.scale, seed=args.seed)
    out: Path = args.out
    engine_options = _engine_options(args)
    if args.dry_run:
        return _dry_run(args, scale, pcfg, device)
    started = time.perf_counter()
    data = build_federated_data(scale, pcfg.data, seed=args.seed)
    data.data_spec["public"] = {
        "identities": list(pcfg.train_identities),
        "note": "half-open id range of φ0's pre-training",
    }

    phi0: dict[str, Any] = {"from_scratch": bool(args.from_scratch)}
    initial_backbone = None
    if not args.from_scratch:
        from federated_core.pretrain import pretrain

        pretrained = pretrain(pcfg, cache_dir=_phi0_cache(args), device=device, progress=not args.quiet)
        initial_backbone = str(pretrained.path)
        phi0.update({"checkpoint": initial_backbone, "cached": pretrained.cached, "metrics": pretrained.metrics})
    config = _engine_config(args, scale, pcfg, device, initial_backbone)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps(
            {
                "command": "privaudit train",
                **({"engine": args.engine} if args.engine != "inprocess" else {}),
                "scale": scale.name,
                "federated": config.to_dict(),
                "data": {k: v for k, v in data.data_spec.items() if k not in ("clients", "test")},
                "phi0": {k: v for k, v in phi0.items() if k != "metrics"},
                "pretrain": pcfg.to_dict(),
            },
            indent=2,
            default=str,
        )
    )
    result = run_with_engine(
        args.engine,
        config,
        data.clients,
        out_dir=out,
        eval_faces=data.test,
        data_spec=data.data_spec,
        resume=args.resume,
        **engine_options,
    )
    seconds = time.perf_counter() - started
    _print_summary(result.metrics, phi0, out, seconds, as_json=args.json)
    return 0


def _phi0_cache(args: argparse.Namespace) -> Path:
    """Where φ0 is cached: ``--cache-dir``, else ``<out>/../cache``."""
    return args.cache_dir if args.cache_dir is not None else args.out.resolve().parent / "cache"


def _engine_config(args: argparse.Namespace, scale: Any, pcfg: Any, device: str, initial_backbone: str | None) -> Any:
    """The engine config of the command line (the same for a run and its dry run)."""
    from federated_core.scales import federated_config

    return federated_config(
        scale,
        args.method,
        seed=args.seed,
        method_params=dict(args.param),
        participation=args.participation,
        offline_probability=args.offline_probability,
        offline_policy=args.offline_policy,
        eval_every=args.eval_every,
        dp_sgd=_dp_config(args),
        device=device,
        progress=not args.quiet,
        initial_backbone=initial_backbone,
        backbone=pcfg.backbone,
        embedding_dim=pcfg.embedding_dim,
        resolution=pcfg.resolution,
    )


def _dry_run(args: argparse.Namespace, scale: Any, pcfg: Any, device: str) -> int:
    """`--dry-run`: the engine config (the method built, so bad hyper-parameters exit 2), whether
    φ0 is cached, what ``--out`` holds, and a disk estimate; nothing is written."""
    import math

    from federated_core.methods import get_method
    from privaudit.dry_run import run_disk_bytes

    config = _engine_config(args, scale, pcfg, device, None)
    get_method(config.method, **config.method_params)
    cache = _phi0_cache(args)
    phi0 = (
        "none (--from-scratch)"
        if args.from_scratch
        else (
            f"cached in {cache / ('phi0-' + pcfg.fingerprint())} (checksums verified when used)"
            if (cache / f"phi0-{pcfg.fingerprint()}").is_dir()
            else "will be pre-trained"
        )
    )
    held = "a finished run (it will be replaced)" if (args.out / "metrics.json").is_file() else "nothing yet"
    participants = max(1, math.ceil((config.participation or 1.0) * scale.num_clients))
    disk = run_disk_bytes(pcfg.backbone, pcfg.embedding_dim, pcfg.resolution, scale.rounds, participants)
    print("privaudit train --dry-run: nothing was written")
    print(json.dumps(config.to_dict(), indent=2, default=str))
    print(f"φ0: {phi0}\n--out {args.out}: {held}\nestimated disk: about {disk / 2**20:.0f} MiB")
    return 0


def _print_summary(metrics: dict[str, Any], phi0: dict[str, Any], out: Path, seconds: float, as_json: bool) -> None:
    last = metrics["rounds"][-1] if metrics["rounds"] else None
    final_eval = metrics["evaluation"].get(str(metrics.get("completed_rounds")))
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(out),
                    "seconds": seconds,
                    "final_evaluation": final_eval,
                    "bytes_per_round": metrics.get("bytes_per_round"),
                    "phi0": phi0.get("metrics"),
                },
                default=float,
            )
        )
        return
    method = metrics["method"]
    print(
        f"{method['name']} ({metrics['num_clients']} clients, {metrics['num_train_images']} images, "
        f"{metrics.get('completed_rounds')} rounds, {'from scratch' if phi0['from_scratch'] else 'from φ0'}): "
        f"{seconds:.1f} s -> {out}"
    )
    print(
        f"  {'round':>5} {'client loss':>11} {'ver. acc':>8} {'AUROC':>6} {'rank-1':>6} {'up B/client':>11} {'down B/client':>13}"
    )
    evaluations = metrics["evaluation"]
    if "0" in evaluations:
        e = evaluations["0"]
        print(
            f"  {0:>5} {'':>11} {e['verification']['accuracy']:8.4f} {e['verification']['auroc']:6.3f} "
            f"{_fmt(e['identification'].get('rank1'))}"
        )
    for record in metrics["rounds"]:
        e = record.get("evaluation")
        acc = (
            f"{e['verification']['accuracy']:8.4f} {e['verification']['auroc']:6.3f} {_fmt(e['identification'].get('rank1'))}"
            if e
            else f"{'':>8} {'':>6} {'':>6}"
        )
        loss = f"{record['client_loss']:11.4f}" if record["client_loss"] is not None else f"{'':>11}"
        b = record["bytes"]
        print(
            f"  {record['round']:>5} {loss} {acc} {b['uploaded_per_participant']:11.0f} {b['broadcast_per_participant']:13.0f}"
        )
    if final_eval:
        tars = ", ".join(f"TAR@FAR={float(k):g}: {v:.4f}" for k, v in final_eval["verification"]["tar_at_far"].items())
        tpirs = ", ".join(
            f"TPIR@FPIR={float(k):g}: {v:.4f}" for k, v in final_eval["identification"]["tpir_at_fpir"].items()
        )
        print(f"  final: {tars}; {tpirs}")
    if last and last["failed"]:
        print(f"  clients that failed in the last round: {last['failed']}")


def _fmt(value: Any) -> str:
    return f"{value:6.3f}" if isinstance(value, (int, float)) else f"{'':>6}"
