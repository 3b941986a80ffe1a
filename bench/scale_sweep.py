"""Where in the regime each headline claim holds (issue #15 item 6): the bench preset
(`privaudit.Scenario.bench`) with identities per client swept over 1, 2, 5, 20 at a fixed 100
client identities in all (100, 50, 20, 5 clients; 12 images each, so every point trains on the
same 1,200 images), and the claims' paired differences over 3 seeds at each point:

* ``fedgc>fedpe``: FedGC − FedPE (FedGC Tables 2–3 direction), TAR@FAR = 1e-3 on unseen identities;
* ``privacyface:phat>phi``: PrivacyFace φ+p̂ − φ (PrivacyFace Table 2 direction), same metric.

Each point is one `privaudit.run_audit` of the four variants (utility only, no attacks); the
differences, their 95% t intervals over seeds and verdicts are the pipeline's own claims rows
(`privaudit.claims`), nothing recomputed here. A point where a method cannot run (e.g. PrivacyFace
needs several classes per client to form clusters) is kept with the error text, never dropped.

    .venv/bin/python bench/scale_sweep.py OUT --rounds 5 --figure docs/figures/scale_sweep.png
    .venv/bin/python bench/scale_sweep.py OUT --quick    # 2 rounds, 2 seeds: a smoke run

Writes ``OUT/scale_sweep.json`` and, with ``--figure PATH``, the figure (effect ± 95% interval
against identities per client, one panel per claim).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

import privaudit as pa  # noqa: E402
from privaudit.scenario import AttackSpec, MethodSpec  # noqa: E402

IDENTITIES_PER_CLIENT = (1, 2, 5, 20)
TOTAL_IDENTITIES = 100
CLAIMS = ("fedgc>fedpe", "privacyface:phat>phi")


def methods() -> list[MethodSpec]:
    return [
        MethodSpec("fedpe"),
        MethodSpec("fedgc"),
        MethodSpec("privacyface"),
        MethodSpec("privacyface", params={"release": "none"}, label="privacyface-phi"),
    ]


def scenario_for(per_client: int, out: Path, quick: bool, rounds: int | None = None) -> pa.Scenario:
    base = pa.Scenario.bench()
    federation = dataclasses.replace(
        base.federation,
        num_clients=TOTAL_IDENTITIES // per_client,
        identities_per_client=per_client,
        partition="one-identity" if per_client == 1 else "balanced",
        batch_size=min(base.federation.batch_size, per_client * base.federation.images_per_identity),
        rounds=2 if quick else (rounds or base.federation.rounds),
    )
    return dataclasses.replace(
        base,
        name=f"sweep-ipc{per_client}",
        out=str(out / f"ipc{per_client}"),
        federation=federation,
        methods=methods(),
        attacks=AttackSpec(run=[]),
        repeats=2 if quick else base.repeats,
    )


def run_point(per_client: int, out: Path, quick: bool, rounds: int | None = None) -> dict[str, Any]:
    scenario = scenario_for(per_client, out, quick, rounds)
    t = time.perf_counter()
    try:
        pa.run_audit(scenario, progress=False)
    except ValueError as exc:  # a method that cannot run at this point: kept, with why
        return {"identities_per_client": per_client, "error": f"{type(exc).__name__}: {exc}"}
    doc = json.loads((Path(scenario.out) / "results.json").read_text())
    rows = {row["claim"]: row for row in doc.get("claims", []) if row["claim"] in CLAIMS}
    keep = ("treatment", "control", "metric", "mean", "ci_low", "ci_high", "n", "verdict", "verdict_text")
    return {
        "identities_per_client": per_client,
        "clients": scenario.federation.num_clients,
        "rounds": scenario.federation.rounds,
        "seeds": scenario.seed_list(),
        "seconds": round(time.perf_counter() - t, 1),
        "claims": {k: {f: rows[k].get(f) for f in keep} for k in CLAIMS if k in rows},
        "flags": {m["name"]: m.get("flags", []) for m in doc.get("methods", []) if m.get("flags")},
    }


def refresh(out: Path) -> dict[str, Any]:
    """Re-derive every point's claim rows from its results.json (``repeats.per_seed``) with the
    current `privaudit.claims` rules — the verdicts are a function of the per-seed values alone,
    so nothing is retrained."""
    from privaudit.claims import evaluate_claims, setting_of

    results = json.loads((out / "scale_sweep.json").read_text())
    keep = ("treatment", "control", "metric", "mean", "ci_low", "ci_high", "n", "verdict", "verdict_text")
    for point in results["points"]:
        if "error" in point:
            continue
        doc = json.loads((out / f"ipc{point['identities_per_client']}" / "results.json").read_text())
        seeds = doc["repeats"]["seeds"]
        rows = evaluate_claims(
            doc["repeats"]["per_seed"],
            doc["scenario"]["federation"]["partition"],
            setting_of(doc["scenario"], len(seeds)),
        )
        point["claims"] = {r["claim"]: {f: r.get(f) for f in keep} for r in rows if r["claim"] in CLAIMS}
    return results


def figure(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CLAIMS), figsize=(5.2 * len(CLAIMS), 3.6))
    for ax, claim in zip(axes, CLAIMS):
        xs, ys, lo, hi = [], [], [], []
        for point in results["points"]:
            row = point.get("claims", {}).get(claim)
            if row is None or row.get("mean") is None:
                continue
            xs.append(point["identities_per_client"])
            ys.append(row["mean"])
            lo.append(row["mean"] - row["ci_low"])
            hi.append(row["ci_high"] - row["mean"])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=4)
        ax.axhline(0.0, color="#888", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xticks(IDENTITIES_PER_CLIENT, [str(n) for n in IDENTITIES_PER_CLIENT])
        ax.set_xlabel("identities per client (100 client identities in all)")
        ax.set_ylabel("Δ TAR@FAR=1e-3 (95% CI, seeds)")
        ax.set_title(claim)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--quick", action="store_true", help="2 rounds, 2 seeds (smoke run)")
    p.add_argument("--figure", type=Path, default=None, help="write the figure (PNG) here")
    p.add_argument("--points", type=int, nargs="*", default=list(IDENTITIES_PER_CLIENT))
    p.add_argument("--rounds", type=int, default=None, help="rounds per run (default: the bench preset's 10)")
    p.add_argument("--refresh", action="store_true", help="recompute the claim rows of a finished sweep in OUT")
    args = p.parse_args()
    if args.refresh:
        results = refresh(args.out)
        (args.out / "scale_sweep.json").write_text(json.dumps(results, indent=1, sort_keys=True))
        if args.figure is not None:
            figure(results, args.figure)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"setting": "Scenario.bench() with identities per client swept", "points": []}
    t = time.perf_counter()
    for per_client in args.points:
        results["points"].append(run_point(per_client, args.out, args.quick, args.rounds))
        print(json.dumps(results["points"][-1]), flush=True)
        (args.out / "scale_sweep.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    results["seconds"] = round(time.perf_counter() - t, 1)
    (args.out / "scale_sweep.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    if args.figure is not None:
        figure(results, args.figure)


if __name__ == "__main__":
    main()
