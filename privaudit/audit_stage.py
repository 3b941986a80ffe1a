"""Empirical audits of the DP release mechanisms a run deployed (distinguishing games).

For each DPLC variant the claim is "each release is (ε, δ)-DP per class-center record"
(PrivacyFace Property 2; for the end-to-end variant, the whole call of Q queries). The audits
(`accountants.dplc_audit`) run the release mechanism on adversarial neighbouring sets of class
centers many times and turn the distinguisher's error rates into a Clopper–Pearson lower bound:

* ``privacyface`` — (a) the Gaussian mechanism of Theorem 2 on a fixed S (the part the proof
  covers) and (b) Algorithm 1 end to end, where the densest neighbourhood flips or |S| crosses T;
* ``privacyface-e2e`` — the private variant (noisy selection and threshold) on the same pairs.

The mechanism audited is the one deployed: d, ρ, T, Q, ε, δ and the calibration are read from the
run's release messages (`deployed_parameters`), and |S| is the smallest cluster a client released
(the largest sensitivity). Each finding states its unit (``class-center``) and scope (one release,
or one call of Q queries): a per-release lower bound is compared with the per-release claim, never
with the ε composed over the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIDENCE = 0.95
AUDITED = {"privacyface": "noisy_cluster_centers", "privacyface-e2e": "noisy_cluster_centers"}


def deployed_parameters(wire: Any, kind: str) -> dict[str, Any] | None:
    """d, ρ, T, Q, ε, δ, calibration and the smallest released |S| of the first client release of
    ``kind`` in ``wire`` (every client runs the same configuration; T and δ are per client: the
    smallest T and δ over the releases are used). None when no client released that kind."""
    releases = [m for m in wire if m.kind == kind and m.sender.startswith("client:")]
    if not releases:
        return None
    meta = releases[0].meta
    sizes = [int(r["cluster_size"]) for m in releases for r in m.meta.get("releases", []) if r.get("cluster_size")]
    thresholds = [int(m.meta["min_cluster_size"]) for m in releases]
    return {
        "dim": int(releases[0].tensors["centers"].shape[1]),
        "rho": float(meta["rho"]),
        "min_cluster_size": min(thresholds),
        "max_queries": int(meta.get("max_queries", 1)),
        "epsilon": float(meta["epsilon"]),
        "delta": min(float(m.meta["delta"]) for m in releases),
        "calibration": meta.get("calibration", "analytic"),
        "cluster_size": min(sizes) if sizes else min(thresholds),
    }


def _finding(audit: Any, name: str, statistic: str, scope: str, parameters: dict[str, Any]) -> dict[str, Any]:
    row = audit.to_row()
    return {
        "name": name,
        "claimed_epsilon": float(row["claimed_epsilon"]),
        "epsilon_lower_bound": max(0.0, float(row["epsilon_lb"])),
        "confidence": float(row["confidence"]),
        "trials": int(row["trials"]),
        "statistic": statistic,
        "refutes_claim": bool(not row["within_claim"]),
        "delta": float(row["delta"]),
        "unit": "class-center",
        "scope": scope,
        "parameters": parameters,
        "notes": f"{audit.description} FP={row['false_positives']}, FN={row['false_negatives']} of "
        f"{row['evaluation_trials']} held-out trials per dataset; threshold chosen on a separate split.",
    }


def _pairs(p: dict[str, Any], seed: int) -> tuple[list[Any], list[str]]:
    """The adversarial neighbours the deployed geometry admits, and why any was left out."""
    from accountants.dplc_audit import densest_flip_pair, threshold_pair

    pairs, skipped = [], []
    if p["cluster_size"] >= 3:
        pairs.append(densest_flip_pair(p["dim"], p["rho"], p["cluster_size"], seed))
    else:
        skipped.append(f"densest-flip pair not built: deployed |S| = {p['cluster_size']} < 3")
    if p["min_cluster_size"] >= 3:
        pairs.append(threshold_pair(p["dim"], p["rho"], p["min_cluster_size"], seed))
    else:
        skipped.append(
            f"threshold-crossing pair not built: deployed T = {p['min_cluster_size']} < 3 "
            "(two points beside the moved one must stay below T)"
        )
    return pairs, skipped


def _run(method: str, p: dict[str, Any], trials: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    from accountants.dplc_audit import audit_algorithm1, audit_private, audit_theorem2

    shown = {
        k: p[k]
        for k in ("dim", "rho", "cluster_size", "min_cluster_size", "max_queries", "epsilon", "delta", "calibration")
    }
    pairs, skipped = _pairs(p, seed)
    findings = []
    if method == "privacyface":
        a = audit_theorem2(
            dim=p["dim"],
            rho=p["rho"],
            cluster_size=max(2, p["cluster_size"]),
            epsilon=p["epsilon"],
            delta=p["delta"],
            method=p["calibration"],
            trials=trials,
            confidence=CONFIDENCE,
            seed=seed,
        )
        findings.append(
            _finding(a, "Theorem 2 mechanism (fixed S)", "projection on the swap direction", "one release", shown)
        )
        for pair in pairs:
            b = audit_algorithm1(
                pair,
                rho=p["rho"],
                min_cluster_size=p["min_cluster_size"],
                epsilon=p["epsilon"],
                delta=p["delta"],
                method=p["calibration"],
                max_queries=p["max_queries"],
                trials=trials,
                confidence=CONFIDENCE,
                seed=seed,
            )
            findings.append(
                _finding(
                    b,
                    f"Algorithm 1 end to end ({pair.name})",
                    "release vs reference directions",
                    "one release" if p["max_queries"] == 1 else f"one call of {p['max_queries']} queries",
                    shown,
                )
            )
    else:
        for pair in pairs:
            c = audit_private(
                pair,
                mode="mean-shift",
                rho=p["rho"],
                min_cluster_size=p["min_cluster_size"],
                epsilon=p["epsilon"],
                delta=p["delta"],
                max_queries=p["max_queries"],
                trials=trials,
                confidence=CONFIDENCE,
                seed=seed,
            )
            findings.append(
                _finding(
                    c,
                    f"private DPLC ({pair.name})",
                    "release vs reference directions",
                    f"one call of {p['max_queries']} queries",
                    shown,
                )
            )
    return findings, skipped


def dplc_audits(
    method: str, wire: Any, trials: int, seed: int, cache: Any = None, path: Path | None = None, run_key: str = ""
) -> tuple[list[dict[str, Any]], list[str]]:
    """Audit findings (plain dicts of `reports.schema.AuditFinding` fields) of ``method``'s deployed
    release mechanism, and notes on audits that could not run (as flags for the method's row).
    Cached at ``path`` through ``cache`` (a `privaudit.cache.StageCache`), keyed by the run."""
    from privaudit.code_version import code_fingerprint, fingerprint

    kind = AUDITED.get(method)
    if kind is None:
        return [], []
    if any("min_cluster_size" not in m.meta for m in wire if m.kind == kind and m.sender.startswith("client:")):
        # release="random-control": random unit vectors drawn without the data, no DPLC mechanism
        return [], [f"the {kind} releases carry no DPLC parameters (a data-independent control): nothing to audit"]
    p = deployed_parameters(wire, kind)
    if p is None:
        return [], [f"no {kind} release in the wire log: the release mechanism was not audited"]
    key = fingerprint(
        {"method": method, "deployed": p, "trials": trials, "seed": seed, "run": run_key, "code": code_fingerprint()}
    )
    saved = cache.load_json("audit", key, path) if cache is not None and path is not None else None
    if saved is not None:
        return saved["findings"], saved.get("skipped", [])
    findings, skipped = _run(method, p, trials, seed)
    if cache is not None and path is not None:
        cache.save_json("audit", key, path, {"key": key, "findings": findings, "skipped": skipped})
    return findings, skipped
