"""Empirical audit of DPLC's privacy claims (issue 4): prints a table, deterministic with --seed.

(a) the mechanism of Theorem 2 alone (fixed S, a member swapped across the cap);
(b) Algorithm 1 end to end on adversarial neighbours (the densest neighbourhood flips; |S| crosses T);
(c) the end-to-end private variant (`accountants.private_dplc`) on the same neighbours.

For each: the claimed epsilon, the epsilon an accountant proves (exact for (a); none for (b)),
the Clopper-Pearson lower bound eps_lb (threshold chosen on a held-out half of the trials) with
its confidence, and the Gaussian-DP estimate eps_gdp (a lower bound only for Gaussian-shaped
mechanisms). Usage:

    .venv/bin/python bench/audit_dplc.py [--trials 20000] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accountants.dplc_audit import (  # noqa: E402
    audit_algorithm1,
    audit_private,
    audit_theorem2,
    densest_flip_pair,
    theorem2_pair,
    threshold_pair,
)

DIM, RHO, CLUSTER, THRESHOLD, DELTA = 16, 1.3, 128, 64, 1e-5


def run(trials: int, seed: int, confidence: float) -> list[dict]:
    rows = []
    common = dict(trials=trials, confidence=confidence, seed=seed)
    for epsilon, method in ((1.0, "classic"), (1.0, "analytic"), (4.0, "analytic")):
        result = audit_theorem2(dim=DIM, rho=RHO, cluster_size=CLUSTER, epsilon=epsilon, delta=DELTA, method=method, **common)
        rows.append({"part": "a", "method": method, **result.to_row()})
    flip = densest_flip_pair(DIM, RHO, CLUSTER, seed)
    crossing = threshold_pair(DIM, RHO, THRESHOLD, seed)
    edge = theorem2_pair(DIM, RHO, CLUSTER, seed)
    for scenario in (flip, crossing):
        for method in ("classic", "analytic"):
            result = audit_algorithm1(scenario, rho=RHO, min_cluster_size=THRESHOLD, epsilon=1.0, delta=DELTA,
                                      method=method, **common)
            rows.append({"part": "b", "method": method, **result.to_row()})
    for mode in ("candidates", "mean-shift"):
        for epsilon in (1.0, 4.0):
            for scenario in (flip, crossing, edge):
                result = audit_private(scenario, mode=mode, rho=RHO, min_cluster_size=THRESHOLD, epsilon=epsilon,
                                       delta=DELTA, **common)
                rows.append({"part": "c", "method": "gdp-calibrated", **result.to_row()})
    return rows


def _fmt(value) -> str:
    if value is None:
        return "none"
    return f"{value:.3f}"


def print_table(rows: list[dict]) -> None:
    header = (f"{'part':<4} {'target':<26} {'scenario':<20} {'calibration':<15} {'claim eps':>9} {'formal eps':>10} "
              f"{'eps_lb':>7} {'eps_gdp':>8} {'FP':>6} {'FN':>6} {'eval/total':>12} {'conf':>5}  within")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['part']:<4} {row['target']:<26} {row['scenario']:<20} {row['method']:<15} "
              f"{row['claimed_epsilon']:>9.3f} {_fmt(row['formal_epsilon']):>10} {row['epsilon_lb']:>7.3f} "
              f"{row['epsilon_gdp']:>8.3f} {row['false_positives']:>6} {row['false_negatives']:>6} "
              f"{row['evaluation_trials']:>5}/{row['trials']:<6} {row['confidence']:>5.2f}  "
              f"{'yes' if row['within_claim'] else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20_000, help="runs per neighbouring dataset (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = run(args.trials, args.seed, args.confidence)
    print(f"DPLC audit: d={DIM}, rho={RHO}, |S|={CLUSTER}, T={THRESHOLD}, delta={DELTA}, Q=1, "
          f"{args.trials} runs per dataset (half choose the threshold, half give the bound), seed {args.seed}")
    print_table(rows)
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
