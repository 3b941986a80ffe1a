"""PrivacyFace's analyses reproduced on our synthetic data (not the paper's numbers).

    .venv/bin/python bench/privacyface_analyses.py figure4 --out out/privacyface
    .venv/bin/python bench/privacyface_analyses.py table1  --out out/privacyface
    .venv/bin/python bench/privacyface_analyses.py figure5 --out out/privacyface
    .venv/bin/python bench/privacyface_analyses.py all --device cuda --ids-per-client 500

(If ``import accountants`` resolves to an empty namespace package -- an editable install made
before ``accountants/__init__.py`` existed -- prefix ``PYTHONPATH=.`` or re-run the set-up.)

* ``figure4`` -- Fig. 4: distributions of ``cos(p, p_hat)`` over 1,000 noise draws versus rho
  (eps = 1, Q = 1), versus eps (rho = 1.3, Q = 1) and versus eps with Q = 3 (one distribution per
  query), on class centers of the pre-trained phi0 (mean embeddings of one population group's
  identities, as the paper does with BUPT's Caucasian subset), for the classic and the analytic
  Gaussian calibration.
* ``table1`` -- Table 1 / Table 3 / Table 2: phi0, phi (conventional FL), phi + p_hat
  (``privacyface``), phi + p (``privacyface-nonoise``) and phi + W_tilde (``noisy-centers``)
  side by side on one split, with CosFace and ArcFace; ``--fedsgd`` adds App. A.2.1's FedSGD rows.
  Utility: verification accuracy and TAR@FAR on all unseen test identities, and accuracy per
  population group (the RFW columns' analogue).
* ``figure5`` -- Fig. 5b/5c: phi + p_hat versus eps and versus rho; App. A.2.7 (Fig. 9): phi and
  phi + p_hat versus the probability that one client is offline in a round.

The federated setting is the paper's (§4): four clients, one population group each, phi0
pre-trained centrally on public identities (`federated_core.pretrain`), a small public set (the
first ``--public-ids`` of phi0's identities, like CASIA's first 100 classes) to fine-tune local
models before aggregation. Every number is written to ``OUT/<analysis>.json`` and printed as a
Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from federated_core.data.faceset import FaceSet
from federated_core.engine import ClientData, EvaluationConfig, FederatedConfig, run_federated
from federated_core.methods.dplc import local_clustering, release_clusters, resolve_min_cluster_size
from federated_core.pretrain import PretrainConfig, SyntheticSpec, evaluate_backbone, pretrain

CLIENT_POOL_START = 3_000_000  # far from phi0's public ids and the scales' pools


@dataclass
class Setup:
    """The data and the initial model shared by every run of one analysis."""

    synthetic: SyntheticSpec
    phi0_path: Path
    phi0: torch.nn.Module
    phi0_metrics: dict[str, Any]
    embedding_dim: int
    clients: list[ClientData]
    test: FaceSet
    test_by_group: dict[int, FaceSet]
    public_set: dict[str, Any] | None
    info: dict[str, Any]


def _generator_kwargs(spec: SyntheticSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"seed": spec.seed, "resolution": spec.resolution, "groups": spec.groups}
    if spec.difficulty is not None:
        kwargs["difficulty"] = spec.difficulty
    return kwargs


def identities_by_group(generator: Any, groups: int, per_group: int, start: int) -> dict[int, torch.Tensor]:
    """The first ``per_group`` identities of each population group from ``start`` on."""
    out: dict[int, list[int]] = {g: [] for g in range(groups)}
    cursor = start
    while min(len(v) for v in out.values()) < per_group:
        block = torch.arange(cursor, cursor + 4 * per_group * groups, dtype=torch.int64)
        for ident, g in zip(block.tolist(), generator.group_of(block).tolist()):
            if len(out[int(g)]) < per_group:
                out[int(g)].append(ident)
        cursor += block.numel()
    return {g: torch.tensor(v, dtype=torch.int64) for g, v in out.items()}


def build_setup(args: argparse.Namespace) -> Setup:
    spec = SyntheticSpec(seed=args.data_seed, resolution=args.resolution, groups=4)
    pcfg = PretrainConfig(data=spec, epochs=args.pretrain_epochs, embedding_dim=args.embedding_dim)
    result = pretrain(pcfg, cache_dir=args.cache, device=args.device, progress=args.progress)
    if result.path is None:
        raise RuntimeError("pretrain returned no checkpoint path; pass --cache")
    gen = spec.generator()
    per_group = args.ids_per_client + args.test_ids_per_group
    ids = identities_by_group(gen, spec.groups, per_group, CLIENT_POOL_START)
    clients, tests = [], {}
    for g in range(spec.groups):
        train_ids, test_ids = ids[g][: args.ids_per_client], ids[g][args.ids_per_client :]
        clients.append(ClientData.from_faces(gen.make_set(train_ids, args.images_per_identity)))
        tests[g] = gen.make_set(test_ids, args.test_images_per_identity)
    public = None
    if args.public_ids > 0:
        public = {
            "identities": [pcfg.train_identities[0], pcfg.train_identities[0] + args.public_ids],
            "images_per_identity": args.public_images_per_identity,
            "generator": _generator_kwargs(spec),
            "epochs": 1,
        }
    info = {
        "synthetic": dataclasses.asdict(spec),
        "pretrain": pcfg.to_dict(),
        "clients": [{"group": g, "classes": c.num_classes, "images": len(c)} for g, c in enumerate(clients)],
        "test_identities_per_group": args.test_ids_per_group,
        "public_set": public,
    }
    return Setup(
        spec, result.path, result.backbone.eval(), result.metrics, args.embedding_dim, clients,
        FaceSet.concat(list(tests.values())), tests, public, info,
    )


# ----------------------------------------------------------------------------------------------
# Figure 4
# ----------------------------------------------------------------------------------------------


def phi0_class_centers(setup: Setup, group: int, identities: int, images: int, device: str) -> torch.Tensor:
    """Normalised mean phi0 embedding of each of ``identities`` identities of ``group``."""
    from federated_core.models import embed

    gen = setup.synthetic.generator()
    ids = identities_by_group(gen, setup.synthetic.groups, identities, CLIENT_POOL_START + 5_000_000)[group]
    faces = gen.make_set(ids, images)
    emb = embed(setup.phi0, faces, device=device)
    _, local = torch.unique(faces.labels, return_inverse=True)
    sums = torch.zeros(len(ids), emb.shape[1]).index_add_(0, local, emb)
    return F.normalize(sums, dim=1)


def cos_stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
        "q05": float(np.quantile(values, 0.05)), "median": float(np.median(values)),
        "frac_above_0.7": float((values > 0.7).mean()),
    }


def figure4(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    centers = phi0_class_centers(setup, args.fig4_group, args.fig4_identities, args.fig4_images, args.device)
    n = centers.shape[0]
    delta = 1.0 / (n * args.fig4_images)  # 1/|D| of the images behind these centers
    settings = (
        [("a: eps=1, Q=1, rho varies", rho, 1.0, 1) for rho in args.fig4_rhos]
        + [("b: rho=1.3, Q=1, eps varies", 1.3, eps, 1) for eps in args.fig4_epsilons]
        + [(f"c: rho={rho}, Q=3, eps varies", rho, eps, 3) for rho in args.fig4_q3_rhos for eps in args.fig4_epsilons_q3]
    )
    t = resolve_min_cluster_size(args.fig4_min_cluster_size, n)
    rows = []
    draws_out: dict[str, list[list[float]]] = {}
    for panel, rho, eps, q in settings:
        clustering = local_clustering(centers, rho=rho, min_cluster_size=t, max_queries=q)
        for calibration in ("classic", "analytic"):
            cos = np.zeros((args.fig4_draws, clustering.num_clusters))
            rel = None
            for i in range(args.fig4_draws):
                rel = release_clusters(
                    clustering, eps, delta, calibration=calibration, generator=torch.Generator().manual_seed(i)
                )
                cos[i] = F.cosine_similarity(rel.noisy_centers, clustering.centers, dim=1).numpy()
            for k in range(clustering.num_clusters):
                assert rel is not None
                rows.append({
                    "panel": panel, "rho": rho, "epsilon": eps, "Q": q, "query": k + 1, "calibration": calibration,
                    "cluster_size": int(clustering.sizes[k]), "sigma": float(rel.sigmas[k]),
                    "norm_p": float(clustering.centers[k].norm()), **cos_stats(cos[:, k]),
                })
                draws_out[f"{panel}|rho={rho}|eps={eps}|Q={q}|{calibration}|query={k + 1}"] = cos[:, k].round(5).tolist()
            if clustering.num_clusters == 0:
                rows.append({"panel": panel, "rho": rho, "epsilon": eps, "Q": q, "query": None, "calibration": calibration,
                             "cluster_size": clustering.last_largest, "note": f"largest neighbourhood {clustering.last_largest} < T={t}"})
    pairwise = (centers @ centers.t())[~torch.eye(n, dtype=torch.bool)]
    out = {
        "classes": n, "embedding_dim": int(centers.shape[1]), "delta": delta, "min_cluster_size": t,
        "pairwise_cos": {"mean": float(pairwise.mean()), "std": float(pairwise.std()),
                         "frac_within_1.3": float((pairwise >= math.cos(1.3)).float().mean())},
        "draws": args.fig4_draws, "group": args.fig4_group, "rows": rows,
    }
    if args.plots:
        _plot_figure4(draws_out, Path(args.out) / "figure4.png")
    return out


def _plot_figure4(draws: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({k.split("|")[0] for k in draws})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    for ax, panel in zip(np.atleast_1d(axes), panels):
        for key, values in draws.items():
            if key.startswith(panel + "|") and "|classic|" in key:
                label = "|".join(part for part in key.split("|")[1:] if part != "classic")
                ax.hist(values, bins=40, histtype="step", label=label)
        ax.set_title(panel)
        ax.set_xlabel("cos(p, p_hat)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------------------------
# federated runs
# ----------------------------------------------------------------------------------------------


def group_accuracy(backbone: torch.nn.Module, faces: FaceSet, pairs: int, device: str) -> float:
    """10-fold verification accuracy on one group's test identities (pairs capped at what exists)."""
    _, counts = torch.unique(faces.labels, return_counts=True)
    genuine = int((counts * (counts - 1) // 2).sum())
    n = min(pairs, genuine)
    return float(evaluate_backbone(backbone, faces, n, n, device=device)["accuracy"])


def run_one(
    setup: Setup, args: argparse.Namespace, method: str, loss: str, params: dict[str, Any] | None = None,
    offline: float = 0.0, seed: int = 0, label: str | None = None,
) -> dict[str, Any]:
    s, m = (args.scale, 0.35) if loss == "cosface" else (args.scale, 0.5)
    method_params = {"loss": loss, "s": s, "m": m, "public_set": setup.public_set,
                     "min_cluster_size": args.min_cluster_size, **(params or {})}
    config = FederatedConfig(
        method=method, method_params=method_params, rounds=args.rounds, local_epochs=args.local_epochs,
        batch_size=args.batch_size, lr=args.lr, seed=seed, device=args.device, eval_initial=False, eval_every=0,
        offline_probability=offline, progress=args.progress, initial_backbone=str(setup.phi0_path),
        evaluation=EvaluationConfig(genuine_pairs=args.pairs, impostor_pairs=args.pairs, fars=(1e-1, 1e-2, 1e-3), seed=0),
    )
    start = time.perf_counter()
    result = run_federated(config, setup.clients, eval_faces=setup.test)
    seconds = time.perf_counter() - start
    evaluation = result.metrics["evaluation"][str(args.rounds)]
    per_group = {
        str(g): group_accuracy(result.backbone, faces, args.pairs // 4, args.device) for g, faces in setup.test_by_group.items()
    }
    releases = [r for st in result.client_states.values() for r in st.meta.get("dplc_releases", [])]
    inside = caps_coverage(result, setup.clients, method_params.get("rho", 1.3), args.device)
    return {
        "features_inside_other_caps": inside,
        "label": label or method, "method": method, "loss": loss, "offline_probability": offline, "seed": seed,
        "params": {k: v for k, v in method_params.items() if k != "public_set"},
        "accuracy": evaluation["verification"]["accuracy"],
        "tar_at_far": evaluation["verification"].get("tar_at_far"),
        "auroc": evaluation["verification"].get("auroc"),
        "accuracy_per_group": per_group,
        "releases": len(releases),
        "cluster_sizes": sorted({r.get("cluster_size") for r in releases if r.get("cluster_size") is not None}),
        "min_cluster_size_per_client": [st.meta.get("min_cluster_size") for st in result.client_states.values()],
        "seconds": seconds,
    }


def caps_coverage(result: Any, clients: list[ClientData], rho: float, device: str) -> float | None:
    """Fraction of the clients' training features (final global model) that lie inside the cap of
    angle ``rho`` around at least one cluster center released by *another* client in the last
    round: there Eq. 5's term is the constant ``s`` (no gradient; only the denominator grows)."""
    from federated_core.engine.messages import SERVER
    from federated_core.models import embed

    last = max((m.round for m in result.wire), default=0)
    relay = [m for m in result.wire if m.sender == SERVER and m.round == last and "owners" in m.tensors]
    if not relay:
        return None
    centers = F.normalize(relay[0].tensors["centers"].float(), dim=1)
    owners = relay[0].tensors["owners"]
    hits, total = 0, 0
    for cid, data in enumerate(clients):
        others = centers[owners != cid]
        if others.shape[0] == 0:
            continue
        emb = embed(result.backbone, data.faces, device=device)
        hits += int(((emb @ others.t()) >= math.cos(rho)).any(dim=1).sum())
        total += emb.shape[0]
    return hits / total if total else None


def phi0_row(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    from federated_core.engine.evaluate import GenericEvaluator

    ev = GenericEvaluator(setup.test, EvaluationConfig(genuine_pairs=args.pairs, impostor_pairs=args.pairs,
                                                        fars=(1e-1, 1e-2, 1e-3), seed=0)).evaluate(setup.phi0, args.device)
    per_group = {
        str(g): group_accuracy(setup.phi0, faces, args.pairs // 4, args.device) for g, faces in setup.test_by_group.items()
    }
    return {"label": "phi0", "method": "-", "loss": "-", "accuracy": ev["verification"]["accuracy"],
            "tar_at_far": ev["verification"].get("tar_at_far"), "auroc": ev["verification"].get("auroc"),
            "accuracy_per_group": per_group}


TABLE1_METHODS = (
    ("phi", "privacyface", {"release": "none"}),
    ("phi + p_hat", "privacyface", {}),
    ("phi + p", "privacyface-nonoise", {}),
    ("phi + W_tilde", "noisy-centers", {}),
)


def run_seeds(
    setup: Setup, args: argparse.Namespace, method: str, loss: str, params: dict[str, Any] | None = None,
    offline: float = 0.0, label: str | None = None,
) -> dict[str, Any]:
    """`run_one` for seeds ``0..args.seeds-1`` (client sampling, offline draws, batches, DPLC noise;
    the data split is fixed) with the mean and standard deviation of every utility number."""
    runs = [run_one(setup, args, method, loss, params, offline=offline, seed=seed, label=label) for seed in range(args.seeds)]
    row = {k: v for k, v in runs[0].items() if k not in ("seed", "seconds")}
    row["seeds"] = args.seeds
    row["runs"] = runs

    def stat(values: list[float]) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values))

    row["accuracy"], row["accuracy_std"] = stat([r["accuracy"] for r in runs])
    row["tar_at_far"] = {k: stat([r["tar_at_far"][k] for r in runs])[0] for k in (runs[0]["tar_at_far"] or {})
                         if all(isinstance(r["tar_at_far"].get(k), (int, float)) for r in runs)}
    row["tar_at_far_std"] = {k: stat([r["tar_at_far"][k] for r in runs])[1] for k in row["tar_at_far"]}
    row["accuracy_per_group"] = {g: stat([r["accuracy_per_group"][g] for r in runs])[0] for g in runs[0]["accuracy_per_group"]}
    row["releases"] = sum(r["releases"] for r in runs)
    row["cluster_sizes"] = sorted({c for r in runs for c in r["cluster_sizes"]})
    row["seconds"] = float(sum(r["seconds"] for r in runs))
    cover = [r["features_inside_other_caps"] for r in runs if r.get("features_inside_other_caps") is not None]
    row["features_inside_other_caps"] = float(np.mean(cover)) if cover else None
    _print_rows([row])
    return row


def table1(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    rows = [phi0_row(setup, args)]
    _print_rows(rows)
    for loss in args.losses:
        for label, method, params in TABLE1_METHODS:
            rows.append(run_seeds(setup, args, method, loss, params, label=label))
    if args.fedsgd:
        for label, method, params in TABLE1_METHODS[:3]:
            rows.append(run_seeds(setup, args, method, "arcface", {**params, "aggregation": "fedsgd"}, label=label + " (FedSGD)"))
    return {"rows": rows}


def figure5(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    loss = args.losses[0]
    rows = [run_seeds(setup, args, "privacyface", loss, {"release": "none"}, label="phi")]
    for eps in args.fig5_epsilons:
        rows.append(run_seeds(setup, args, "privacyface", loss, {"epsilon": eps}, label=f"phi + p_hat eps={eps}"))
    rows.append(run_seeds(setup, args, "privacyface-nonoise", loss, {}, label="phi + p"))
    rows.append(run_seeds(setup, args, "privacyface", loss, {"release": "random-control"},
                          label="phi + random directions"))
    for rho in args.fig5_rhos:
        rows.append(run_seeds(setup, args, "privacyface", loss, {"rho": rho}, label=f"phi + p_hat rho={rho}"))
    for p in args.offline:
        for label, method, params in TABLE1_METHODS[:2]:
            rows.append(run_seeds(setup, args, method, loss, params, offline=p, label=f"{label} offline={p}"))
    return {"rows": rows}


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        tar = r.get("tar_at_far") or {}
        tars = " ".join(f"{k}:{v:.3f}" for k, v in sorted(tar.items()) if isinstance(v, (int, float)))
        groups = " ".join(f"{g}:{v:.3f}" for g, v in sorted(r.get("accuracy_per_group", {}).items()))
        std = f" ± {r['accuracy_std']:.4f}" if "accuracy_std" in r else ""
        print(f"| {r['label']:<28} | {r['loss']:<8} | acc {r['accuracy']:.4f}{std} | TAR {tars} | groups {groups} | "
              f"releases {r.get('releases', '-')} sizes {r.get('cluster_sizes', '-')} | inside caps "
              f"{r.get('features_inside_other_caps')} |", flush=True)


def _print_figure4(out: dict[str, Any]) -> None:
    print(f"Figure 4 on phi0 class centers: n={out['classes']} d={out['embedding_dim']} T={out['min_cluster_size']} "
          f"delta={out['delta']:.2e} draws={out['draws']} pairwise cos {json.dumps(out['pairwise_cos'])}")
    print("| panel | rho | eps | Q | query | calibration | |S| | sigma | mean cos | std | q05 |")
    for r in out["rows"]:
        if r.get("query") is None:
            print(f"| {r['panel']} | {r['rho']} | {r['epsilon']} | {r['Q']} | - | {r['calibration']} | {r['note']} |")
            continue
        print(f"| {r['panel']} | {r['rho']} | {r['epsilon']} | {r['Q']} | {r['query']} | {r['calibration']} | "
              f"{r['cluster_size']} | {r['sigma']:.4g} | {r['mean']:.4f} | {r['std']:.4f} | {r['q05']:.4f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("analysis", choices=["figure4", "table1", "figure5", "all"])
    p.add_argument("--out", type=Path, default=Path("out/privacyface"))
    p.add_argument("--cache", type=Path, default=Path(".cache/privaudit"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--plots", action="store_true")
    # data and phi0
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--pretrain-epochs", type=int, default=12)
    p.add_argument("--ids-per-client", type=int, default=60)
    p.add_argument("--images-per-identity", type=int, default=6)
    p.add_argument("--test-ids-per-group", type=int, default=40)
    p.add_argument("--test-images-per-identity", type=int, default=5)
    p.add_argument("--public-ids", type=int, default=50)
    p.add_argument("--public-images-per-identity", type=int, default=4)
    # federated training (paper: M = 10 rounds, lr 0.001 on a 512-batch; ours is a small CNN)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--scale", type=float, default=30.0)
    p.add_argument("--losses", nargs="+", default=["cosface", "arcface"])
    p.add_argument("--min-cluster-size", type=float, default=0.1)
    p.add_argument("--pairs", type=int, default=3000)
    p.add_argument("--fedsgd", action="store_true")
    # figure 4
    p.add_argument("--fig4-group", type=int, default=2)
    p.add_argument("--fig4-identities", type=int, default=2000)
    p.add_argument("--fig4-images", type=int, default=4)
    p.add_argument("--fig4-draws", type=int, default=1000)
    p.add_argument("--fig4-min-cluster-size", type=float, default=0.05)
    p.add_argument("--fig4-rhos", type=float, nargs="+", default=[0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4])
    p.add_argument("--fig4-q3-rhos", type=float, nargs="+", default=[1.3, 0.9])
    p.add_argument("--fig4-epsilons", type=float, nargs="+", default=[0.1, 0.3, 0.5, 1.0])
    p.add_argument("--fig4-epsilons-q3", type=float, nargs="+", default=[0.33, 1.0])
    # figure 5
    p.add_argument("--fig5-epsilons", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    p.add_argument("--fig5-rhos", type=float, nargs="+", default=[1.2, 1.3, 1.4])
    p.add_argument("--offline", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    args = p.parse_args()
    if args.min_cluster_size >= 1 and float(args.min_cluster_size).is_integer():
        args.min_cluster_size = int(args.min_cluster_size)
    if args.fig4_min_cluster_size >= 1 and float(args.fig4_min_cluster_size).is_integer():
        args.fig4_min_cluster_size = int(args.fig4_min_cluster_size)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    setup = build_setup(args)
    print(f"phi0: {setup.phi0_metrics.get('accuracy')} verification accuracy on unseen identities; setup {json.dumps(setup.info['clients'])}")
    todo = ["figure4", "table1", "figure5"] if args.analysis == "all" else [args.analysis]
    for name in todo:
        start = time.perf_counter()
        out = {"figure4": figure4, "table1": table1, "figure5": figure5}[name](setup, args)
        out["setup"] = setup.info
        out["seconds"] = time.perf_counter() - start
        (args.out / f"{name}.json").write_text(json.dumps(out, indent=1, default=float))
        if name == "figure4":
            _print_figure4(out)
        print(f"{name}: {out['seconds']:.1f} s -> {args.out / (name + '.json')}", flush=True)


if __name__ == "__main__":
    main()
