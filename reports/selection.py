"""Which numbers a report puts forward: the headline utility metric and metric ordering."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from reports.schema import AuditResult, MethodResult

__all__ = ["metric_sort_key", "headline_utility_metric", "method_family"]

_FAR = re.compile(r"^tar@far=([0-9.eE+-]+)$")


def _far(key: str) -> float | None:
    match = _FAR.match(key)
    if not match:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


def metric_sort_key(key: str) -> tuple[int, float, str]:
    """Column order of utility metrics: accuracy, TAR@FAR from the largest FAR down, AUROC, the rest."""
    far = _far(key)
    if far is not None:
        return (1, -far, key)
    return ({"accuracy": 0, "auroc": 2}.get(key, 3), 0.0, key)


def headline_utility_metric(result: AuditResult | Sequence[MethodResult]) -> str | None:
    """The utility metric the summary and the frontier use.

    Among the metrics finite for the most methods (ideally all): TAR@FAR at the lowest FAR, else
    accuracy, else AUROC, else the first alphabetically. None when no method has a finite metric.
    """
    methods = result.methods if isinstance(result, AuditResult) else result
    counts: dict[str, int] = {}
    for m in methods:
        for k, v in m.utility.items():
            if math.isfinite(float(v)):
                counts[k] = counts.get(k, 0) + 1
    if not counts:
        return None
    best = max(counts.values())
    candidates = [k for k, c in counts.items() if c == best]

    def rank(k: str) -> tuple[int, float, str]:
        far = _far(k)
        if far is not None:
            return (0, far, k)
        return ({"accuracy": 1, "auroc": 2}.get(k, 3), 0.0, k)

    return min(candidates, key=rank)


def method_family(name: str) -> str:
    """``privacyface-nonoise`` -> ``privacyface``, ``fedpe+dpsgd`` -> ``fedpe``: variants share a
    colour in the figures."""
    return name.split("-")[0].split("(")[0].split("+")[0]
