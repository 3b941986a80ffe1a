"""Membership inference on released center-like vectors at low FPR: offline LiRA with shadow
releases the attacker simulates with the public release mechanism (issue #14 item 5).

**The game** (unit: a (candidate identity, client) pair; intervals over clients). For every client
whose release of a kind the observer saw: its own identities are the members; fresh identities,
never in any training set, are the non-members, spread round-robin over the same clients. The
attacker holds ``query_images`` unseen images of each candidate and the observed backbone, and asks
"is this identity in this client's data?". Its statistic is ``atanh(max_j cos(q̄, r_j))`` over the
client's released rows ``r_j`` (`attacks.membership.membership_statistic`).

**Shadows** (Carlini et al. 2022, "Membership Inference Attacks From First Principles", §IV,
offline variant). The release mechanism is public: the attacker re-runs it ``shadows`` times per
client on class centers it builds from its own public identities (the normalised mean embedding of
each one's images under the observed backbone; as many as the client has identities — the attacker
is assumed to know that count), with the client's deployed parameters (DPLC's ρ, T, Q, ε, δ and
calibration as the release's message records them) and fresh noise. These OUT releases are shared
by every candidate of that client; each candidate's statistic on them gives its own OUT Gaussian,
and its LiRA score is ``−log Pr[Z > s_obs]`` (`attacks.membership.lira_scores`, ``online=False``).
Offline because an IN shadow of a DPLC release would need one mechanism run per candidate and
shadow; Carlini et al. report offline LiRA close to online at low FPR.

**Ceiling and floor** (DESIGN §8). The oracle is the same attack on the clients' true class centers
``W_k`` (what sharing the raw centers would give this attacker), with shadows of the raw-center
mechanism; the null is an uninformed attacker, whose TPR at a threshold equals its FPR. Reported:
TPR at FPR 1e-3 and 1e-2 (thresholds on the non-member scores; an FPR the non-member count cannot
support gives no number, `attacks.membership.tpr_at_fpr`), the global-threshold attack it replaces,
the shuffled-label null, and the normalised success ``(raw − null) / (oracle − null)`` with a
cluster bootstrap over clients (`attacks.metrics.normalised_success`): the members of one client
share one release, so they are not independent trials.

Every result is a lower bound on what an attacker with this knowledge can do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attacks.membership import lira_scores, tpr_at_fpr
from attacks.metrics import normalised_success

__all__ = ["MembershipConfig", "MembershipResult", "membership_attack", "release_simulator"]

CLASS_LIKE = ("class_centers", "global_class_embeddings")
CLUSTER_LIKE = ("cluster_centers", "noisy_cluster_centers")
THREAT_MODEL = (
    "attacker: the observer, with the observed backbone, the client's released rows, unseen images of each "
    "candidate, its own public identities and the public release mechanism with the deployed parameters; it "
    "knows each client's number of identities. Offline LiRA (Carlini et al. 2022); a lower bound on this attacker."
)


@dataclass(frozen=True)
class MembershipConfig:
    """Sizes of the membership game (defaults by scale come from `privaudit.scenario.AttackSpec`)."""

    nonmembers: int = 2000
    query_images: int = 2
    query_start_index: int = 30_000
    nonmember_offset: int = 9_000_000
    shadows: int = 64
    fprs: tuple[float, ...] = (1e-3, 1e-2)
    n_bootstrap: int = 200
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("nonmembers", "query_images", "shadows", "n_bootstrap"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "shadows" else 1):
                raise ValueError(f"membership {name} must be an integer >= {2 if name == 'shadows' else 1}, got {v!r}")
        if not self.fprs or not all(0 < f < 1 for f in self.fprs):
            raise ValueError(f"membership fprs must lie in (0, 1), got {list(self.fprs)}")


@dataclass
class MembershipResult:
    """One kind's membership game: LiRA beside its baseline, null and oracle (module docstring)."""

    observer: str
    kind: str
    clients: int
    members: int
    nonmembers: int
    lira: dict[str, Any]
    global_threshold: dict[str, Any]
    null: dict[str, Any]
    oracle: dict[str, Any] | None
    normalised: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    threat_model: str = THREAT_MODEL
    unit: str = "(identity, client) pair; intervals over clients"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.__dict__.items()}

    def tpr(self, fpr: float) -> float | None:
        """LiRA's TPR at ``fpr`` (None: unsupported by the non-member count)."""
        entry = self.lira["at_fpr"].get(f"{fpr:g}", {})
        return entry.get("tpr")


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items() if k != "scores"}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# ------------------------------------------------------------------------------ release mechanisms


def release_simulator(kind: str, meta: Mapping[str, Any]) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The public release mechanism of ``kind`` as ``(centers [n, d], generator) -> rows [m, d]``:
    the normalised centers themselves for class-center kinds; Algorithm 1 of PrivacyFace (`dplc`,
    noise-free means for ``cluster_centers``, the Gaussian mechanism for ``noisy_cluster_centers``)
    with the parameters ``meta`` records (ρ, T, Q, ε, δ, calibration, bound, removal)."""
    if kind in CLASS_LIKE:
        return lambda centers, gen: F.normalize(centers.double(), dim=1)
    if kind not in CLUSTER_LIKE:
        raise ValueError(f"no release simulator for kind {kind!r}; supported: {list(CLASS_LIKE + CLUSTER_LIKE)}")
    from federated_core.methods.dplc import DPLCConfig, dplc, local_clustering

    missing = [k for k in ("rho", "min_cluster_size", "max_queries") if k not in meta]
    if missing:
        raise ValueError(f"the {kind} release records no {', '.join(missing)}: its mechanism cannot be simulated")
    rho, t, q = float(meta["rho"]), int(meta["min_cluster_size"]), int(meta["max_queries"])
    if kind == "cluster_centers":

        def means(centers: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            clustering = local_clustering(centers.double(), rho, t, q)
            rows = [F.normalize(centers.double()[m].mean(0), dim=0) for m in clustering.members]
            return torch.stack(rows) if rows else torch.zeros(0, centers.shape[1], dtype=torch.float64)

        return means
    config = DPLCConfig(
        rho=rho,
        min_cluster_size=t,
        max_queries=q,
        epsilon=float(meta["epsilon"]),
        delta=float(meta["delta"]),
        calibration=str(meta.get("calibration", "analytic")),
        bound=str(meta.get("bound", "tight")),
        removal=str(meta.get("removal", "mean")),
    )
    return lambda centers, gen: dplc(centers.double(), config, gen).noisy_centers.double()


def _statistics(templates: torch.Tensor, release: torch.Tensor) -> torch.Tensor:
    """``atanh(max_j cos(q̄_i, r_j))`` for every template row ``i`` (an empty release: cosine 0,
    "nothing released near anyone")."""
    if release.shape[0] == 0:
        return torch.zeros(templates.shape[0], dtype=torch.float64)
    cos = (templates.double() @ F.normalize(release.double(), dim=1).T).max(dim=1).values
    return torch.atanh(cos.clamp(-1 + 1e-12, 1 - 1e-12))


# ------------------------------------------------------------------------------ the game


@dataclass
class _Candidates:
    """The game's trials: candidate identity, the client it is tested against, membership."""

    identities: list[int]
    parties: list[str]
    member: np.ndarray


def _candidates(client_identities: Mapping[str, Sequence[int]], config: MembershipConfig) -> _Candidates:
    parties = sorted(client_identities)
    ids, who, member = [], [], []
    for p in parties:
        for i in client_identities[p]:
            ids.append(int(i))
            who.append(p)
            member.append(True)
    for n in range(config.nonmembers):
        ids.append(config.nonmember_offset + n)
        who.append(parties[n % len(parties)])
        member.append(False)
    taken = {int(i) for v in client_identities.values() for i in v}
    if taken & set(range(config.nonmember_offset, config.nonmember_offset + config.nonmembers)):
        raise ValueError(f"membership nonmember_offset {config.nonmember_offset} overlaps client identities")
    return _Candidates(ids, who, np.asarray(member, dtype=bool))


def _templates(model: Any, render: Any, ids: list[int], config: MembershipConfig) -> torch.Tensor:
    """Each candidate's normalised mean embedding of ``query_images`` unseen images."""
    from federated_core.models import embed

    unique = sorted(set(ids))
    faces = render(torch.tensor(unique, dtype=torch.int64), config.query_images, config.query_start_index)
    emb = embed(model, faces, device=config.device).double()
    row = {i: k for k, i in enumerate(unique)}
    sums = torch.zeros(len(unique), emb.shape[1], dtype=torch.float64)
    sums.index_add_(0, torch.tensor([row[int(i)] for i in faces.labels.tolist()]), emb)
    return F.normalize(sums, dim=1)[torch.tensor([row[i] for i in ids])]


def _out_statistics(
    templates: torch.Tensor,
    cands: _Candidates,
    sizes: Mapping[str, int],
    pool: torch.Tensor,
    simulators: Mapping[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]],
    config: MembershipConfig,
    notes: list[str],
) -> np.ndarray:
    """``[T, shadows]``: every candidate's statistic on its client's simulated OUT releases."""
    out = np.zeros((len(cands.identities), config.shadows))
    parties = np.asarray(cands.parties)
    empty = 0
    for k, party in enumerate(sorted(sizes)):
        rows = np.flatnonzero(parties == party)
        if sizes[party] > pool.shape[0]:
            raise ValueError(
                f"{party} holds {sizes[party]} identities, the attacker's public pool only {pool.shape[0]}"
            )
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + k)
        for s in range(config.shadows):
            pick = torch.randperm(pool.shape[0], generator=gen)[: sizes[party]]
            release = simulators[party](pool[pick], gen)
            empty += int(release.shape[0] == 0)
            out[rows, s] = _statistics(templates[rows], release).numpy()
    if empty:
        notes.append(f"{empty} of {len(sizes) * config.shadows} shadow releases released nothing (statistic 0)")
    return out


def _play(
    templates: torch.Tensor,
    cands: _Candidates,
    releases: Mapping[str, torch.Tensor],
    out_stats: np.ndarray,
    config: MembershipConfig,
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """(LiRA's `tpr_at_fpr`, the global-threshold baseline's, LiRA scores, observed statistics)."""
    parties = np.asarray(cands.parties)
    observed = np.zeros(len(cands.identities))
    for party, release in releases.items():
        rows = np.flatnonzero(parties == party)
        observed[rows] = _statistics(templates[rows], release).numpy()
    fixed = config.shadows < 32  # few shadows: one pooled variance (Carlini et al. §IV)
    scores = lira_scores(observed, None, out_stats, online=False, fixed_variance=fixed)
    m = cands.member
    lira = tpr_at_fpr(scores[m], scores[~m], config.fprs)
    baseline = tpr_at_fpr(observed[m], observed[~m], config.fprs)
    return lira, baseline, scores, observed


def _hits(scores: np.ndarray, member: np.ndarray, entry: Mapping[str, Any]) -> np.ndarray:
    """Per member trial: 1 when its score passes the FPR's threshold (NaN: FPR unsupported)."""
    if not entry.get("supported"):
        return np.full(int(member.sum()), np.nan)
    return (scores[member] >= entry["threshold"]).astype(float)


def membership_attack(
    kind: str,
    observer: str,
    model: Any,
    render: Any,
    releases: Mapping[str, torch.Tensor],
    metas: Mapping[str, Mapping[str, Any]],
    client_identities: Mapping[str, Sequence[int]],
    public_centers: torch.Tensor,
    true_centers: Mapping[str, torch.Tensor] | None,
    config: MembershipConfig,
) -> MembershipResult:
    """The module docstring's game on the releases of ``kind`` (``releases``: client -> its rows,
    ``metas``: client -> its release's meta, ``client_identities``: client -> its identities,
    ``public_centers``: the attacker's public class centers ``[P, d]``, ``true_centers``: client ->
    its true ``W_k`` for the oracle, or None)."""
    if not releases:
        raise ValueError(f"no {kind} release to attack")
    ids = {p: client_identities[p] for p in releases}
    cands = _candidates(ids, config)
    templates = _templates(model, render, cands.identities, config)
    sizes = {p: len(v) for p, v in ids.items()}
    notes: list[str] = []
    sims = {p: release_simulator(kind, metas.get(p, {})) for p in releases}
    out_stats = _out_statistics(templates, cands, sizes, public_centers, sims, config, notes)
    lira, baseline, scores, _ = _play(templates, cands, releases, out_stats, config)
    null = tpr_at_fpr(*_shuffled(scores, cands.member, config.seed), config.fprs)
    oracle, oracle_scores = None, None
    if true_centers is not None and set(releases) <= set(true_centers):
        raw = {p: release_simulator("class_centers", {}) for p in releases}
        oracle_out = _out_statistics(templates, cands, sizes, public_centers, raw, config, [])
        oracle, _, oracle_scores, _ = _play(
            templates, cands, {p: true_centers[p] for p in releases}, oracle_out, config
        )
    else:
        notes.append("no true class centers for every attacked client: no oracle")
    normalised = _normalised(scores, oracle_scores, lira, oracle, cands, config, notes)
    settings = {
        "nonmembers": config.nonmembers,
        "query_images": config.query_images,
        "shadows": config.shadows,
        "fixed_variance": config.shadows < 32,
        "attack": "lira-offline",
        "fprs": list(config.fprs),
    }
    return MembershipResult(
        observer, kind, len(releases), int(cands.member.sum()), int((~cands.member).sum()),
        lira, baseline, null, oracle, normalised, settings, notes=notes,
    )  # fmt: skip


def _shuffled(scores: np.ndarray, member: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(member)
    return scores[perm], scores[~perm]


def _normalised(
    scores: np.ndarray,
    oracle_scores: np.ndarray | None,
    lira: Mapping[str, Any],
    oracle: Mapping[str, Any] | None,
    cands: _Candidates,
    config: MembershipConfig,
    notes: list[str],
) -> dict[str, dict[str, Any]]:
    """Per supported FPR: `normalised_success` of the member hits (raw vs oracle vs the null's
    expected hit rate, the realised FPR), bootstrapped over clients."""
    out: dict[str, dict[str, Any]] = {}
    units = np.asarray(cands.parties)[cands.member]
    for key, entry in lira["at_fpr"].items():
        if not entry.get("supported") or oracle is None or oracle_scores is None:
            continue
        raw = _hits(scores, cands.member, entry)
        top = _hits(oracle_scores, cands.member, oracle["at_fpr"][key])
        floor = np.full(len(raw), float(entry["achieved_fpr"]))
        ns = normalised_success(
            raw, top, floor, units, f"tpr@fpr={key}", "client", n_bootstrap=config.n_bootstrap, seed=config.seed
        )
        notes.extend(n for n in ns.notes if n not in notes)
        out[key] = ns.to_dict()
    return out
