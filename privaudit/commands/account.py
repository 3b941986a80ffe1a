"""`privaudit account`: formal DP accounting from the command line.

    privaudit account dplc --rho 1.3 --epsilon 1 --delta 5e-5 --cluster-size 512 [--dim 512]
                           [--queries Q] [--rounds M] [--json]

prints, for PrivacyFace's DPLC: both sensitivity bounds (Theorems 2 and 3), sigma under both
calibrations (classic and analytic Gaussian), the occupancy ratio of a cluster (Theorem 1), the
expected noise norm and the cosine bound (Properties 3-4), and epsilon over Q queries x M rounds
under every accountant, next to the paper's basic-composition claim (Property 2). Bad input exits
with code 2 (the CLI turns the library's ValueError into a message on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from typing import Any

ACCOUNTANT_ORDER = ("basic", "advanced", "rdp", "prv", "gdp")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "account",
        help="formal DP accounting (DPLC: sensitivity, sigma, epsilon)",
        description="Formal differential-privacy accounting.",
    )
    targets = parser.add_subparsers(dest="account_target", metavar="TARGET")
    dplc = targets.add_parser(
        "dplc",
        help="PrivacyFace's DPLC: Theorems 1-3, sigma, epsilon over queries x rounds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dplc.add_argument("--rho", type=float, required=True, help="cluster margin rho in (0, pi]")
    dplc.add_argument("--epsilon", type=float, required=True, help="per-query epsilon > 0")
    dplc.add_argument("--delta", type=float, required=True, help="per-query delta in (0, 1)")
    dplc.add_argument("--cluster-size", type=int, required=True, help="|S| >= 1")
    dplc.add_argument("--dim", type=int, default=512, help="embedding dimension d >= 2 (default: 512)")
    dplc.add_argument("--queries", type=int, default=1, help="queries Q per round (default: 1)")
    dplc.add_argument("--rounds", type=int, default=1, help="communication rounds M (default: 1)")
    dplc.add_argument("--json", action="store_true", help="print one JSON object")
    dplc.set_defaults(func=run_dplc)

    def no_target(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=no_target)


def dplc_report(
    rho: float, epsilon: float, delta: float, cluster_size: int, dim: int = 512, queries: int = 1, rounds: int = 1
) -> dict[str, Any]:
    """Everything `privaudit account dplc` prints, as a plain dict.

    Sensitivity: PrivacyFace Theorems 2 (tight) and 3 (weak); occupancy ratio: Theorem 1; noise
    norm and cosine bound: Properties 3-4; the claimed total epsilon: basic composition
    (Property 2) over ``queries x rounds`` releases, beside every accountant's answer.
    """
    epsilon, delta, queries, rounds, dim = _checked_inputs(epsilon, delta, queries, rounds, dim)
    releases = queries * rounds
    delta_total = _checked_total_delta(delta, queries, rounds)
    tight, weak, sigma, notes = _sensitivity_and_sigma(rho, cluster_size, epsilon, delta)
    report = _per_query_report(
        rho, epsilon, delta, cluster_size, dim, queries, rounds, tight, weak, sigma, releases, delta_total
    )
    report["sigma_weak_bound"] = _weak_bound_sigma(weak, epsilon, delta, sigma)
    notes += _compose_epsilon_totals(report, sigma, tight, releases, delta_total)
    report["warnings"] = list(dict.fromkeys(notes))
    return report


def _checked_inputs(
    epsilon: float, delta: float, queries: int, rounds: int, dim: int
) -> tuple[float, float, int, int, int]:
    """Validate the per-query epsilon and delta, the counts and the dimension (CLI option names in errors)."""
    from accountants._validation import check_delta, check_epsilon, check_int

    epsilon = check_epsilon(epsilon, "--epsilon")
    delta = check_delta(delta, "--delta")
    queries = check_int("--queries", queries, 1)
    rounds = check_int("--rounds", rounds, 1)
    dim = check_int("--dim", dim, 2)
    return epsilon, delta, queries, rounds, dim


def _checked_total_delta(delta: float, queries: int, rounds: int) -> float:
    """The total delta of Property 2 (``delta x Q x M``), which must stay below 1."""
    delta_total = queries * rounds * delta
    if not delta_total < 1.0:
        raise ValueError(
            f"--delta x --queries x --rounds (the total delta of Property 2) must be in (0, 1); "
            f"got {delta!r} x {queries} x {rounds} = {delta_total!r}"
        )
    return delta_total


def _sensitivity_and_sigma(
    rho: float, cluster_size: int, epsilon: float, delta: float
) -> tuple[float, float, dict[str, float], list[str]]:
    """Tight (Thm 2) and weak (Thm 3) sensitivity, sigma of the tight one under both calibrations, and the warnings raised."""
    from accountants import dplc_sensitivity, gaussian_sigma

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tight = dplc_sensitivity(rho, cluster_size, "tight")
        weak = dplc_sensitivity(rho, cluster_size, "weak")
        sigma = {
            "classic": gaussian_sigma(tight, epsilon, delta, method="classic"),
            "analytic": gaussian_sigma(tight, epsilon, delta, method="analytic"),
        }
    return tight, weak, sigma, [str(item.message) for item in caught]


def _per_query_report(
    rho: float,
    epsilon: float,
    delta: float,
    cluster_size: int,
    dim: int,
    queries: int,
    rounds: int,
    tight: float,
    weak: float,
    sigma: dict[str, float],
    releases: int,
    delta_total: float,
) -> dict[str, Any]:
    """The report's inputs and per-query quantities (Thm 1, Props 3-4); the totals are filled in later."""
    from accountants import dplc_cosine_lower_bound, expected_noise_norm, gaussian_epsilon, occupancy_ratio

    return {
        "inputs": {
            "rho": rho,
            "epsilon": epsilon,
            "delta": delta,
            "cluster_size": cluster_size,
            "dim": dim,
            "queries": queries,
            "rounds": rounds,
        },
        "unit": "class-center",  # neighbours: one class center replaced (PrivacyFace Definition 1)
        "sensitivity": {"tight": tight, "weak": weak},
        "sigma": sigma,
        "sigma_weak_bound": {},
        "noise_multiplier": {m: s / tight for m, s in sigma.items()},
        "per_query_epsilon_exact": {m: gaussian_epsilon(s, tight, delta, method="analytic") for m, s in sigma.items()},
        "occupancy_ratio": occupancy_ratio(rho, dim),
        "expected_noise_norm": {m: expected_noise_norm(s, dim) for m, s in sigma.items()},
        "cosine_lower_bound_95": {
            m: dplc_cosine_lower_bound(rho, cluster_size, s, dim, 0.95) for m, s in sigma.items()
        },
        "releases": releases,
        "delta_total": delta_total,
        "claimed_total_epsilon": releases * epsilon,
        "epsilon_total": {},
        "accountant_used": {},
        "warnings": [],
    }


def _weak_bound_sigma(weak: float, epsilon: float, delta: float, sigma: dict[str, float]) -> dict[str, float]:
    """Sigma calibrated to the weak sensitivity (Thm 3) under each calibration in ``sigma``."""
    from accountants import ClassicGaussianRangeWarning, gaussian_sigma

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClassicGaussianRangeWarning)  # reported in report["warnings"]
        return {m: gaussian_sigma(weak, epsilon, delta, method=m) for m in sigma}


def _compose_epsilon_totals(
    report: dict[str, Any], sigma: dict[str, float], tight: float, releases: int, delta_total: float
) -> list[str]:
    """Fill ``epsilon_total`` and ``accountant_used`` per calibration and accountant; return their warnings."""
    from accountants import GaussianEvent, SelfComposedEvent, compute_epsilon

    notes: list[str] = []
    for method, value in sigma.items():
        event = SelfComposedEvent(GaussianEvent(value / tight, unit="class-center"), releases)
        report["epsilon_total"][method] = {}
        report["accountant_used"][method] = {}
        for name in ACCOUNTANT_ORDER:
            result = compute_epsilon(event, delta_total, name)
            report["epsilon_total"][method][name] = result.epsilon
            report["accountant_used"][method][name] = result.used
            notes += [f"{method}/{name}: {note}" for note in result.warnings]
    return notes


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.6g}"


def format_dplc_report(report: dict[str, Any]) -> str:
    inputs = report["inputs"]
    lines = [
        f"DPLC accounting (PrivacyFace): rho={inputs['rho']}, |S|={inputs['cluster_size']}, d={inputs['dim']}, "
        f"per query epsilon={inputs['epsilon']}, delta={inputs['delta']}",
        "  unit of privacy   per class-center record (neighbours: one class center replaced); not per person",
        f"  sensitivity       tight (Thm 2) {_fmt(report['sensitivity']['tight'])}   "
        f"weak (Thm 3) {_fmt(report['sensitivity']['weak'])}",
        f"  sigma (Thm 2)     classic {_fmt(report['sigma']['classic'])}   analytic {_fmt(report['sigma']['analytic'])}",
        f"  sigma (Thm 3)     classic {_fmt(report['sigma_weak_bound']['classic'])}   "
        f"analytic {_fmt(report['sigma_weak_bound']['analytic'])}",
        f"  exact epsilon     classic {_fmt(report['per_query_epsilon_exact']['classic'])}   "
        f"analytic {_fmt(report['per_query_epsilon_exact']['analytic'])}   (per query, Balle & Wang)",
        f"  occupancy ratio   {_fmt(report['occupancy_ratio'])} of the sphere (Thm 1)",
        f"  E||v||            classic {_fmt(report['expected_noise_norm']['classic'])}   "
        f"analytic {_fmt(report['expected_noise_norm']['analytic'])}",
        f"  cos(p, p_hat) >=  classic {_fmt(report['cosine_lower_bound_95']['classic'])}   "
        f"analytic {_fmt(report['cosine_lower_bound_95']['analytic'])}   with probability 0.95 (Props 3-4)",
        f"  total over Q x M = {inputs['queries']} x {inputs['rounds']} = {report['releases']} releases at "
        f"delta_total = {_fmt(report['delta_total'])}; paper's claim (Property 2, basic): "
        f"epsilon = {_fmt(report['claimed_total_epsilon'])}",
        f"    {'accountant':<10} {'classic sigma':>15} {'analytic sigma':>15}",
    ]
    for name in ACCOUNTANT_ORDER:
        row = (
            f"    {name:<10} {_fmt(report['epsilon_total']['classic'][name]):>15} "
            f"{_fmt(report['epsilon_total']['analytic'][name]):>15}"
        )
        used = {report["accountant_used"][m][name] for m in ("classic", "analytic")}
        if used != {name}:
            row += f"   (answered by {', '.join(sorted(used))})"
        lines.append(row)
    if report["warnings"]:
        lines.append("warnings:")
        lines += [f"  - {note}" for note in report["warnings"]]
    return "\n".join(lines)


def run_dplc(args: argparse.Namespace) -> int:
    report = dplc_report(args.rho, args.epsilon, args.delta, args.cluster_size, args.dim, args.queries, args.rounds)
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False, default=float))
    else:
        print(format_dplc_report(report))
    return 0
