"""Method-independent analyses of the audit (`reports.schema.Analyses`), on the scenario's settings.

* **Occupancy ratio** of a cluster of margin ρ on the unit sphere of R^d (PrivacyFace Thm. 1,
  Fig. 3), for several d including the scenario's embedding dimension
  (`accountants.occupancy_ratio`).
* **ε versus rounds**, per accountant, of a client making the scenario's DPLC releases every round
  (Q releases per round, each a Gaussian mechanism with the noise multiplier that the scenario's
  ε, δ and calibration give; PrivacyFace Thm. 2 calibrates σ = Δ·z, so z does not depend on the
  cluster). This is the budget a PrivacyFace deployment spends, the curve behind the methods' own
  ε-per-round rows, continued to more rounds than the audit trains.
* **cos(p, p̂)** over noise draws (PrivacyFace Fig. 4): DPLC's clean cluster mean ``p`` against
  its release ``p̂`` on a real client's class centers (the ``privacyface`` run's ground truth when
  the audit trained it, else the first run whose ground truth holds class centers), (a) at the
  scenario's ε for several ρ, (b) at the scenario's ρ for several ε; the first query of each
  setting, through the same code path as the method (`local_clustering`, `release_clusters`).

Cached in ``OUT/cache/analyses-<fingerprint>.json`` (the fingerprint covers the settings, the
source run and the code, `privaudit.code_version`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping

from accountants.mechanisms import ClassicGaussianRangeWarning

OCCUPANCY_DIMS = (2, 3, 16, 128, 512)
OCCUPANCY_POINTS = 60
ROUND_GRID = (1, 2, 3, 5, 10, 20, 50, 100, 200)
FIG4_RHOS = (0.9, 1.1, 1.3, 1.5)
FIG4_EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0)
DRAWS = {"tiny": 50, "demo": 300, "bench": 300, "paper": 1000}
CENTER_SOURCES = ("privacyface", "privacyface-nonoise", "noisy-centers", "privacyface-e2e", "shared-centers", "fedpe")


def occupancy_curves(dims: list[int], points: int = OCCUPANCY_POINTS) -> dict[str, dict[str, list[float]]]:
    """``str(d) -> {"rho", "ratio"}`` of Theorem 1 on a grid of ρ in (0, π]."""
    from accountants import occupancy_ratio

    rhos = [math.pi * (i + 1) / points for i in range(points)]
    return {str(d): {"rho": rhos, "ratio": [occupancy_ratio(r, d) for r in rhos]} for d in sorted(set(dims))}


def epsilon_vs_rounds(
    epsilon: float, delta: float, queries: int, calibration: str, accountants: list[str], rounds: list[int]
) -> dict[str, dict[str, list[float]]]:
    """Cumulative ε after each of ``rounds`` of ``queries`` DPLC releases per round, each a
    Gaussian mechanism of noise multiplier ``gaussian_sigma(1, ε, δ, calibration)``."""
    from accountants import GaussianEvent, SelfComposedEvent, gaussian_sigma
    from accountants.composition import epsilon as compose

    z = gaussian_sigma(1.0, epsilon, delta, method=calibration)
    out: dict[str, dict[str, list[float]]] = {}
    for acc in accountants:
        values = [
            compose(SelfComposedEvent(GaussianEvent(z, unit="class-center"), queries * r), delta, accountant=acc)
            for r in rounds
        ]
        out[acc] = {"rounds": list(rounds), "epsilon": values}
    return out


def _true_centers(runs: Mapping[str, Path]) -> tuple[Any, str, str] | None:
    """``(W, run key, party)``: a client's true class centers from a run's ground truth."""
    from attacks.views import load_ground_truth

    ordered = sorted(runs, key=lambda k: (CENTER_SOURCES.index(k) if k in CENTER_SOURCES else len(CENTER_SOURCES), k))
    for key in ordered:
        try:
            gt = load_ground_truth(runs[key])
        except (FileNotFoundError, ValueError):
            continue
        for party in sorted(gt.private):
            if "centers" in gt.private[party] and gt.private[party]["centers"].shape[0] >= 2:
                return gt.private[party]["centers"], key, party
    return None


def cos_p_phat(
    centers: Any,
    settings: list[tuple[float, float]],
    queries: int,
    threshold: float | int,
    delta: float,
    calibration: str,
    draws: int,
    seed: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Records ``{"epsilon", "rho", "queries", "values", "calibration", "label"}``: cos(p, p̂) of
    the first DPLC query over ``draws`` noise draws, for each ``(ε, ρ)`` of ``settings``."""
    import torch
    import torch.nn.functional as F

    from federated_core.methods.dplc import local_clustering, release_clusters, resolve_min_cluster_size

    w = F.normalize(torch.as_tensor(centers, dtype=torch.float64), dim=1)
    t = resolve_min_cluster_size(threshold, w.shape[0])
    records, notes = [], []
    for eps, rho in settings:
        clustering = local_clustering(w, rho=rho, min_cluster_size=t, max_queries=queries)
        if clustering.num_clusters == 0:
            notes.append(
                f"cos(p, p̂) at ε={eps:g}, ρ={rho:g}: no neighbourhood reaches T={t} "
                f"(largest {clustering.last_largest}); nothing released"
            )
            continue
        p = F.normalize(clustering.centers[:1], dim=1)
        values = []
        for i in range(draws):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            rel = release_clusters(clustering, eps, delta, calibration=calibration, generator=gen)
            values.append(float(F.cosine_similarity(rel.noisy_centers[:1].double(), p, dim=1)))
        records.append(
            {
                "epsilon": float(eps),
                "rho": float(rho),
                "queries": int(queries),
                "values": values,
                "calibration": calibration,
                "label": f"|S|={int(clustering.sizes[0])}",
            }
        )
    return records, notes


def audit_analyses(
    scenario: Any,
    runs: Mapping[str, Path],
    embedding_dim: int,
    delta: float,
    cache_dir: Path,
    cache: Any = None,
    run_keys: Mapping[str, str] | None = None,
) -> Any:
    """The `reports.schema.Analyses` of an audit (cached through ``cache``, a
    `privaudit.cache.StageCache`, keyed by the settings, the code and the source run's key)."""
    from privaudit.code_version import code_fingerprint, fingerprint
    from reports.schema import Analyses

    pr = scenario.privacy
    draws = DRAWS.get(scenario.scale, DRAWS["demo"])
    rounds = sorted(set(ROUND_GRID) | {int(scenario.federation.rounds)})
    source = _true_centers(runs)
    key = {
        "epsilon": pr.epsilon,
        "delta": delta,
        "rho": pr.rho,
        "queries": pr.queries,
        "calibration": pr.calibration,
        "threshold": pr.threshold_fraction,
        "accountants": list(pr.accountants),
        "dim": embedding_dim,
        "draws": draws,
        "rounds": rounds,
        "seed": scenario.seed,
        "code": code_fingerprint(),
        "source": None if source is None else [source[1], source[2], (run_keys or {}).get(source[1])],
    }
    path = cache_dir / f"analyses-{fingerprint(key)}.json"
    saved = cache.load_json("analyses", fingerprint(key), path) if cache is not None else None
    if saved is not None:
        return Analyses.from_dict(saved)
    with warnings.catch_warnings():
        # the ledger of each method already flags the classic calibration at ε >= 1
        warnings.simplefilter("ignore", ClassicGaussianRangeWarning)
        analyses = _compute(scenario, source, runs, embedding_dim, delta, draws, rounds)
    if cache is not None:
        cache.save_json("analyses", fingerprint(key), path, analyses.to_dict())
    return analyses


def _compute(
    scenario: Any,
    source: tuple[Any, str, str] | None,
    runs: Mapping[str, Path],
    embedding_dim: int,
    delta: float,
    draws: int,
    rounds: list[int],
) -> Any:
    from federated_core.methods.dplc import resolve_min_cluster_size
    from reports.schema import Analyses

    pr = scenario.privacy
    extra: dict[str, Any] = {
        "epsilon_vs_rounds": f"{pr.queries} DPLC release(s) per round at ε={pr.epsilon:g}, "
        f"δ={delta:.3g}, {pr.calibration} calibration"
    }
    records: list[dict[str, Any]] = []
    if source is None:
        extra["cos_p_phat"] = "no run's ground truth holds class centers: Fig. 4 not computed"
    else:
        centers, run_key, party = source
        settings = [(pr.epsilon, rho) for rho in sorted(set(FIG4_RHOS) | {pr.rho})]
        settings += [(eps, pr.rho) for eps in sorted(set(FIG4_EPSILONS) | {pr.epsilon}) if eps != pr.epsilon]
        records, notes = cos_p_phat(
            centers, settings, pr.queries, pr.threshold_fraction, delta, pr.calibration, draws, scenario.seed
        )
        extra["cos_p_phat"] = (
            f"first DPLC query on the final true class centers of {party} in run {run_key!r} "
            f"({centers.shape[0]} classes, T={resolve_min_cluster_size(pr.threshold_fraction, centers.shape[0])}), "
            f"{draws} noise draws per setting; |S| = the query's cluster size"
        )
        if notes:
            extra["cos_p_phat_notes"] = notes
    analyses = Analyses(
        occupancy=occupancy_curves([*OCCUPANCY_DIMS, int(embedding_dim)]),
        cos_p_phat=records,
        epsilon_vs_rounds=epsilon_vs_rounds(
            pr.epsilon, delta, pr.queries, pr.calibration, list(pr.accountants), rounds
        ),
        extra=extra,
    )
    return analyses
