"""Empirical audits of the DP release mechanisms that the methods claim (distinguishing games).

For each DPLC variant the claim is "each release is (ε, δ)-DP" (PrivacyFace Property 2). The
audits (`accountants.dplc_audit`) run the release mechanism on adversarial neighbouring sets of
class centers many times and turn the distinguisher's error rates into a Clopper–Pearson lower
bound on ε:

* ``privacyface`` — (a) the Gaussian mechanism of Theorem 2 on a fixed S (the part the proof
  covers) and (b) Algorithm 1 end to end, where the densest neighbourhood flips or |S| crosses T;
* ``privacyface-e2e`` — the private variant (noisy selection and threshold) on the same pairs.

The geometry is the audits' own (d = 16, |S| = 32, T = 16): a lower bound needs only one pair of
neighbours on which the claim fails, and the sizes keep thousands of trials cheap.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

AUDIT_DIM, AUDIT_CLUSTER, AUDIT_THRESHOLD, AUDIT_DELTA = 16, 32, 16, 1e-5
CONFIDENCE = 0.95


def _finding(audit: Any, name: str, statistic: str) -> dict[str, Any]:
    row = audit.to_row()
    return {
        "name": name, "claimed_epsilon": float(row["claimed_epsilon"]),
        "epsilon_lower_bound": max(0.0, float(row["epsilon_lb"])), "confidence": float(row["confidence"]),
        "trials": int(row["trials"]), "statistic": statistic,
        "refutes_claim": bool(not row["within_claim"]), "delta": float(row["delta"]),
        "notes": f"{audit.description} FP={row['false_positives']}, FN={row['false_negatives']} of "
                 f"{row['evaluation_trials']} held-out trials per dataset; threshold chosen on a separate split.",
    }


def dplc_audits(method: str, epsilon: float, rho: float, calibration: str, trials: int, seed: int,
                cache: Path | None = None) -> list[dict[str, Any]]:
    """Audit findings (plain dicts of `reports.schema.AuditFinding` fields) for ``method``."""
    from accountants.dplc_audit import (
        audit_algorithm1,
        audit_private,
        audit_theorem2,
        densest_flip_pair,
        threshold_pair,
    )

    from privaudit.code_version import code_fingerprint

    if method not in ("privacyface", "privacyface-e2e"):
        return []
    key = {"method": method, "epsilon": epsilon, "rho": rho, "calibration": calibration, "trials": trials,
           "seed": seed, "dim": AUDIT_DIM, "cluster": AUDIT_CLUSTER, "threshold": AUDIT_THRESHOLD,
           "code": code_fingerprint()}
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["findings"]
    common = dict(trials=trials, confidence=CONFIDENCE, seed=seed)
    pairs = (densest_flip_pair(AUDIT_DIM, rho, AUDIT_CLUSTER, seed), threshold_pair(AUDIT_DIM, rho, AUDIT_THRESHOLD, seed))
    findings = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classic calibration at ε >= 1 warns; the ledger flags it
        if method == "privacyface":
            a = audit_theorem2(dim=AUDIT_DIM, rho=rho, cluster_size=AUDIT_CLUSTER, epsilon=epsilon, delta=AUDIT_DELTA,
                               method=calibration, **common)
            findings.append(_finding(a, "Theorem 2 mechanism (fixed S)", "projection on the swap direction"))
            for pair in pairs:
                b = audit_algorithm1(pair, rho=rho, min_cluster_size=AUDIT_THRESHOLD, epsilon=epsilon,
                                     delta=AUDIT_DELTA, method=calibration, **common)
                findings.append(_finding(b, f"Algorithm 1 end to end ({pair.name})", "release vs reference directions"))
        else:
            for pair in pairs:
                c = audit_private(pair, mode="mean-shift", rho=rho, min_cluster_size=AUDIT_THRESHOLD, epsilon=epsilon,
                                  delta=AUDIT_DELTA, **common)
                findings.append(_finding(c, f"private DPLC ({pair.name})", "release vs reference directions"))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "findings": findings}, indent=2))
    return findings
