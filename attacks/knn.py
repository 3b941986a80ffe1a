"""k-nearest-neighbour identity attack on center-like vectors (PrivacyFace App. A.2.4, Fig. 6).

The attacker holds a gallery of faces of many identities (some of the clients' identities and many
distractors), embeds it with the model it observed (or a public one), and matches every observed
center-like vector (class centers W, clusters p, DPLC clusters p̂, noisy centers W̃, DP k-means
centers) to its nearest gallery identities. Scored against ground truth the attacker never saw:

* identification: top-1 / top-k rate at which an observed vector's nearest gallery identities
  include an identity it stands for (the row's identity for W / W̃; any covered identity for a
  cluster), with Clopper–Pearson intervals;
* membership inference: for each gallery identity the score "is this identity in some client's
  training set" = its best similarity to any observed vector; ROC, AUC and TPR at FPR = 1e-3 and
  1e-2, each with a confidence interval;
* group level: the majority population group of the identities a vector covers versus the
  majority group of its k nearest gallery identities (what a blurred cluster still reveals,
  PrivacyFace Fig. 8);
* ceiling and floor (DESIGN §8): the same attacker's top-1 rate on oracle queries (the true class
  centers ``W_k`` behind each observation, and embeddings of real unseen images of the same
  identities) and on null queries (as many seeded random unit vectors), and the normalised
  success ``(raw - null) / (oracle - null)`` with a bootstrap interval over independent units
  (`attacks.metrics.normalised_success`), so "0 success" can be told from "the attack is blind".

The search is blocked torch matrix products (`attacks.search`), so 100k × 512 galleries work.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from attacks.metrics import (
    NormalisedSuccess,
    TprAtFpr,
    auc_bootstrap_ci,
    ceiling_summary,
    clopper_pearson,
    normalised_success,
    random_unit_vectors,
    roc_auc,
    tpr_at_fpr,
)
from attacks.search import identity_scores_blocks

__all__ = [
    "Gallery",
    "KnnTruth",
    "KnnAttackConfig",
    "KnnAttackResult",
    "knn_identity_attack",
    "embed_gallery",
    "DpKmeansResult",
    "dp_kmeans_centers",
    "covered_identities",
]


@dataclass
class Gallery:
    """The attacker's face gallery: one embedding per image.

    ``groups`` (population group per image) is optional; without it the group-level view is off.
    """

    embeddings: torch.Tensor
    identity_ids: torch.Tensor
    groups: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] == 0:
            raise ValueError(
                f"gallery embeddings must be a non-empty [G, d] array, got shape {tuple(self.embeddings.shape)}"
            )
        self.identity_ids = torch.as_tensor(self.identity_ids, dtype=torch.int64)
        if self.identity_ids.shape != (self.embeddings.shape[0],):
            raise ValueError(
                f"gallery identity_ids must have one id per embedding ({self.embeddings.shape[0]}), "
                f"got shape {tuple(self.identity_ids.shape)}"
            )
        if self.groups is not None:
            self.groups = torch.as_tensor(self.groups, dtype=torch.int64)
            if self.groups.shape != self.identity_ids.shape:
                raise ValueError(
                    f"gallery groups must have shape {tuple(self.identity_ids.shape)}, got {tuple(self.groups.shape)}"
                )

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def identity_groups(self) -> dict[int, int]:
        """Population group of each gallery identity (its first image's group)."""
        if self.groups is None:
            return {}
        out: dict[int, int] = {}
        for i, g in zip(self.identity_ids.tolist(), self.groups.tolist()):
            out.setdefault(int(i), int(g))
        return out


@dataclass
class KnnTruth:
    """Ground truth kept aside for scoring (the attacker never sees it).

    Attributes:
        observation_ids: for each observed vector, the identities it stands for: one id for a class
            center (W, W̃), the covered identities for a cluster center (p, p̂, DP k-means); an empty
            set when it stands for none.
        member_ids: every identity in some client's training set.
        identity_groups: population group of each identity (members and gallery), for the group view.
    """

    observation_ids: list[frozenset[int]]
    member_ids: torch.Tensor
    identity_groups: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def from_row_ids(
        row_ids: torch.Tensor | Sequence[int],
        member_ids: torch.Tensor | Sequence[int],
        identity_groups: dict[int, int] | None = None,
    ) -> "KnnTruth":
        """Truth for class-center-like observations: one identity per row."""
        return KnnTruth(
            [frozenset([int(i)]) for i in torch.as_tensor(row_ids).tolist()],
            torch.as_tensor(member_ids, dtype=torch.int64),
            dict(identity_groups or {}),
        )


@dataclass(frozen=True)
class KnnAttackConfig:
    """Settings of the k-NN identity attack.

    ``identity_score``: "max" (an identity scores its best-matching gallery image, as in
    PrivacyFace's face-level k-NN) or "mean" (cosine to the identity's mean template).
    ``null_seed_offset``: the null queries are `random_unit_vectors` seeded ``seed + null_seed_offset``.
    """

    k: int = 5
    identity_score: str = "max"
    fprs: tuple[float, ...] = (1e-3, 1e-2)
    confidence: float = 0.95
    ci_method: str = "bootstrap"
    n_bootstrap: int = 200
    query_block: int = 256
    gallery_block: int = 32768
    device: str = "cpu"
    seed: int = 0
    progress: bool = False
    null_seed_offset: int = 7_777

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.identity_score not in ("max", "mean"):
            raise ValueError(f"identity_score must be 'max' or 'mean', got {self.identity_score!r}")
        for f in self.fprs:
            if not 0 < f < 1:
                raise ValueError(f"fprs must lie in (0, 1), got {f}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.ci_method not in ("bootstrap", "clopper-pearson"):
            raise ValueError(f"ci_method must be 'bootstrap' or 'clopper-pearson', got {self.ci_method!r}")
        if self.query_block < 1 or self.gallery_block < 1:
            raise ValueError(
                f"query_block and gallery_block must be >= 1, got {self.query_block}, {self.gallery_block}"
            )


@dataclass
class KnnAttackResult:
    """Plain numbers and arrays; the report renders them."""

    observer: str
    kind: str
    config: dict[str, Any]
    num_observations: int
    num_gallery_images: int
    num_gallery_identities: int
    num_member_identities_in_gallery: int
    num_identifiable: int
    top1_rate: float
    top1_ci: tuple[float, float]
    topk_rate: float
    topk_ci: tuple[float, float]
    nearest_identities: np.ndarray
    nearest_scores: np.ndarray
    membership_identities: np.ndarray
    membership_scores: np.ndarray
    membership_labels: np.ndarray
    membership_auc: float
    membership_auc_ci: tuple[float, float]
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    tpr_at_fpr: list[TprAtFpr]
    group_accuracy: float | None
    group_ci: tuple[float, float] | None
    group_chance: float | None
    group_num_observations: int
    notes: list[str] = field(default_factory=list)
    top1_chance: float = float("nan")
    ceiling: NormalisedSuccess | None = None  # vs the true-class-center oracle
    ceiling_real: NormalisedSuccess | None = None  # vs the real-unseen-image oracle
    oracle_real_source: str | None = None

    @property
    def oracle_top1(self) -> float:
        """Top-1 rate of the same attacker on the true class centers ``W_k`` (NaN: none given)."""
        return float("nan") if self.ceiling is None else self.ceiling.oracle

    @property
    def oracle_real_top1(self) -> float:
        """Top-1 rate on embeddings of real unseen images of the same identities (NaN: none given)."""
        return float("nan") if self.ceiling_real is None else self.ceiling_real.oracle

    @property
    def null_top1(self) -> float:
        """Top-1 rate on as many seeded random unit vectors (the floor)."""
        c = self.ceiling if self.ceiling is not None else self.ceiling_real
        return float("nan") if c is None else c.null

    @property
    def normalised_top1(self) -> float:
        """``(top1 - null) / (oracle - null)`` against the true-center oracle (NaN: no dynamic range)."""
        return float("nan") if self.ceiling is None else self.ceiling.normalised

    @property
    def normalised_top1_ci(self) -> tuple[float, float]:
        return (float("nan"),) * 2 if self.ceiling is None else self.ceiling.normalised_ci

    @property
    def units(self) -> int:
        """Number of independent units the ceiling intervals resample."""
        c = self.ceiling if self.ceiling is not None else self.ceiling_real
        return 0 if c is None else c.num_units

    @property
    def unit_name(self) -> str | None:
        c = self.ceiling if self.ceiling is not None else self.ceiling_real
        return None if c is None else c.unit_name

    def summary(self) -> dict[str, Any]:
        """The scalar part (what a table row shows), with the ceiling / floor keys of
        `attacks.metrics.ceiling_summary` for ``top1``."""
        out: dict[str, Any] = {
            "observer": self.observer,
            "kind": self.kind,
            "num_observations": self.num_observations,
            "num_identifiable": self.num_identifiable,
            "top1": self.top1_rate,
            "top1_chance": self.top1_chance,
            f"top{self.config['k']}": self.topk_rate,
            "membership_auc": self.membership_auc,
            "membership_auc_ci": self.membership_auc_ci,
        }
        for t in self.tpr_at_fpr:
            out[f"tpr@fpr={t.target_fpr:g}"] = t.tpr
            out[f"tpr@fpr={t.target_fpr:g}_ci"] = (t.ci_low, t.ci_high)
        out["group_accuracy"] = self.group_accuracy
        out["group_chance"] = self.group_chance
        out.update(ceiling_summary("top1", self.ceiling, self.ceiling_real))
        out["oracle_real_source"] = self.oracle_real_source
        return out


def embed_gallery(
    model: torch.nn.Module, faces: Any, device: str | torch.device = "cpu", batch_size: int = 256
) -> Gallery:
    """Embed a `FaceSet` with ``model`` (the observed or a public model) into a `Gallery`."""
    from federated_core.models import embed

    emb = embed(model, faces, batch_size=batch_size, device=device)
    return Gallery(emb.float().cpu(), faces.labels.clone(), None if faces.groups is None else faces.groups.clone())


def _majority(values: list[int]) -> int:
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)  # ties: smallest group id (deterministic)


def _check_queries(
    observed: torch.Tensor,
    gallery: Gallery,
    n_truth: int,
    where: str,
    what: str = "observed vectors",
    allow_nan_rows: bool = False,
) -> None:
    if observed.dim() != 2 or observed.shape[0] == 0:
        raise ValueError(f"{where}: {what} must be a non-empty [Q, d] array, got shape {tuple(observed.shape)}")
    if observed.shape[1] != gallery.dim:
        raise ValueError(
            f"{where}: {what} have d={observed.shape[1]} but the gallery embeddings have d={gallery.dim} "
            "(embed the gallery with a model of the observed dimension)"
        )
    finite = torch.isfinite(observed)
    bad = ~finite.all(1) & (finite.any(1) if allow_nan_rows else torch.ones(len(observed), dtype=torch.bool))
    if bool(bad.any()):
        raise ValueError(
            f"{where}: {what} contain NaN or inf"
            + (" (only whole NaN rows may mark a missing query)" if allow_nan_rows else "")
        )
    if n_truth != observed.shape[0]:
        raise ValueError(f"{where}: truth.observation_ids has {n_truth} entries for {observed.shape[0]} {what}")


def _search(
    queries: torch.Tensor,
    gallery: Gallery,
    config: KnnAttackConfig,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One blocked pass over the gallery: top-k identity columns and scores per query, and the
    best score each gallery identity gets from any query."""
    n_ids = len(torch.unique(gallery.identity_ids))
    member_best = torch.full((n_ids,), -float("inf"))
    top_s = torch.empty(queries.shape[0], k)
    top_c = torch.empty(queries.shape[0], k, dtype=torch.int64)
    for sl, scores in identity_scores_blocks(
        queries,
        gallery.embeddings,
        gallery.identity_ids,
        reduce=config.identity_score,
        query_block=config.query_block,
        gallery_block=config.gallery_block,
        device=config.device,
        progress=config.progress,
    ):
        s, c = torch.topk(scores, k, dim=1)
        top_s[sl], top_c[sl] = s.cpu(), c.cpu()
        member_best = torch.maximum(member_best, scores.max(dim=0).values.cpu())
    return top_c, top_s, member_best


def _top1_hits(
    queries: torch.Tensor, gallery: Gallery, truth: KnnTruth, config: KnnAttackConfig, identifiable: list[int]
) -> np.ndarray:
    """Per observation: 1.0 when the nearest gallery identity of its query is one it stands for,
    0.0 when not, NaN when it is not identifiable or its query row is missing (NaN)."""
    ids = torch.unique(gallery.identity_ids)
    out = np.full(queries.shape[0], np.nan)
    rows = [i for i in identifiable if bool(torch.isfinite(queries[i]).all())]
    if not rows:
        return out
    top_c, _, _ = _search(queries[rows], gallery, config, 1)
    nearest = ids[top_c[:, 0]].tolist()
    for i, n in zip(rows, nearest):
        out[i] = float(int(n) in truth.observation_ids[i])
    return out


def _identification(
    nearest: torch.Tensor,
    gallery_id_list: torch.Tensor,
    truth: KnnTruth,
    confidence: float,
) -> tuple[list[int], np.ndarray, tuple[Any, ...], list[str]]:
    """Identification of the observations whose identities are in the gallery: their indices,
    per-observation top-1 hits (NaN elsewhere), (top-1, its Clopper–Pearson interval, chance,
    top-k, its interval), notes."""
    in_gallery = set(gallery_id_list.tolist())
    n_ids = len(gallery_id_list)
    identifiable = [i for i, ids in enumerate(truth.observation_ids) if ids & in_gallery]
    raw_hits = np.full(nearest.shape[0], np.nan)
    if not identifiable:
        nan2 = (float("nan"), float("nan"))
        return (
            identifiable,
            raw_hits,
            (float("nan"), nan2, float("nan"), float("nan"), nan2),
            ["no observed vector stands for an identity of the gallery: identification rate undefined"],
        )
    for i in identifiable:
        raw_hits[i] = float(int(nearest[i, 0]) in truth.observation_ids[i])
    hits1 = int(np.nansum(raw_hits))
    hitsk = sum(bool(set(nearest[i].tolist()) & truth.observation_ids[i]) for i in identifiable)
    # a nearest identity drawn uniformly from the gallery hits one of an observation's own
    # identities with probability |ids ∩ gallery| / |gallery|: the rate a useless vector gets
    chance = float(np.mean([len(truth.observation_ids[i] & in_gallery) / n_ids for i in identifiable]))
    n = len(identifiable)
    return (
        identifiable,
        raw_hits,
        (hits1 / n, clopper_pearson(hits1, n, confidence), chance, hitsk / n, clopper_pearson(hitsk, n, confidence)),
        [],
    )


def _membership(
    member_best: torch.Tensor,
    gallery_id_list: torch.Tensor,
    truth: KnnTruth,
    config: KnnAttackConfig,
    where: str,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, tuple, tuple, list[TprAtFpr]]:
    """Membership inference over gallery identities: each scores its best similarity to any
    observed vector; ROC (labels, scores, fpr, tpr), AUC with its interval, TPR at each FPR."""
    members = set(torch.as_tensor(truth.member_ids).tolist())
    labels = np.array([int(i) in members for i in gallery_id_list.tolist()], dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError(
            f"{where}: the gallery must hold both member and non-member identities for the membership view, "
            f"got {int(labels.sum())} members and {int((~labels).sum())} non-members"
        )
    mscores = member_best.numpy().astype(np.float64)
    fpr, tpr, _, auc = roc_auc(mscores, labels)
    auc_ci = auc_bootstrap_ci(mscores, labels, config.confidence, max(10, config.n_bootstrap), config.seed)
    rates = [
        tpr_at_fpr(
            mscores,
            labels,
            f,
            confidence=config.confidence,
            method=config.ci_method,
            n_bootstrap=config.n_bootstrap,
            seed=config.seed,
        )
        for f in config.fprs
    ]
    for r in rates:
        if not r.supported:
            notes.append(
                f"TPR@FPR={r.target_fpr:g} not supported: {r.num_negatives} non-member identities "
                f"(needs >= {math.ceil(1 / r.target_fpr)})"
            )
    return labels, mscores, (fpr, tpr), (auc, auc_ci), rates


def _group_view(
    nearest: torch.Tensor,
    gallery: Gallery,
    truth: KnnTruth,
    confidence: float,
) -> tuple[float | None, tuple[float, float] | None, float | None, int]:
    """Majority group of the covered identities vs of the k nearest gallery identities
    (PrivacyFace Fig. 8): accuracy, its Clopper–Pearson interval, the majority-class chance, n."""
    gallery_groups = gallery.identity_groups()
    all_groups = {**gallery_groups, **truth.identity_groups}
    if not gallery_groups:
        return None, None, None, 0
    pairs = []
    for i, ids in enumerate(truth.observation_ids):
        covered = [all_groups[j] for j in ids if j in all_groups]
        if not covered:
            continue
        predicted = _majority([gallery_groups[int(j)] for j in nearest[i].tolist()])
        pairs.append((_majority(covered), predicted))
    if not pairs:
        return None, None, None, 0
    hits = sum(t == p for t, p in pairs)
    chance = max(Counter(t for t, _ in pairs).values()) / len(pairs)
    return hits / len(pairs), clopper_pearson(hits, len(pairs), confidence), chance, len(pairs)


def _ceilings(
    observed: torch.Tensor,
    raw_hits: np.ndarray,
    gallery: Gallery,
    truth: KnnTruth,
    config: KnnAttackConfig,
    identifiable: list[int],
    oracle: torch.Tensor | None,
    oracle_real: torch.Tensor | None,
    units: Sequence[Any],
    unit_name: str,
) -> tuple[NormalisedSuccess | None, NormalisedSuccess | None, list[str]]:
    """Top-1 of the null (seeded random unit vectors, one per observation) and of each oracle,
    and the normalised success over units (DESIGN §8). Returns (vs W_k oracle, vs real oracle, notes)."""
    null = random_unit_vectors(observed.shape[0], observed.shape[1], config.seed + config.null_seed_offset)
    null_hits = _top1_hits(null, gallery, truth, config, identifiable)
    out: list[NormalisedSuccess | None] = []
    notes: list[str] = []
    for name, queries in (("true-center oracle", oracle), ("real-image oracle", oracle_real)):
        if queries is None:
            out.append(None)
            continue
        hits = _top1_hits(queries, gallery, truth, config, identifiable)
        missing = sum(1 for i in identifiable if not np.isfinite(hits[i]))
        if missing:
            notes.append(
                f"{name}: {missing} of {len(identifiable)} identifiable observations have no oracle query "
                "and are left out of its normalisation"
            )
        res = normalised_success(
            raw_hits,
            hits,
            null_hits,
            units,
            metric="top1",
            unit_name=unit_name,
            confidence=config.confidence,
            n_bootstrap=max(10, config.n_bootstrap),
            seed=config.seed,
        )
        notes += [f"{name}: {n}" for n in res.notes]
        out.append(res)
    if oracle is None and oracle_real is None:
        notes.append("no oracle queries given: top1 has a null but no ceiling")
    return out[0], out[1], notes


def _check_attack_inputs(
    observed: torch.Tensor,
    gallery: Gallery,
    truth: KnnTruth,
    oracle: torch.Tensor | None,
    oracle_real: torch.Tensor | None,
    units: Sequence[Any] | None,
    where: str,
) -> None:
    """Reject observed vectors, oracle queries or units that do not line up with the gallery and truth."""
    n_truth = len(truth.observation_ids)
    _check_queries(observed, gallery, n_truth, where)
    for name, q in (("oracle", oracle), ("oracle_real", oracle_real)):
        if q is not None:
            _check_queries(q, gallery, n_truth, where, f"{name} queries", allow_nan_rows=True)
    if units is not None and len(units) != observed.shape[0]:
        raise ValueError(f"{where}: units has {len(units)} entries for {observed.shape[0]} observed vectors")


def _nearest_identities(
    observed: torch.Tensor, gallery: Gallery, config: KnnAttackConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gallery's identity ids, each observation's ``k`` nearest identity ids and their scores,
    and the best score each gallery identity gets from any observation (`_search`)."""
    gallery_id_list = torch.unique(gallery.identity_ids)
    k = min(config.k, len(gallery_id_list))
    top_c, top_s, member_best = _search(observed, gallery, config, k)
    return gallery_id_list, gallery_id_list[top_c], top_s, member_best


def knn_identity_attack(
    observed: torch.Tensor,
    gallery: Gallery,
    truth: KnnTruth,
    config: KnnAttackConfig | None = None,
    observer: str = "server",
    kind: str = "class_centers",
    oracle: torch.Tensor | None = None,
    oracle_real: torch.Tensor | None = None,
    units: Sequence[Any] | None = None,
    unit_name: str = "observation",
    oracle_real_source: str | None = None,
) -> KnnAttackResult:
    """Match each observed center-like vector ``[Q, d]`` to its nearest gallery identities.

    PrivacyFace App. A.2.4: "an attacker owns a gallery of faces with enormous identities and
    attacks the exposed class centers by finding their neighbors". ``observer`` and ``kind`` only
    label the result and error messages.

    Ceiling and floor (DESIGN §8): ``oracle`` / ``oracle_real`` are ``[Q, d]`` queries aligned with
    ``observed`` (the true class centers behind each observation, and real-image embeddings of its
    identities; an all-NaN row: none for that observation); the null is as many seeded random
    unit vectors. ``units`` labels each observation's independent unit (default: each observation
    its own), over which the intervals of the normalised success resample.
    """
    config = config or KnnAttackConfig()
    where = f"observer {observer!r}, kind {kind!r}"
    _check_attack_inputs(observed, gallery, truth, oracle, oracle_real, units, where)
    gallery_id_list, nearest, top_s, member_best = _nearest_identities(observed, gallery, config)
    n_ids = len(gallery_id_list)
    identifiable, raw_hits, (top1, top1_ci, top1_chance, topk, topk_ci), notes = _identification(
        nearest, gallery_id_list, truth, config.confidence
    )
    labels, mscores, (fpr, tpr), (auc, auc_ci), rates = _membership(
        member_best, gallery_id_list, truth, config, where, notes
    )
    group_acc, group_ci, group_chance, n_group = _group_view(nearest, gallery, truth, config.confidence)
    ceiling = ceiling_real = None
    if identifiable:
        unit_list = list(range(observed.shape[0])) if units is None else list(units)
        ceiling, ceiling_real, more = _ceilings(
            observed, raw_hits, gallery, truth, config, identifiable, oracle, oracle_real, unit_list, unit_name
        )
        notes += more
    return KnnAttackResult(
        observer=observer,
        kind=kind,
        config=dataclasses.asdict(config),
        num_observations=int(observed.shape[0]),
        num_gallery_images=int(gallery.embeddings.shape[0]),
        num_gallery_identities=n_ids,
        num_member_identities_in_gallery=int(labels.sum()),
        num_identifiable=len(identifiable),
        top1_rate=top1,
        top1_ci=top1_ci,
        top1_chance=top1_chance,
        topk_rate=topk,
        topk_ci=topk_ci,
        nearest_identities=nearest.numpy(),
        nearest_scores=top_s.numpy(),
        membership_identities=gallery_id_list.numpy(),
        membership_scores=mscores,
        membership_labels=labels,
        membership_auc=auc,
        membership_auc_ci=auc_ci,
        roc_fpr=fpr,
        roc_tpr=tpr,
        tpr_at_fpr=rates,
        group_accuracy=group_acc,
        group_ci=group_ci,
        group_chance=group_chance,
        group_num_observations=n_group,
        notes=notes,
        ceiling=ceiling,
        ceiling_real=ceiling_real,
        oracle_real_source=oracle_real_source,
    )


def covered_identities(
    vectors: torch.Tensor, class_centers: torch.Tensor, center_ids: torch.Tensor, margin: float | None = None
) -> list[frozenset[int]]:
    """Ground truth of cluster-like vectors: which identities each one covers.

    With ``margin`` (radians; PrivacyFace's ρ) a vector covers the class centers within angle ρ;
    without it, each class center is assigned to its nearest vector (a k-means partition).
    """
    if vectors.dim() != 2 or class_centers.dim() != 2 or vectors.shape[1] != class_centers.shape[1]:
        raise ValueError(
            f"vectors {tuple(vectors.shape)} and class_centers {tuple(class_centers.shape)} must be [n, d] with the same d"
        )
    if center_ids.shape[0] != class_centers.shape[0]:
        raise ValueError(f"center_ids has {center_ids.shape[0]} entries for {class_centers.shape[0]} class centers")
    sims = F.normalize(vectors.float(), dim=1) @ F.normalize(class_centers.float(), dim=1).T
    ids = center_ids.tolist()
    if margin is not None:
        if not 0 < margin <= math.pi:
            raise ValueError(f"margin must be in (0, pi] radians, got {margin}")
        inside = sims >= math.cos(margin)
        return [frozenset(int(ids[j]) for j in torch.nonzero(row).flatten().tolist()) for row in inside]
    owner = sims.argmax(dim=0)
    return [
        frozenset(int(ids[j]) for j in torch.nonzero(owner == q).flatten().tolist()) for q in range(vectors.shape[0])
    ]


@dataclass
class DpKmeansResult:
    centers: torch.Tensor
    covered: list[frozenset[int]]
    epsilon: float
    n_clusters: int


def dp_kmeans_centers(
    class_centers: torch.Tensor,
    center_ids: torch.Tensor,
    n_clusters: int,
    epsilon: float,
    bounds: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
) -> DpKmeansResult:
    """A sanitised alternative to DPLC: diffprivlib's DP k-means (DPLloyd, Su et al. 2016) on one
    client's class centers, with per-feature ``bounds`` (unit vectors lie in [-1, 1]).

    Centers outside ``bounds`` are an error (diffprivlib would clip them silently). ``covered``
    holds, for scoring only, the identities of the class centers nearest to each DP center.
    """
    from diffprivlib import BudgetAccountant
    from diffprivlib.models import KMeans

    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
    if class_centers.dim() != 2 or class_centers.shape[0] == 0:
        raise ValueError(f"class_centers must be a non-empty [n, d] array, got shape {tuple(class_centers.shape)}")
    if not 1 <= n_clusters <= class_centers.shape[0]:
        raise ValueError(
            f"n_clusters must be in [1, number of class centers={class_centers.shape[0]}], got {n_clusters}"
        )
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
    x = class_centers.detach().double().cpu().numpy()
    if x.min() < lo or x.max() > hi:
        raise ValueError(
            f"class_centers lie outside bounds {bounds} (min {x.min():.4g}, max {x.max():.4g}); "
            "normalise them or widen the bounds — they would otherwise be clipped"
        )
    d = x.shape[1]
    model = KMeans(
        n_clusters=n_clusters,
        epsilon=epsilon,
        bounds=(np.full(d, lo), np.full(d, hi)),
        random_state=seed,
        accountant=BudgetAccountant(),
    )
    model.fit(x)
    centers = torch.from_numpy(np.asarray(model.cluster_centers_, dtype=np.float32))
    covered = covered_identities(centers, class_centers, center_ids)
    return DpKmeansResult(centers=centers, covered=covered, epsilon=float(epsilon), n_clusters=n_clusters)
