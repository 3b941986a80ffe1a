"""Comparisons over seeds: per-seed values, means with intervals, paired differences and tests.

An audit with several seeds (`Scenario.seeds` or `Scenario.repeats`) trains every method once per
seed (data partition, initialisation, client sampling and DP noise all follow the seed). The unit of
replication is the seed, so every interval and test here is over seeds:

* **mean and 95% interval** of each metric per method: Student t over the seeds (n >= 2);
* **paired difference** method − baseline per seed, its mean and 95% t interval, and an **exact
  sign-flip permutation test** (two-sided; all 2^n sign assignments), Holm-corrected across the
  methods compared on the same metric;
* ``significant`` only when the Holm-corrected p < 0.05 *and* the interval excludes 0. With n seeds
  the sign-flip test cannot go below p = 2/2^n (``min_attainable_p``): with 3 seeds it is 0.25, so
  nothing can be significant and the results say so instead of implying "no difference";
* ``detectable``: the smallest true mean difference a paired t-test at α = 0.05 would detect with
  80% power given the observed spread of the differences, (t_{0.975,n-1} + t_{0.8,n-1})·sd/√n.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

ALPHA = 0.05
POWER = 0.8


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t interval over ``values`` (NaN bounds for n < 2)."""
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided p-value of the paired sign-flip permutation test of mean difference 0."""
    n = len(differences)
    if n == 0:
        return math.nan
    observed = abs(sum(differences))
    count = 0
    for signs in itertools.product((1.0, -1.0), repeat=n):
        if abs(sum(s * d for s, d in zip(signs, differences))) >= observed - 1e-12:
            count += 1
    return count / 2**n


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    m = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def detectable_difference(differences: Sequence[float]) -> float:
    """Smallest mean difference a paired t-test (α = 0.05, two-sided) detects with 80% power at
    the observed standard deviation of the differences; NaN for n < 2."""
    from scipy.stats import t

    n = len(differences)
    if n < 2:
        return math.nan
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    return (float(t.ppf(1 - ALPHA / 2, n - 1)) + float(t.ppf(POWER, n - 1))) * sd / math.sqrt(n)


def summarise(per_seed: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> metric -> {mean, ci_low, ci_high, n} over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, metrics in per_seed.items():
        out[method] = {}
        for metric, values in metrics.items():
            finite = [float(v) for v in values if math.isfinite(float(v))]
            mean, low, high = t_interval(finite)
            out[method][metric] = {"mean": mean, "ci_low": low, "ci_high": high, "n": float(len(finite))}
    return out


def paired_comparisons(per_seed: Mapping[str, Mapping[str, Sequence[float]]], baseline: str) -> list[dict[str, Any]]:
    """Each method against ``baseline`` on every metric both report for every seed (see the module
    docstring); Holm correction across the methods of one metric."""
    if baseline not in per_seed:
        raise ValueError(f"comparisons: baseline {baseline!r} is not among the methods {sorted(per_seed)}")
    rows: list[dict[str, Any]] = []
    for metric in sorted(per_seed[baseline]):
        base = [float(v) for v in per_seed[baseline][metric]]
        block: list[dict[str, Any]] = []
        p_values: list[float] = []
        excludes_zero: list[bool] = []
        for method in sorted(per_seed):
            values = per_seed[method].get(metric)
            if method == baseline or values is None or len(values) != len(base):
                continue
            diffs = [float(v) - b for v, b in zip(values, base)]
            if not all(math.isfinite(d) for d in diffs):
                continue
            mean, low, high = t_interval(diffs)
            p_values.append(sign_flip_p(diffs))
            excludes_zero.append(math.isfinite(low) and (low > 0 or high < 0))
            block.append(
                {
                    "method": method,
                    "baseline": baseline,
                    "metric": metric,
                    "differences": diffs,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": p_values[-1],
                    "min_attainable_p": 2.0 / 2 ** len(diffs) if diffs else math.nan,
                    "detectable": detectable_difference(diffs),
                    "n": float(len(diffs)),
                }
            )
        for row, adjusted, clear in zip(block, holm(p_values), excludes_zero):
            row["p_holm"] = adjusted
            row["significant"] = bool(adjusted < ALPHA and clear)
        rows += block
    return rows


def per_seed_values(results: Sequence[Any]) -> dict[str, dict[str, list[float]]]:
    """method -> metric -> one value per seed, from one `AuditResult` per seed: every generic
    utility metric, every personalised one as ``personal:<key>`` and, per attack family, the raw
    success of its strongest attack on an observed kind (``attack:knn``, ``attack:inversion``,
    ``attack:gradient``; `reports.tables.strongest_per_family`)."""
    from reports.tables import strongest_per_family

    out: dict[str, dict[str, list[float]]] = {}
    for result in results:
        for m in result.methods:
            values = {k: float(v) for k, v in m.utility.items()}
            values.update({f"personal:{k}": float(v) for k, v in m.personalised_utility.items()})
            values.update({f"attack:{family}": float(a.success) for family, a in strongest_per_family(m).items()})
            for metric, value in values.items():
                out.setdefault(m.name, {}).setdefault(metric, []).append(value)
    n = len(results)
    return {method: {k: v for k, v in metrics.items() if len(v) == n} for method, metrics in out.items()}
