"""FedFR's ablations reproduced on our synthetic data (not the paper's numbers).

    .venv/bin/python bench/fedfr_ablation.py                      # demo scale, CPU (slow on 2 cores)
    .venv/bin/python bench/fedfr_ablation.py --device cuda --fedface --out out/fedfr
    .venv/bin/python bench/fedfr_ablation.py --quick              # a smoke run of every code path

* Table 1: φ0 (pre-trained, no FL); row 2, FedAvg (local CosFace over K_l classes, only Θ
  leaves: ``fedfr`` with ``public_data=False, contrastive=False, dfc=False``); row 3, + HN-sampled
  global data (balanced CosFace over K_g + K_l, Φ shared); row 4, + contrastive; row 5, + DFC (full
  FedFR). Generic evaluation of Θ_g on unseen test identities (verification accuracy, TAR@FAR,
  TPIR@FPIR); personalised evaluation (FedFR protocol, `federated_core.personalised`) of each
  client's Θ_l (rows 2-4) or ``[Θ_l, Π_l]`` (row 5), averaged over clients. The hard-negative
  selection is reported as the share of D_g each client kept per round (Figure 3's efficiency).
* Table 3: the full FedFR's personalised metrics with Θ_g, Θ_l and ``[Θ_l, Π_l]``.
* ``--hn-sweep``: Figure 3: t_HN in {all of D_g, 0.4, 0.8, 0.9}: generic accuracy vs. D_g kept.
* ``--fedface``: Figure 4: generic performance of φ0, FedFace and FedFR with a fixed number of
  clients and 1, 2 or 5 identities per client.

Setting (demo scale): φ0 of the ``demo`` preset (300 public identities, 32 px, tiny CNN, d = 128);
D_g = 100 of φ0's identities × 8 images (the paper's D_g is the pre-training data); 10 clients ×
20 identities × 16 images, split per identity 10 train / 6 test (FedFR: 60 / 40); 100 unseen test
identities × 6 images for the generic protocol; 8 rounds of 1 local epoch, batch 32, SGD lr 0.01
(momentum 0.9, weight decay 5e-4) for every row. Results go to ``OUT/fedfr_ablation.json`` and are
printed as Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

import torch  # noqa: E402

from federated_core.engine import EvaluationConfig, FederatedConfig, run_federated  # noqa: E402
from federated_core.evaluation import far_key  # noqa: E402
from federated_core.methods import get_method  # noqa: E402
from federated_core.personalised import PersonalisedSplit, evaluate_personalised, split_clients  # noqa: E402
from federated_core.pretrain import PretrainConfig, SyntheticSpec, pretrain  # noqa: E402

CLIENT_POOL_START = 4_000_000  # far from φ0's public ids (0..300, 900,000+) and other benches' pools
ROWS = {
    "FedAvg (row 2)": dict(public_data=False, contrastive=False, dfc=False),
    "+ HN global data (row 3)": dict(public_data=True, contrastive=False, dfc=False),
    "+ contrastive (row 4)": dict(public_data=True, contrastive=True, dfc=False),
    "+ DFC = FedFR (row 5)": dict(public_data=True, contrastive=True, dfc=True),
}
FARS = (1e-1, 1e-2, 1e-3, 1e-4)
FPIRS = (1e-1, 1e-2, 1e-3)


def build_phi0(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    from privaudit.presets import pretrain_config

    if args.quick:  # a small φ0 (the "tiny" preset asks for more genuine pairs than its eval set holds)
        config = PretrainConfig(
            data=SyntheticSpec(seed=args.seed, resolution=32), train_identities=(0, 24), train_images_per_identity=8,
            eval_identities=(900_000, 900_020), eval_images_per_identity=6, eval_genuine_pairs=200,
            eval_impostor_pairs=200, embedding_dim=64, epochs=3, batch_size=64, seed=args.seed,
        )
    else:
        config = pretrain_config("demo", seed=args.seed)
    result = pretrain(config, cache_dir=args.cache, device=args.device, progress=args.progress)
    return config, result.backbone.cpu().eval(), result.metrics


def build_data(args: argparse.Namespace, synthetic: Any, num_clients: int, ids_per_client: int) -> tuple[PersonalisedSplit, Any, Any]:
    """(per-client train/test split, generic test faces, public set spec)."""
    from federated_core.data import SyntheticFaces
    from federated_core.data.split import partition_balanced, split_identities

    gen = SyntheticFaces(seed=synthetic.seed, resolution=synthetic.resolution, groups=synthetic.groups,
                         **({} if synthetic.difficulty is None else {"difficulty": synthetic.difficulty}))
    pool = torch.arange(CLIENT_POOL_START, CLIENT_POOL_START + num_clients * ids_per_client + args.test_ids)
    parts = split_identities(pool, {"clients": num_clients * ids_per_client, "test": args.test_ids}, seed=args.seed)
    per_client = partition_balanced(parts["clients"], num_clients, seed=args.seed)
    faces = [gen.make_set(ids, args.train_images + args.test_images) for ids in per_client]
    split = split_clients(faces, train_count=args.train_images, seed=args.seed)
    test = gen.make_set(parts["test"], args.generic_test_images)
    generator = {"seed": synthetic.seed, "resolution": synthetic.resolution, "groups": synthetic.groups}
    if synthetic.difficulty is not None:
        generator["difficulty"] = synthetic.difficulty
    public = {"identities": [0, args.public_ids], "images_per_identity": args.public_images, "generator": generator}
    return split, test, public


def federated_config(args: argparse.Namespace, method: str, params: dict[str, Any]) -> FederatedConfig:
    return FederatedConfig(
        method=method, method_params=params, rounds=args.rounds, local_epochs=args.local_epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, progress=args.progress,
        eval_initial=False, eval_every=0, keep_wire_tensors=False,
        evaluation=EvaluationConfig(genuine_pairs=1500, impostor_pairs=1500, fars=FARS, fpirs=FPIRS, seed=args.seed),
    )


def generic(evaluation: dict[str, Any]) -> dict[str, Any]:
    ver, ident = evaluation["verification"], evaluation["identification"]
    return {"accuracy": ver["accuracy"], "auroc": ver["auroc"], "tar_at_far": ver["tar_at_far"],
            "tpir_at_fpir": ident["tpir_at_fpir"], "rank1": ident["rank1"]}


def personalised(model_for_client: Any, split: PersonalisedSplit, args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for rule in ("nist", "fedfr-pairs"):
        report = evaluate_personalised(model_for_client, split, "fedfr", fars=FARS, fpirs=FPIRS, fpir_rule=rule,
                                       seed=args.seed, device=args.device)
        out[rule] = {k: v["mean"] for k, v in report.mean.items()}
    return out


def hn_share(result: Any) -> list[float]:
    """Mean share of D_g kept by the clients, per round."""
    rounds: dict[int, list[float]] = {}
    for state in result.client_states.values():
        for h in state.meta.get("hn_history", []):
            if h["public_total"]:
                rounds.setdefault(h["round"], []).append(h["kept"] / h["public_total"])
    return [sum(v) / len(v) for _, v in sorted(rounds.items())]


def run_fedfr(args: argparse.Namespace, phi0: Any, split: PersonalisedSplit, test: Any, public: dict[str, Any],
              params: dict[str, Any]) -> tuple[Any, Any, float]:
    method = get_method("fedfr", public_set=public, center_init="mean-feature", **params)
    config = federated_config(args, "fedfr", {})
    t0 = time.perf_counter()
    result = run_federated(config, split.clients, eval_faces=test, initial_model=phi0, method=method)
    return method, result, time.perf_counter() - t0


def table1(args: argparse.Namespace, phi0: Any, split: PersonalisedSplit, test: Any, public: dict[str, Any],
           save: Any = None) -> dict[str, Any]:
    from federated_core.engine.evaluate import GenericEvaluator

    evaluator = GenericEvaluator(test, federated_config(args, "fedfr", {}).evaluation)
    rows: dict[str, Any] = {"φ0 (pre-trained)": {
        "generic": generic(evaluator.evaluate(phi0, args.device)),
        "personalised_model": "φ0",
        "personalised": personalised(lambda c: phi0, split, args),
    }}
    table3: dict[str, Any] = {}
    for index, (name, params) in enumerate(ROWS.items(), start=2):
        if args.rows and index not in args.rows:
            continue
        method, result, seconds = run_fedfr(args, phi0, split, test, public, params)
        which = "local+dfc" if params["dfc"] else "local"
        models = {c: method.personalised_model(result.client_states[c], which) for c in result.client_states}
        rows[name] = {
            "generic": generic(result.metrics["evaluation"][str(args.rounds)]),
            "personalised_model": "[Θ_l, Π_l]" if params["dfc"] else "Θ_l",
            "personalised": personalised(lambda c: models[c], split, args),
            "hn_share_per_round": hn_share(result),
            "seconds": seconds,
            "final_client_loss": result.metrics["rounds"][-1]["client_loss"],
        }
        if params["dfc"]:
            locals_ = {c: method.personalised_model(result.client_states[c], "local") for c in result.client_states}
            table3 = {
                "Θ_g": personalised(lambda c: result.backbone, split, args),
                "Θ_l": personalised(lambda c: locals_[c], split, args),
                "[Θ_l, Π_l]": rows[name]["personalised"],
            }
        print(f"  {name}: {seconds:.1f} s", flush=True)
        if save is not None:  # after every row, so an interrupted run keeps what it measured
            save({"table1": rows, "table3": table3})
    return {"table1": rows, "table3": table3}


def hn_sweep(args: argparse.Namespace, phi0: Any, split: PersonalisedSplit, test: Any, public: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for label, params in (("all of D_g", {"hard_negative": False}), ("t_HN = 0.4", {"t_hn": 0.4}),
                          ("t_HN = 0.8", {"t_hn": 0.8}), ("t_HN = 0.9", {"t_hn": 0.9})):
        _, result, seconds = run_fedfr(args, phi0, split, test, public, params)
        share = hn_share(result)
        out[label] = {"generic": generic(result.metrics["evaluation"][str(args.rounds)]),
                      "hn_share_mean": sum(share) / len(share), "seconds": seconds}
    return out


def fedface_comparison(args: argparse.Namespace, phi0: Any, synthetic: Any) -> dict[str, Any]:
    """Figure 4: fixed client count, 1 / 2 / 5 identities per client."""
    out: dict[str, Any] = {}
    for ids in args.fedface_ids:
        split, test, public = build_data(args, synthetic, args.fedface_clients, ids)
        row: dict[str, Any] = {}
        for name, method_name, params in (
            ("FedFace", "fedface", {"center_init": "mean-feature"}),
            ("FedFR", "fedfr", {"public_set": public, "center_init": "mean-feature"}),
        ):
            method = get_method(method_name, **params)
            t0 = time.perf_counter()
            result = run_federated(federated_config(args, method_name, {}), split.clients, eval_faces=test,
                                   initial_model=phi0, method=method)
            row[name] = {"generic": generic(result.metrics["evaluation"][str(args.rounds)]),
                         "seconds": time.perf_counter() - t0}
        from federated_core.engine.evaluate import GenericEvaluator

        row["φ0"] = {"generic": generic(GenericEvaluator(test, federated_config(args, "fedfr", {}).evaluation).evaluate(phi0, args.device))}
        out[f"{ids} ids/client"] = row
        print(f"  fedface comparison, {ids} ids/client done", flush=True)
    return out


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def print_tables(results: dict[str, Any]) -> None:
    t1 = results["table1"]
    fars, fpirs = [far_key(f) for f in FARS[:3]], [far_key(f) for f in FPIRS]
    head = (["row", "pers. model", "gen acc", *[f"gen TAR@{f}" for f in fars[:2]], *[f"pers TAR@{f}" for f in fars],
             *[f"pers TPIR@{f}" for f in fpirs], "pers TPIR@1e-3 (FedFR pairs)", "D_g kept"])
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, row in t1.items():
        g, p, q = row["generic"], row["personalised"]["nist"], row["personalised"]["fedfr-pairs"]
        kept = row.get("hn_share_per_round")
        cells = [name, row["personalised_model"], _fmt(g["accuracy"]), *[_fmt(g["tar_at_far"].get(f)) for f in fars[:2]],
                 *[_fmt(p.get(f"verification.tar_at_far.{f}")) for f in fars],
                 *[_fmt(p.get(f"identification.tpir_at_fpir.{f}")) for f in fpirs],
                 _fmt(q.get("identification.tpir_at_fpir.0.001")),
                 "—" if not kept or not any(kept) else f"{100 * sum(kept) / len(kept):.0f}%"]
        print("| " + " | ".join(cells) + " |")
    if results.get("table3"):
        print("\n| FedFR model (Table 3) | " + " | ".join(f"TAR@{f}" for f in fars) + " | "
              + " | ".join(f"TPIR@{f}" for f in fpirs) + " |\n|" + "---|" * (1 + len(fars) + len(fpirs)))
        for name, rules in results["table3"].items():
            p = rules["nist"]
            print(f"| {name} | " + " | ".join(_fmt(p.get(f"verification.tar_at_far.{f}")) for f in fars) + " | "
                  + " | ".join(_fmt(p.get(f"identification.tpir_at_fpir.{f}")) for f in fpirs) + " |")
    if results.get("hn_sweep"):
        print("\n| t_HN (Figure 3) | D_g kept | gen acc | gen TAR@0.01 | seconds |\n|---|---|---|---|---|")
        for name, row in results["hn_sweep"].items():
            g = row["generic"]
            print(f"| {name} | {100 * row['hn_share_mean']:.0f}% | {_fmt(g['accuracy'])} | "
                  f"{_fmt(g['tar_at_far'].get('0.01'))} | {row['seconds']:.0f} |")
    if results.get("fedface"):
        print("\n| ids/client (Figure 4) | φ0 acc | FedFace acc | FedFR acc | φ0 TAR@0.01 | FedFace TAR@0.01 | FedFR TAR@0.01 |"
              "\n|---|---|---|---|---|---|---|")
        for name, row in results["fedface"].items():
            accs = [_fmt(row[m]["generic"]["accuracy"]) for m in ("φ0", "FedFace", "FedFR")]
            tars = [_fmt(row[m]["generic"]["tar_at_far"].get("0.01")) for m in ("φ0", "FedFace", "FedFR")]
            print(f"| {name} | " + " | ".join(accs + tars) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/fedfr"))
    p.add_argument("--cache", type=Path, default=Path(".cache/privaudit"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every code path")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--ids-per-client", type=int, default=20)
    p.add_argument("--train-images", type=int, default=10)
    p.add_argument("--test-images", type=int, default=6)
    p.add_argument("--test-ids", type=int, default=100)
    p.add_argument("--generic-test-images", type=int, default=6)
    p.add_argument("--public-ids", type=int, default=100)
    p.add_argument("--public-images", type=int, default=8)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--rows", type=int, nargs="+", default=None, help="Table 1 rows to run (2-5; default all)")
    p.add_argument("--hn-sweep", action="store_true")
    p.add_argument("--fedface", action="store_true")
    p.add_argument("--fedface-clients", type=int, default=20)
    p.add_argument("--fedface-ids", type=int, nargs="+", default=[1, 2, 5])
    args = p.parse_args()
    if args.quick:
        args.clients, args.ids_per_client, args.train_images, args.test_images = 3, 3, 4, 3
        args.test_ids, args.generic_test_images, args.public_ids, args.public_images = 8, 3, 10, 3
        args.rounds, args.fedface_clients, args.fedface_ids = 2, 3, [1, 2]

    t0 = time.perf_counter()
    config, phi0, phi0_metrics = build_phi0(args)
    split, test, public = build_data(args, config.data, args.clients, args.ids_per_client)
    print(f"φ0 ready ({time.perf_counter() - t0:.0f} s); running Table 1", flush=True)
    results: dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "phi0_pretrain_metrics": phi0_metrics}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fedfr_ablation.json"

    def save(update: dict[str, Any] | None = None) -> None:  # after every part: an interrupted run keeps its numbers
        results.update(update or {})
        results["seconds"] = time.perf_counter() - t0
        path.write_text(json.dumps(results, indent=1, default=float))

    save(table1(args, phi0, split, test, public, save))
    if args.hn_sweep:
        results["hn_sweep"] = hn_sweep(args, phi0, split, test, public)
        save()
    if args.fedface:
        results["fedface"] = fedface_comparison(args, phi0, config.data)
        save()
    print_tables(results)
    print(f"\nwritten {path} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
