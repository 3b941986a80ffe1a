"""PSNR / SSIM of Inverting Gradients against its iteration budget, on the demo substrate: where
the curve plateaus is the budget the demo audit uses (`privaudit.scenario.AttackSpec`).

    .venv/bin/python bench/bench_gradient_budget.py                    # CPU, ~10 min on 2 cores
    .venv/bin/python bench/bench_gradient_budget.py --iterations 40 200 --images 1 --no-logged
    .venv/bin/python bench/bench_gradient_budget.py --only-logged          # the logged-update curve only

Substrate: the demo scenario's φ0 (`privaudit.pipeline.pretrain_config_for(Scenario.demo())`,
trained or loaded from ``--cache``, the audit's own cache by default) and its clients' images
(`federated_core.scales.build_federated_data`).

* **Simulated single-image probe** (what `attacks.run._gradient` runs in the audit on the first
  backbone-only method): one image of a client, one local SGD step at the federation's learning
  rate on φ0 with a CosFace head over the image's class plus 8 fixed negatives, labels known, the
  head's update not observed; inverted with breaching's recipe (cosine objective, TV ``--tv``,
  signed Adam at 0.1, step decay, ``--restarts`` restarts keeping the best loss) for each budget
  in ``--iterations`` (per restart). ``--images`` clients each contribute their first image. The
  old defaults (TV 1e-4, one restart) are run at ``--baseline-iterations`` for comparison.
* **Logged update** (`attacks.logged_update`): one FedPE round of the demo federation from φ0
  (`federated_core.engine.run_federated`), and the server's inversion of client 0's real upload
  (8 dummies) for each budget in ``--logged-iterations``; PSNR against the client's nearest real
  image, beside the same reconstructions scored against the clients not attacked (the null over
  clients; PSNR statistic, no evaluator here) and the exact permutation p-value.

Writes the numbers (``--json``) and a figure (``--figure``). Seconds are wall-clock on this
machine with ``--threads`` torch threads; the load average is recorded (other processes slow it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _probe(backbone: Any, faces: Any, iterations: int, restarts: int, tv: float, lr: float) -> dict[str, Any]:
    from attacks.gradient import GradientProbeConfig, run_gradient_probe

    cfg = GradientProbeConfig(
        backbone=backbone.build_config["name"],
        embedding_dim=int(backbone.embedding_dim),
        resolution=int(backbone.resolution),
        model_state="trained",
        head="cosface",
        extra_negatives=8,  # as attacks.run does for a one-class probe
        num_images=1,
        batch_size=1,
        local_steps=1,
        local_lr=lr,
        label_source="known",
        head_observed=False,  # a backbone-only method (FedPE), like the audit's probe
        iterations=iterations,
        restarts=restarts,
        tv_weight=tv,
    )
    t0 = time.perf_counter()
    r = run_gradient_probe(cfg, faces, trained_backbone=backbone)
    return {
        "iterations": iterations,
        "restarts": restarts,
        "tv_weight": tv,
        "psnr": float(r.psnr.mean()),
        "ssim": float(r.ssim.mean()),
        "final_loss": float(r.loss_history[-1]),
        "seconds": time.perf_counter() - t0,
    }


def _logged(args: argparse.Namespace, sc: Any, pcfg: Any, phi0_path: Path, data: Any, scale: Any) -> dict[str, Any]:
    from attacks.logged_update import LoggedUpdateProbeConfig, invert_logged_update
    from attacks.views import observer_view
    from federated_core.engine import run_federated
    from federated_core.scales import federated_config

    config = federated_config(
        scale,
        "fedpe",
        seed=sc.seed,
        rounds=1,
        progress=False,
        initial_backbone=str(phi0_path),
        backbone=pcfg.backbone,
        embedding_dim=pcfg.embedding_dim,
        resolution=pcfg.resolution,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "fedpe"
        run_federated(config, data.clients, out_dir=run_dir, data_spec=data.data_spec)
        view = observer_view(run_dir, "server")
        gen = pcfg.data.generator()
        spec = data.data_spec["clients"]
        faces = {
            p: gen.make_set(torch.tensor(s["identities"]), s["images_per_identity"], start_index=s["start_index"])
            for p, s in spec.items()
        }
        attacked = "client:0"
        for it in args.logged_iterations:
            t0 = time.perf_counter()
            r = invert_logged_update(
                view,
                LoggedUpdateProbeConfig(
                    client=attacked,
                    round="first",
                    dummies=args.logged_dummies,
                    iterations=it,
                    restarts=args.restarts,
                    tv_weight=args.tv,
                ),
                faces[attacked],
                granted_classes=len(spec[attacked]["identities"]),
                local_lr=config.lr,
                weight_decay=config.weight_decay,
                local_epochs=config.local_epochs,
                batch_size=config.batch_size,
                null_faces={p: f for p, f in faces.items() if p != attacked},
            )
            s = r.summary()
            rows.append(
                {
                    "iterations": it,
                    "restarts": args.restarts,
                    "tv_weight": args.tv,
                    "dummies": s["num_images"],
                    "psnr": s["psnr"],
                    "ssim": s["ssim"],
                    "update_cosine": s["update_cosine"],
                    "null_psnr": s["null_psnr"],
                    "null_ssim": s["null_ssim"],
                    "permutation_p_psnr": s["permutation_p_psnr"],
                    "units": s["units"],
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(f"logged   it={it:5d}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if k != "iterations"))
    return {"client": "client:0", "round": 1, "method": "fedpe", "rows": rows}


def _plateau(rows: list[dict[str, Any]], tolerance_db: float) -> int:
    """Smallest budget whose mean PSNR is within ``tolerance_db`` of the best budget's."""
    by_it: dict[int, list[float]] = {}
    for r in rows:
        by_it.setdefault(r["iterations"], []).append(r["psnr"])
    means = {it: float(np.mean(v)) for it, v in by_it.items()}
    best = max(means.values())
    return min(it for it, m in means.items() if m >= best - tolerance_db)


def _figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    probe = result["probe"]
    n_panels = 2 if result.get("logged") else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 3.8), squeeze=False)
    ax = axes[0][0]
    its = sorted({r["iterations"] for r in probe["rows"]})
    for img in sorted({r["image"] for r in probe["rows"]}):
        pts = sorted((r["iterations"], r["psnr"]) for r in probe["rows"] if r["image"] == img)
        ax.plot(*zip(*pts), color="tab:blue", alpha=0.35, lw=1, marker=".")
    mean = [np.mean([r["psnr"] for r in probe["rows"] if r["iterations"] == it]) for it in its]
    secs = [np.mean([r["seconds"] for r in probe["rows"] if r["iterations"] == it]) for it in its]
    ax.plot(its, mean, color="tab:blue", lw=2, marker="o", label=f"TV {probe['tv_weight']:g}, {probe['restarts']} restarts")
    for it, m, s in zip(its, mean, secs):
        ax.annotate(f"{s:.0f} s", (it, m), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    if probe["baseline_rows"]:
        b_its = sorted({r["iterations"] for r in probe["baseline_rows"]})
        b_mean = [np.mean([r["psnr"] for r in probe["baseline_rows"] if r["iterations"] == it]) for it in b_its]
        ax.plot(b_its, b_mean, color="tab:gray", ls="--", marker="s", label="old default: TV 1e-4, 1 restart")
    ax.axhline(17, color="tab:red", lw=0.8, ls=":", label="17 dB target")
    ax.axvline(probe["plateau_iterations"], color="tab:green", lw=0.8, ls="-.", label="plateau (chosen)")
    ax.set_xscale("log")
    ax.set_xticks(its, [str(i) for i in its])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(y=0.12)
    ax.set_xlabel("iterations per restart")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"simulated single-image probe ({len(probe['images'])} image(s), φ0, demo)", fontsize=9)
    ax2 = ax.twinx()
    ssim_mean = [np.mean([r["ssim"] for r in probe["rows"] if r["iterations"] == it]) for it in its]
    ax2.plot(its, ssim_mean, color="tab:orange", lw=1, marker="^", label="SSIM (right)")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("SSIM")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    if result.get("logged"):
        ax = axes[0][1]
        rows = result["logged"]["rows"]
        x = [r["iterations"] for r in rows]
        ax.plot(x, [r["psnr"] for r in rows], marker="o", label="attacked client (nearest real image)")
        ax.plot(x, [r["null_psnr"] for r in rows], marker="s", ls="--", color="tab:gray", label="null: other clients")
        for r in rows:
            ax.annotate(
                f"{r['seconds']:.0f} s, p={r['permutation_p_psnr']:.2f}",
                (r["iterations"], r["psnr"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
        ax.set_xscale("log")
        ax.set_xticks(x, [str(i) for i in x])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(y=0.12)
        ax.set_xlabel("iterations per restart")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(
            f"logged FedPE update, {rows[0]['dummies']} dummies, K={rows[0]['units']} clients (p: exact permutation)",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, nargs="+", default=[40, 200, 1000, 3000])
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--tv", type=float, default=0.2)
    ap.add_argument("--images", type=int, default=2, help="clients whose first image is probed")
    ap.add_argument("--baseline-iterations", type=int, nargs="*", default=[40, 200])
    ap.add_argument("--logged-iterations", type=int, nargs="*", default=[50, 100, 200, 500])
    ap.add_argument("--logged-dummies", type=int, default=8)
    ap.add_argument("--no-logged", action="store_true")
    ap.add_argument(
        "--only-logged", action="store_true", help="rerun the logged-update curve only, into the existing --json"
    )
    ap.add_argument("--plateau-tolerance", type=float, default=0.5, help="dB below the best budget's mean PSNR")
    ap.add_argument("--cache", type=Path, default=Path("out/cache"), help="φ0 cache (the audit's by default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=HERE / "gradient_budget.json")
    ap.add_argument("--figure", type=Path, default=HERE / "figures" / "gradient_budget.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from federated_core.pretrain import pretrain
    from federated_core.scales import build_federated_data
    from privaudit.pipeline import federated_scale_for, pretrain_config_for
    from privaudit.scenario import Scenario

    started = time.perf_counter()
    load_start = os.getloadavg()
    sc = Scenario.demo()
    pcfg = pretrain_config_for(sc)
    phi0 = pretrain(pcfg, cache_dir=args.cache, progress=False)
    scale = federated_scale_for(sc)
    data = build_federated_data(scale, pcfg.data, seed=sc.seed)
    backbone = phi0.backbone.eval()
    gen = pcfg.data.generator()
    images = []
    for party in sorted(data.data_spec["clients"])[: args.images]:
        s = data.data_spec["clients"][party]
        images.append((party, s["identities"][0], gen.make_set(torch.tensor(s["identities"][:1]), 1, start_index=0)))

    if args.only_logged:
        result = json.loads(args.json.read_text())
        result["logged"] = _logged(args, sc, pcfg, Path(phi0.path), data, scale)
        result["machine"]["logged_load_average_end"] = os.getloadavg()
        args.json.write_text(json.dumps(result, indent=2))
        _figure(result, args.figure)
        print(f"wrote the logged-update curve into {args.json} and {args.figure}")
        return
    _probe(backbone, images[0][2], 2, 1, args.tv, scale.lr)  # warm-up: the first call pays for torch's set-up
    rows, baseline = [], []
    for party, identity, faces in images:
        for it in args.iterations:
            r = {"image": f"{party}/identity {identity}", **_probe(backbone, faces, it, args.restarts, args.tv, scale.lr)}
            rows.append(r)
            print(f"probe    {r['image']} it={it:5d}: PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} {r['seconds']:.1f} s")
        for it in args.baseline_iterations:
            r = {"image": f"{party}/identity {identity}", **_probe(backbone, faces, it, 1, 1e-4, scale.lr)}
            baseline.append(r)
            print(f"baseline {r['image']} it={it:5d}: PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} {r['seconds']:.1f} s")
    plateau = _plateau(rows, args.plateau_tolerance)
    summary = {}
    for it in args.iterations:
        sel = [r for r in rows if r["iterations"] == it]
        summary[str(it)] = {k: float(np.mean([r[k] for r in sel])) for k in ("psnr", "ssim", "seconds")}
    result: dict[str, Any] = {
        "substrate": {
            "scenario": "demo",
            "phi0_fingerprint": pcfg.fingerprint(),
            "backbone": pcfg.backbone,
            "embedding_dim": pcfg.embedding_dim,
            "resolution": pcfg.resolution,
            "local_lr": scale.lr,
        },
        "probe": {
            "restarts": args.restarts,
            "tv_weight": args.tv,
            "images": [f"{p}/identity {i}" for p, i, _ in images],
            "rows": rows,
            "baseline_rows": baseline,
            "mean_by_iterations": summary,
            "plateau_iterations": plateau,
            "plateau_tolerance_db": args.plateau_tolerance,
        },
        "logged": None,
    }
    if not args.no_logged and args.logged_iterations:
        result["logged"] = _logged(args, sc, pcfg, Path(phi0.path), data, scale)
    result["machine"] = {
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "total_seconds": time.perf_counter() - started,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    _figure(result, args.figure)
    print(f"plateau at {plateau} iterations per restart; wrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
