"""The independent evaluation model, and the identity ground truth it scores against.

A reconstruction "reveals an identity" when a face recogniser that played no part in the attack
matches it to that identity. Scoring with the attacked model itself would be circular (the
decoder was trained to please it; a gradient inversion matches its features). So the evaluator is
a separate backbone, trained centrally (`federated_core.pretrain.pretrain`) on *public identities
disjoint from the attacked ones* — and by default disjoint from φ0's public identities too, with
its own seed. Every result that uses it says so (`Evaluator.description`). By default it shares
φ0's architecture and recipe; `evaluator_config(..., architecture=...)` makes it another
registered backbone (DESIGN §8: "an evaluator of another architecture"), trained with
`evaluator_recipe`. The checkpoint cache keys on the whole config (architecture included), and a
loaded checkpoint that is not what its key stands for is never used (`train_evaluator`).

`IdentityReference` holds, for the attacked identities, what scoring needs and the attacker never
saw: each identity's mean embedding under the evaluator, its mean face, and an evaluator-space
gallery for rank-1 matching.

"Identity recovered" (DESIGN §8) means the evaluator's similarity of a reconstruction to the true
identity's template passes a threshold calibrated at a fixed false-accept rate (1e-3, 1e-2) on
real genuine / impostor pairs of identities the evaluator never trained on (`calibrate_evaluator`;
the pairs mirror the scoring: one probe image against an identity template of other images).
`IdentityReference.score` reports that "success at FAR" beside rank-1, and impostor baselines
against *all* other attacked identities, split into those of the same population group and of
other groups (the synthetic generator draws every identity from one of a few groups).

Two evaluators scoring the same reconstructions should tell the same story: `evaluator_agreement`
reports each one's pass / fail at its own calibrated thresholds, the share of reconstructions
they judge alike, Cohen's kappa and the Spearman correlation of their identity similarities.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.knn import Gallery
from attacks.metrics import FarThreshold, psnr, ssim, threshold_at_far
from attacks.search import topk_cosine
from federated_core.integrity import CachedFileWarning

__all__ = [
    "Evaluator",
    "evaluator_config",
    "folder_evaluator_config",
    "train_evaluator",
    "IdentityReference",
    "ReconstructionScores",
    "build_reference",
    "EvaluatorCalibration",
    "calibrate_evaluator",
    "evaluator_recipe",
    "cohen_kappa",
    "PassAgreement",
    "EvaluatorAgreement",
    "agreement_of_scores",
    "evaluator_agreement",
]


@dataclass
class Evaluator:
    """An evaluation backbone and the statement of its independence."""

    model: nn.Module
    train_identities: tuple[int, int]
    description: str
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_identities: tuple[int, int] | None = None  # its own held-out identities (threshold calibration)
    cache_problems: tuple[str, ...] = ()  # its cached checkpoint failed its checksum and was retrained

    @property
    def resolution(self) -> int:
        return int(getattr(self.model, "resolution", 0) or cast(dict[str, Any], self.model.build_config)["resolution"])


# Networks whose embedding size is fixed by the architecture (`federated_core.models.registry`).
FIXED_EMBEDDING_DIM = {"inception_resnet_v1": 512}


def evaluator_recipe(architecture: str, phi0_config: Any) -> dict[str, int]:
    """Epochs and batch size of an evaluator of another architecture than φ0's: 40% of φ0's epochs
    (at least 1) with half its batch size (at least 16), i.e. more, smaller steps per epoch.

    Measured at the demo scale (32 px, 300 identities × 16 images, CosFace, 1 CPU thread, on
    100 held-out identities): φ0's recipe on the tiny CNN (10 epochs, batch 128) trains in 11 s
    of CPU and verifies at AUROC 0.934 (10-fold accuracy 0.866); MobileFaceNet with this recipe
    (4 epochs, batch 64) takes 55 s of CPU (of which a few to render and evaluate) and verifies at
    AUROC 0.934 (accuracy 0.870). MobileFaceNet at 3 epochs, batch 128 falls behind (AUROC 0.880);
    IResNet-18 costs ~5× MobileFaceNet per image at 32 px (a GPU network). ``architecture`` is kept
    for a per-network rule.
    """
    del architecture  # one rule for every network so far
    return {
        "epochs": max(1, math.ceil(0.4 * int(phi0_config.epochs))),
        "batch_size": max(16, int(phi0_config.batch_size) // 2),
    }


def evaluator_config(
    phi0_config: Any,
    identity_offset: int = 5_000_000,
    seed_offset: int = 1,
    architecture: str | None = None,
) -> Any:
    """A `PretrainConfig` for the evaluator derived from φ0's: same data generator, training
    identities shifted by ``identity_offset`` (disjoint from φ0's and the clients') and its own seed.

    ``architecture``: None keeps φ0's backbone and recipe (an evaluator independent in its data
    and seed only); otherwise a registered backbone other than φ0's (DESIGN §8: "an evaluator of
    another architecture"), trained on φ0's data with φ0's head, and with `evaluator_recipe`'s
    epochs and batch size (its own embedding size where the network fixes one).

    Raises:
        ValueError: ``identity_offset < 1``, or ``architecture`` is not a registered backbone or
            is φ0's own (pass None for that).
    """
    if identity_offset < 1:
        raise ValueError(f"identity_offset must be >= 1, got {identity_offset}")
    a, b = phi0_config.train_identities
    ea, eb = phi0_config.eval_identities
    config = dataclasses.replace(
        phi0_config,
        train_identities=(a + identity_offset, b + identity_offset),
        eval_identities=(ea + identity_offset, eb + identity_offset),
        seed=phi0_config.seed + seed_offset,
    )
    return _with_architecture(config, phi0_config, architecture)


def folder_evaluator_config(
    phi0_config: Any,
    data: Any,
    train_ids: Sequence[int],
    eval_ids: Sequence[int],
    train_images_per_identity: int,
    eval_images_per_identity: int,
    seed_offset: int = 1,
    architecture: str | None = None,
) -> Any:
    """A `PretrainConfig` for an evaluator on a face folder: φ0's recipe on ``data`` (a
    `federated_core.pretrain.FolderSpec`), trained on the folder identities ``train_ids`` with
    ``train_images_per_identity`` images each, its own metrics on ``eval_ids`` (disjoint; φ0's pair
    counts capped at the pairs those images hold), its own seed; ``architecture`` as in `evaluator_config`.

    Raises:
        ValueError: fewer than 2 ids in either list, overlapping lists, or image counts below 1 / 2
            (named), or a bad ``architecture``.
    """
    train, held = sorted(int(i) for i in train_ids), sorted(int(i) for i in eval_ids)
    if len(train) < 2 or len(held) < 2:
        raise ValueError(f"train_ids and eval_ids must hold >= 2 identities each, got {len(train)} and {len(held)}")
    if int(train_images_per_identity) < 1:
        raise ValueError(f"train_images_per_identity must be >= 1, got {train_images_per_identity}")
    if int(eval_images_per_identity) < 2:
        raise ValueError(f"eval_images_per_identity must be >= 2 (genuine pairs), got {eval_images_per_identity}")
    per = int(eval_images_per_identity)
    genuine = len(held) * per * (per - 1) // 2  # the pairs its own verification can draw
    impostor = len(held) * per * (len(held) * per - 1) // 2 - genuine
    config = dataclasses.replace(
        phi0_config,
        data=data,
        train_identity_list=tuple(train),
        eval_identity_list=tuple(held),
        train_images_per_identity=int(train_images_per_identity),
        eval_images_per_identity=per,
        eval_genuine_pairs=min(int(phi0_config.eval_genuine_pairs), genuine),
        eval_impostor_pairs=min(int(phi0_config.eval_impostor_pairs), impostor),
        seed=phi0_config.seed + seed_offset,
    )
    return _with_architecture(config, phi0_config, architecture)


def _with_architecture(config: Any, phi0_config: Any, architecture: str | None) -> Any:
    """``config`` as ``architecture`` (None: φ0's) with `evaluator_recipe`'s epochs and batch size."""
    if architecture is None:
        return config
    from federated_core.models.registry import BACKBONE_NAMES

    allowed = [n for n in BACKBONE_NAMES if n != phi0_config.backbone]
    if architecture not in allowed:
        raise ValueError(
            f"architecture must be None (φ0's {phi0_config.backbone!r}) or a registered backbone other than "
            f"φ0's, one of {allowed}; got {architecture!r}"
        )
    return dataclasses.replace(
        config,
        backbone=architecture,
        embedding_dim=FIXED_EMBEDDING_DIM.get(architecture, phi0_config.embedding_dim),
        **evaluator_recipe(architecture, phi0_config),
    )


def _check_disjoint(span: tuple[int, int], ids: torch.Tensor, what: str) -> None:
    ids = torch.as_tensor(ids, dtype=torch.int64)
    inside = ids[(ids >= span[0]) & (ids < span[1])]
    if inside.numel():
        raise ValueError(
            f"the evaluator's training identities {span} overlap the {what} "
            f"(e.g. {inside[:5].tolist()}); choose a disjoint identity range"
        )


def train_evaluator(
    config: Any,
    attacked_identities: torch.Tensor | Sequence[int],
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    other_excluded: torch.Tensor | Sequence[int] | None = None,
) -> Evaluator:
    """Train (or load from ``cache_dir``) the evaluation backbone with ``pretrain(config)``.

    Raises ``ValueError`` when its training identities overlap ``attacked_identities`` (or
    ``other_excluded``, e.g. φ0's public identities). A config naming its identities
    (``train_identity_list``: a face folder's, `folder_evaluator_config`) is checked id by id.
    """
    listed = getattr(config, "train_identity_list", None)
    if listed is not None:
        return _train_listed_evaluator(config, attacked_identities, cache_dir, device, progress, other_excluded)
    span = tuple(config.train_identities)
    _check_disjoint(span, torch.as_tensor(attacked_identities), "attacked identities")
    if other_excluded is not None:
        _check_disjoint(span, torch.as_tensor(other_excluded), "excluded identities")
    result, problems = _pretrained(config, cache_dir, device, progress)
    desc = (
        f"independent evaluation model: {config.backbone} backbone (d={config.embedding_dim}, seed {config.seed}) "
        f"trained centrally on public identities [{span[0]}, {span[1]}), disjoint from the attacked identities"
    )
    return Evaluator(
        result.backbone.eval(),
        span,
        desc,
        dict(result.metrics),
        tuple(getattr(config, "eval_identities", None) or ()) or None,
        problems,
    )


def _pretrained(config: Any, cache_dir: str | Path | None, device: str | torch.device, progress: bool) -> Any:
    """``(pretrain(config), cache problems)``: a cached checkpoint that is not what its key stands
    for is never used (retrained with a warning, the mismatch among the problems)."""
    from federated_core.pretrain import pretrain

    result = pretrain(config, cache_dir=cache_dir, device=device, progress=progress)
    problems = tuple(result.cache_problems)
    mismatch = _checkpoint_mismatch(result, config)
    if mismatch is not None:  # another model's checkpoint under this key: never score with it
        warnings.warn(f"cached evaluator not used, it is retrained: {mismatch}", CachedFileWarning, stacklevel=3)
        result = pretrain(config, cache_dir=None, device=device, progress=progress)
        problems += (mismatch,)
    return result, problems


def _train_listed_evaluator(
    config: Any,
    attacked_identities: torch.Tensor | Sequence[int],
    cache_dir: str | Path | None,
    device: str | torch.device,
    progress: bool,
    other_excluded: torch.Tensor | Sequence[int] | None,
) -> Evaluator:
    """`train_evaluator` for a config naming its identities (``train_identity_list``, e.g. a face
    folder's): refused when they include an attacked or excluded identity."""
    train = config.train_ids()
    for what, ids in (("attacked identities", attacked_identities), ("excluded identities", other_excluded)):
        if ids is None:
            continue
        inside = train[torch.isin(train, torch.as_tensor(ids, dtype=torch.int64))]
        if inside.numel():
            raise ValueError(
                f"the evaluator's training identities include {inside.numel()} of the {what} "
                f"(e.g. {inside[:5].tolist()}); choose disjoint identities"
            )
    result, problems = _pretrained(config, cache_dir, device, progress)
    where = getattr(config.data, "root", None)  # named, not located: results do not depend on where it lies
    source = f"identities of the face folder {Path(where).name!r}" if where else "listed identities"
    desc = (
        f"independent evaluation model: {config.backbone} backbone (d={config.embedding_dim}, seed {config.seed}) "
        f"trained centrally on {train.numel()} {source}, disjoint from the attacked identities"
    )
    span = (int(train.min()), int(train.max()) + 1)
    return Evaluator(result.backbone.eval(), span, desc, dict(result.metrics), None, problems)


def _checkpoint_mismatch(result: Any, config: Any) -> str | None:
    """Why a loaded checkpoint is not the one ``config`` trains (None: it is): its architecture,
    embedding size or resolution differ, or the training config stored in it hashes differently."""
    if not result.cached:
        return None
    built = result.backbone.build_config
    want = {"name": config.backbone, "embedding_dim": config.embedding_dim, "resolution": config.resolution}
    got = {k: built.get(k) for k in want}
    if got != want:
        return f"{result.path} holds a {got} backbone, not the {want} one its key stands for"
    stored = result.config.get("pretrain")
    try:
        same = stored is not None and type(config).from_dict(stored).fingerprint() == config.fingerprint()
    except (TypeError, ValueError) as exc:  # fields this version does not know, or bad values
        return f"{result.path} holds an unreadable training config ({exc})"
    return None if same else f"{result.path} was trained with another config than the one its key stands for"


@dataclass
class ReconstructionScores:
    """Per-reconstruction scores (arrays) and their means; plain data for the report.

    ``impostor_identity_similarity`` / ``impostor_ssim`` / ``impostor_psnr`` compare with one set
    of shifted identities (`IdentityReference.impostors`); the ``impostor_*_group_*`` arrays use
    *all* other attacked identities, split by population group (NaN without groups or without
    such identities). With a calibrated evaluator, ``success_at_far[far]`` says whether the
    similarity to the true identity passes the threshold at that false-accept rate, and
    ``impostor_match_*_group[far]`` is each reconstruction's share of other identities it passes for.
    """

    identity_similarity: np.ndarray
    rank1: np.ndarray
    ssim: np.ndarray
    psnr: np.ndarray
    evaluator: str
    impostor_identity_similarity: np.ndarray | None = None
    impostor_ssim: np.ndarray | None = None
    impostor_psnr: np.ndarray | None = None
    impostor_all_similarity: np.ndarray | None = None
    impostor_same_group_similarity: np.ndarray | None = None
    impostor_other_group_similarity: np.ndarray | None = None
    success_at_far: dict[float, np.ndarray] = dataclasses.field(default_factory=dict)
    impostor_match_same_group: dict[float, np.ndarray] = dataclasses.field(default_factory=dict)
    impostor_match_other_group: dict[float, np.ndarray] = dataclasses.field(default_factory=dict)
    far_supported: dict[float, bool] = dataclasses.field(default_factory=dict)

    def means(self) -> dict[str, float]:
        def mean(a: np.ndarray | None) -> float:
            if a is None:
                return float("nan")
            a = np.asarray(a, dtype=np.float64)
            a = a[np.isfinite(a)]
            return float(np.mean(a)) if len(a) else float("nan")

        out = {
            "identity_similarity": mean(self.identity_similarity),
            "rank1": mean(self.rank1.astype(np.float64)),
            "ssim": mean(self.ssim),
            "psnr": mean(self.psnr),
            "impostor_identity_similarity": mean(self.impostor_identity_similarity),
            "impostor_ssim": mean(self.impostor_ssim),
            "impostor_psnr": mean(self.impostor_psnr),
            "impostor_all_identity_similarity": mean(self.impostor_all_similarity),
            "impostor_same_group_identity_similarity": mean(self.impostor_same_group_similarity),
            "impostor_other_group_identity_similarity": mean(self.impostor_other_group_similarity),
        }
        for far, hits in self.success_at_far.items():
            out[f"success@far={far:g}"] = mean(hits)
            out[f"impostor_same_group_match@far={far:g}"] = mean(self.impostor_match_same_group.get(far))
            out[f"impostor_other_group_match@far={far:g}"] = mean(self.impostor_match_other_group.get(far))
        return out


def _to_unit_images(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


@dataclass
class IdentityReference:
    """Ground truth of the attacked identities in the evaluator's space.

    Attributes:
        evaluator: the independent evaluation model.
        identity_ids: ``[I]`` sorted identity ids.
        templates: ``[I, d_eval]`` normalised mean evaluator embedding per identity.
        image_sums / image_counts: per identity, the sum of its images in ``[0, 1]`` and their
            number (mean faces of any set of identities pool these).
        gallery: evaluator-space gallery for rank-1 matching (the attacked identities' real images
            plus distractors).
        identity_groups: ``[I]`` population group of each identity (None: unknown).
        calibration: the evaluator's thresholds at fixed FARs (`calibrate_evaluator`); None: no
            "success at FAR" scores.
        example_images: ``[I, 3, R, R]`` uint8, the first real image of each identity (what a
            reader's grid shows above a reconstruction); None: only mean faces are known.
    """

    evaluator: Evaluator
    identity_ids: torch.Tensor
    templates: torch.Tensor
    image_sums: torch.Tensor
    image_counts: torch.Tensor
    gallery: Gallery
    device: str = "cpu"
    identity_groups: torch.Tensor | None = None
    calibration: "EvaluatorCalibration | None" = None
    example_images: torch.Tensor | None = None

    def _rows(self, ids: frozenset[int] | set[int], where: str) -> torch.Tensor:
        t = torch.tensor(sorted(ids), dtype=torch.int64)
        pos = torch.searchsorted(self.identity_ids, t).clamp(max=len(self.identity_ids) - 1)
        ok = self.identity_ids[pos] == t
        if not bool(ok.all()):
            raise ValueError(f"{where}: identities {t[~ok][:5].tolist()} have no reference images")
        return pos

    def mean_face(self, ids: frozenset[int] | set[int], resolution: int | None = None) -> torch.Tensor:
        """Mean face ``[3, R, R]`` in ``[0, 1]`` of the images of ``ids`` pooled."""
        rows = self._rows(ids, "mean_face")
        face = self.image_sums[rows].sum(0) / self.image_counts[rows].sum()
        if resolution is not None and resolution != face.shape[-1]:
            face = F.interpolate(
                face[None], size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
            )[0]
        return face

    def real_face(self, ids: frozenset[int] | set[int], resolution: int | None = None) -> torch.Tensor:
        """One real image ``[3, R, R]`` in ``[0, 1]`` of the smallest identity in ``ids`` (a cluster
        stands for several identities); their mean face when no example images were kept."""
        if self.example_images is None:
            return self.mean_face(ids, resolution)
        row = self._rows({min(ids)}, "real_face")[0]
        face = self.example_images[row].float() / 255.0
        if resolution is not None and resolution != face.shape[-1]:
            face = F.interpolate(
                face[None], size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
            )[0]
        return face

    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Evaluator embeddings of images in ``[0, 1]`` (resized to the evaluator's resolution)."""
        from federated_core.models import embed

        x = _to_unit_images(images)
        r = self.evaluator.resolution
        if x.shape[-1] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        return embed(self.evaluator.model, (x * 2 - 1).clamp(-1, 1), batch_size=batch_size, device=self.device)

    def score(self, reconstructions: torch.Tensor, observation_ids: Sequence[frozenset[int]]) -> ReconstructionScores:
        """Score reconstructions ``[N, 3, R, R]`` in ``[0, 1]`` against the identities each stands for.

        (a) identity similarity: cosine of the evaluator embedding to the identity's mean
        embedding (for a vector covering several identities, the best one); (b) rank-1: the
        nearest evaluator-gallery image belongs to one of them; (c) SSIM / PSNR against the mean
        face of the covered identities' images (at the reconstruction's resolution).
        """
        if reconstructions.dim() != 4 or reconstructions.shape[1] != 3:
            raise ValueError(f"reconstructions must be [N, 3, R, R], got shape {tuple(reconstructions.shape)}")
        if len(observation_ids) != reconstructions.shape[0]:
            raise ValueError(
                f"observation_ids has {len(observation_ids)} entries for {reconstructions.shape[0]} reconstructions"
            )
        keep = [i for i, ids in enumerate(observation_ids) if ids]
        if len(keep) < len(observation_ids):
            raise ValueError("every reconstruction must stand for at least one identity (got an empty identity set)")
        rec = _to_unit_images(reconstructions).cpu()
        emb = self.embed(rec)
        id_sim = self._true_identity_similarity(emb, observation_ids)
        _, nearest = topk_cosine(emb, self.gallery.embeddings, k=1)
        nearest_ids = self.gallery.identity_ids[nearest[:, 0]].tolist()
        rank1 = np.array([n in ids for n, ids in zip(nearest_ids, observation_ids)], dtype=bool)
        faces = torch.stack([self.mean_face(ids, rec.shape[-1]) for ids in observation_ids])
        # Impostor baseline: the same scores against other attacked identities (as many as the
        # vector stands for), so a number can be read against what any face would get.
        imp_sim = np.full(len(rec), np.nan)
        imp_faces = faces.clone()
        has_imp = np.zeros(len(rec), dtype=bool)
        for i, ids in enumerate(observation_ids):
            others = self.impostors(ids)
            if others:
                rows = self._rows(others, "score")
                imp_sim[i] = float((self.templates[rows] @ emb[i]).max())
                imp_faces[i] = self.mean_face(others, rec.shape[-1])
                has_imp[i] = True
        imp_ssim = np.where(has_imp, ssim(rec, imp_faces).numpy(), np.nan)
        imp_psnr = np.where(has_imp, psnr(rec, imp_faces).numpy(), np.nan)
        return ReconstructionScores(
            identity_similarity=id_sim,
            rank1=rank1,
            ssim=ssim(rec, faces).numpy(),
            psnr=psnr(rec, faces).numpy(),
            evaluator=self.evaluator.description,
            impostor_identity_similarity=imp_sim,
            impostor_ssim=imp_ssim,
            impostor_psnr=imp_psnr,
            **self._threshold_scores(emb, id_sim, observation_ids),
        )

    def _true_identity_similarity(self, emb: torch.Tensor, observation_ids: Sequence[frozenset[int]]) -> np.ndarray:
        """Cosine of each embedding to its identity's template (the best of several identities)."""
        out = np.empty(len(emb))
        for i, ids in enumerate(observation_ids):
            rows = self._rows(ids, "score")
            out[i] = float((self.templates[rows] @ emb[i]).max())
        return out

    def identity_similarity(
        self, reconstructions: torch.Tensor, observation_ids: Sequence[frozenset[int]]
    ) -> np.ndarray:
        """Only the identity similarity of `score`: ``[N]`` cosines of each reconstruction's
        evaluator embedding to the template of the identity it stands for (the best of several)."""
        if reconstructions.dim() != 4 or len(observation_ids) != reconstructions.shape[0]:
            raise ValueError(
                f"need reconstructions [N, 3, R, R] and one identity set each, got shape "
                f"{tuple(reconstructions.shape)} and {len(observation_ids)} identity sets"
            )
        return self._true_identity_similarity(self.embed(_to_unit_images(reconstructions).cpu()), observation_ids)

    def _threshold_scores(
        self, emb: torch.Tensor, id_sim: np.ndarray, observation_ids: Sequence[frozenset[int]]
    ) -> dict[str, Any]:
        """Impostor similarities against *all* other attacked identities, by population group
        (same group as one of the covered identities vs other groups), and with a calibration, the
        success at each FAR (similarity to the true identity >= threshold) and each
        reconstruction's share of impostor identities that pass the same threshold."""
        sims = (emb @ self.templates.T).double().numpy()  # [N, I]
        groups = None if self.identity_groups is None else self.identity_groups.numpy()
        n = len(id_sim)
        mean_all, mean_same, mean_other = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        masks = []
        for i, ids in enumerate(observation_ids):
            rows = self._rows(ids, "score").numpy()
            other = np.ones(sims.shape[1], dtype=bool)
            other[rows] = False
            same = np.zeros_like(other) if groups is None else other & np.isin(groups, groups[rows])
            diff = np.zeros_like(other) if groups is None else other & ~same
            masks.append((same, diff))
            for arr, m in ((mean_all, other), (mean_same, same), (mean_other, diff)):
                if m.any():
                    arr[i] = float(sims[i, m].mean())
        out: dict[str, Any] = {
            "impostor_all_similarity": mean_all,
            "impostor_same_group_similarity": mean_same,
            "impostor_other_group_similarity": mean_other,
        }
        if self.calibration is None:
            return out
        out.update(success_at_far={}, impostor_match_same_group={}, impostor_match_other_group={}, far_supported={})
        for t in self.calibration.thresholds:
            out["success_at_far"][t.target_far] = id_sim >= t.threshold
            out["far_supported"][t.target_far] = t.supported
            for key, j in (("impostor_match_same_group", 0), ("impostor_match_other_group", 1)):
                out[key][t.target_far] = np.array(
                    [
                        float((sims[i, m[j]] >= t.threshold).mean()) if m[j].any() else np.nan
                        for i, m in enumerate(masks)
                    ]
                )
        return out

    def impostors(self, ids: frozenset[int] | set[int]) -> frozenset[int]:
        """As many attacked identities as ``ids`` holds, none of them in ``ids``: each shifted by
        half the identity list (then by one more until disjoint); when no shift is disjoint (a
        large scattered set, e.g. all of a client's identities), a contiguous run of the other
        identities starting half-way through them. Empty when impossible (``ids`` more than half)."""
        n = len(self.identity_ids)
        if len(ids) * 2 > n:
            return frozenset()
        pos = self._rows(ids, "impostors").tolist()
        for extra in range(n):
            shifted = {int(self.identity_ids[(p + n // 2 + extra) % n]) for p in pos}
            if not shifted & set(ids) and len(shifted) == len(ids):
                return frozenset(shifted)
        others = [int(i) for i in self.identity_ids.tolist() if int(i) not in ids]
        start = len(others) // 2
        return frozenset(others[(start + j) % len(others)] for j in range(len(ids)))


def build_reference(
    evaluator: Evaluator,
    reference_faces: Any,
    gallery_faces: Any | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> IdentityReference:
    """Build the ground truth of the attacked identities from their real images (`FaceSet`).

    ``gallery_faces`` (default: ``reference_faces``) is what rank-1 matches against; it should
    hold the attacked identities and distractors.
    """
    if len(reference_faces) == 0:
        raise ValueError("reference_faces is empty")

    def emb(faces: Any) -> torch.Tensor:
        return _embed_faces(evaluator, faces, device, batch_size)

    ref_emb = emb(reference_faces)
    ids, inverse = torch.unique(reference_faces.labels, return_inverse=True)
    templates = torch.zeros(len(ids), ref_emb.shape[1])
    templates.index_add_(0, inverse, ref_emb)
    templates = F.normalize(templates, dim=1)
    imgs = reference_faces.images.float() / 255.0
    sums = torch.zeros(len(ids), *imgs.shape[1:])
    sums.index_add_(0, inverse, imgs)
    counts = torch.bincount(inverse, minlength=len(ids)).float()
    first = torch.full((len(ids),), len(inverse), dtype=torch.int64).scatter_reduce(
        0, inverse, torch.arange(len(inverse)), reduce="amin"
    )
    gallery_faces = gallery_faces if gallery_faces is not None else reference_faces
    gallery = Gallery(
        emb(gallery_faces),
        gallery_faces.labels.clone(),
        None if gallery_faces.groups is None else gallery_faces.groups.clone(),
    )
    groups = None
    if reference_faces.groups is not None:
        groups = torch.zeros(len(ids), dtype=torch.int64)
        groups[inverse] = reference_faces.groups.to(torch.int64)  # an identity's images share its group
    return IdentityReference(
        evaluator,
        ids,
        templates,
        sums,
        counts,
        gallery,
        str(device),
        groups,
        example_images=reference_faces.images[first].clone(),
    )


def _embed_faces(evaluator: Evaluator, faces: Any, device: str | torch.device, batch_size: int = 256) -> torch.Tensor:
    """Evaluator embeddings of a `FaceSet` (uint8 images resized to the evaluator's resolution)."""
    from federated_core.models import embed

    r = evaluator.resolution
    x = faces.images
    if x.shape[-1] != r:
        x = F.interpolate(x.float() / 127.5 - 1, size=(r, r), mode="bilinear", align_corners=False).clamp(-1, 1)
    return embed(evaluator.model, x, batch_size=batch_size, device=device)


@dataclass
class EvaluatorCalibration:
    """The evaluator's thresholds at fixed false-accept rates, from real pairs (DESIGN §8).

    ``pairs``: how the pairs were formed (one probe image per identity against each identity's
    template of its other images: ``num_identities`` genuine, ``num_identities · (num_identities
    - 1)`` impostor pairs; they share probes and templates, so they are not independent).
    """

    identities: tuple[int, int] | None
    num_identities: int
    images_per_identity: int
    pairs: str
    thresholds: list[FarThreshold]

    def threshold(self, far: float) -> FarThreshold:
        for t in self.thresholds:
            if math.isclose(t.target_far, far):
                return t
        raise ValueError(f"far {far} was not calibrated (calibrated: {[t.target_far for t in self.thresholds]})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "identities": self.identities,
            "num_identities": self.num_identities,
            "images_per_identity": self.images_per_identity,
            "pairs": self.pairs,
            "thresholds": [t.to_dict() for t in self.thresholds],
        }


def calibrate_evaluator(
    evaluator: Evaluator,
    faces: Any,
    fars: Sequence[float] = (1e-3, 1e-2),
    device: str | torch.device = "cpu",
    identities: tuple[int, int] | None = None,
) -> EvaluatorCalibration:
    """Calibrate the evaluator's similarity threshold at each FAR in ``fars`` on real pairs.

    ``faces``: a `FaceSet` of identities the evaluator did not train on (its own held-out
    identities), the same number ``n >= 2`` of images each. The pairs mirror how reconstructions
    are scored (`IdentityReference.score`: one image against an identity template): each
    identity's first image is a probe, its template the normalised mean embedding of its other
    ``n - 1`` images; genuine = probe vs own template, impostor = probe vs every other identity's
    template, labelled "same_group" / "other_group" when the faces carry population groups.
    Thresholds: `attacks.metrics.threshold_at_far` (supported when impostors >= 10 / far).
    """
    labels = faces.labels.to(torch.int64)
    uniq, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if len(uniq) < 2 or int(counts.min()) < 2 or int(counts.min()) != int(counts.max()):
        raise ValueError(
            f"faces must hold >= 2 identities with the same number (>= 2) of images each, got {len(uniq)} identities "
            f"with {int(counts.min())}..{int(counts.max())} images"
        )
    emb = _embed_faces(evaluator, faces, device)
    order = torch.argsort(inverse, stable=True)
    per = int(counts[0])
    grouped = emb[order].view(len(uniq), per, -1)
    probes = grouped[:, 0]
    templates = F.normalize(grouped[:, 1:].sum(1), dim=1)
    sims = (probes @ templates.T).double().numpy()
    off = ~np.eye(len(uniq), dtype=bool)
    strata = None
    if faces.groups is not None:
        g = faces.groups.to(torch.int64)[order].view(len(uniq), per)[:, 0].numpy()
        strata = np.where((g[:, None] == g[None, :])[off], "same_group", "other_group")
    thresholds = [threshold_at_far(np.diag(sims), sims[off], far, strata) for far in fars]
    return EvaluatorCalibration(
        identities=identities,
        num_identities=len(uniq),
        images_per_identity=per,
        pairs=f"probe image vs template of the identity's other {per - 1} image(s); "
        f"{len(uniq)} genuine, {int(off.sum())} impostor pairs (all other identities)",
        thresholds=thresholds,
    )


# ------------------------------------------------------------------ agreement of two evaluators


def cohen_kappa(passed_a: np.ndarray, passed_b: np.ndarray) -> float:
    """Cohen's kappa of two pass/fail ratings of the same items, from their 2×2 table:
    ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and ``p_e = p_a p_b + (1 -
    p_a)(1 - p_b)`` the agreement expected from the pass rates alone. NaN when ``p_e = 1`` (both
    ratings constant and equal: no disagreement was possible, kappa is undefined)."""
    a, b = np.asarray(passed_a, dtype=bool), np.asarray(passed_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two non-empty ratings of the same items, got shapes {a.shape} and {b.shape}")
    p_o = float(np.mean(a == b))
    p_a, p_b = float(a.mean()), float(b.mean())
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
    return float("nan") if p_e >= 1.0 else (p_o - p_e) / (1 - p_e)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties: average ranks); NaN when either is constant."""
    from scipy.stats import spearmanr

    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


@dataclass
class PassAgreement:
    """Pass / fail of the same reconstructions under two evaluators at one FAR, each at its own
    calibrated threshold (`calibrate_evaluator`), and how often they agree.

    ``counts``: the 2×2 table ``both_pass`` / ``a_only`` / ``b_only`` / ``neither``; ``agreement``:
    the share of reconstructions both judge alike; ``kappa``: `cohen_kappa` (NaN: undefined).
    ``supported``: whether each threshold rests on enough impostor pairs (`FarThreshold`).
    """

    far: float
    thresholds: tuple[float, float]
    supported: tuple[bool, bool]
    passed: tuple[np.ndarray, np.ndarray]
    counts: dict[str, int]
    agreement: float
    kappa: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "far": self.far,
            "thresholds": list(self.thresholds),
            "supported": list(self.supported),
            "passed": [p.astype(bool).tolist() for p in self.passed],
            "success": [float(p.mean()) for p in self.passed],
            "counts": dict(self.counts),
            "agreement": self.agreement,
            "kappa": self.kappa,
        }


@dataclass
class EvaluatorAgreement:
    """Whether two evaluators tell the same story about the same reconstructions (DESIGN §8).

    ``identity_similarity``: each evaluator's ``[N]`` similarities to the true identity;
    ``spearman``: their rank correlation (NaN: one is constant); ``at_far``: `PassAgreement` per
    false-accept rate both evaluators were calibrated at. The reconstructions are the units; they
    need not be independent (several per identity), so no interval is given here.
    """

    evaluators: tuple[str, str]
    num_reconstructions: int
    identity_similarity: tuple[np.ndarray, np.ndarray]
    spearman: float
    at_far: dict[float, PassAgreement]

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluators": list(self.evaluators),
            "num_reconstructions": self.num_reconstructions,
            "identity_similarity": [s.tolist() for s in self.identity_similarity],
            "spearman": self.spearman,
            "at_far": [p.to_dict() for p in self.at_far.values()],
        }


def agreement_of_scores(
    similarity_a: np.ndarray,
    similarity_b: np.ndarray,
    calibration_a: EvaluatorCalibration,
    calibration_b: EvaluatorCalibration,
    evaluators: tuple[str, str] = ("a", "b"),
) -> EvaluatorAgreement:
    """`EvaluatorAgreement` of two evaluators' similarities of the same reconstructions to their
    true identities, each thresholded with its own calibration at every FAR both calibrated."""
    sa, sb = np.asarray(similarity_a, dtype=np.float64), np.asarray(similarity_b, dtype=np.float64)
    if sa.shape != sb.shape or sa.ndim != 1 or len(sa) == 0:
        raise ValueError(
            f"need two non-empty similarity arrays of the same reconstructions, got {sa.shape}, {sb.shape}"
        )
    if not (np.isfinite(sa).all() and np.isfinite(sb).all()):
        raise ValueError("similarities must be finite")
    fars_b = [t.target_far for t in calibration_b.thresholds]
    shared = [t.target_far for t in calibration_a.thresholds if any(math.isclose(t.target_far, f) for f in fars_b)]
    if not shared:
        raise ValueError(
            f"the calibrations share no FAR ({[t.target_far for t in calibration_a.thresholds]} vs {fars_b})"
        )
    at_far = {}
    for far in shared:
        ta, tb = calibration_a.threshold(far), calibration_b.threshold(far)
        pa, pb = sa >= ta.threshold, sb >= tb.threshold
        counts = {
            "both_pass": int((pa & pb).sum()),
            "a_only": int((pa & ~pb).sum()),
            "b_only": int((~pa & pb).sum()),
            "neither": int((~pa & ~pb).sum()),
        }
        at_far[far] = PassAgreement(
            far,
            (ta.threshold, tb.threshold),
            (ta.supported, tb.supported),
            (pa, pb),
            counts,
            float(np.mean(pa == pb)),
            cohen_kappa(pa, pb),
        )
    return EvaluatorAgreement(evaluators, len(sa), (sa, sb), _spearman(sa, sb), at_far)


def evaluator_agreement(
    a: IdentityReference,
    b: IdentityReference,
    reconstructions: torch.Tensor,
    observation_ids: Sequence[frozenset[int]],
) -> EvaluatorAgreement:
    """Score the same reconstructions ``[N, 3, R, R]`` (in ``[0, 1]``) against the identities each
    stands for under two evaluators' references (`build_reference`), each carrying the calibration
    of its own evaluator on its own held-out genuine / impostor pairs (`calibrate_evaluator`), and
    report per-reconstruction pass / fail at every shared FAR, agreement, Cohen's kappa and the
    Spearman correlation of the identity similarities (`agreement_of_scores`).

    Raises:
        ValueError: a reference without a calibration, or bad reconstructions / identity sets.
    """
    for name, ref in (("a", a), ("b", b)):
        if ref.calibration is None:
            raise ValueError(f"reference {name} carries no calibration: attach calibrate_evaluator(...) to it first")
    assert a.calibration is not None and b.calibration is not None  # for mypy: checked just above
    return agreement_of_scores(
        a.identity_similarity(reconstructions, observation_ids),
        b.identity_similarity(reconstructions, observation_ids),
        a.calibration,
        b.calibration,
        (a.evaluator.description, b.evaluator.description),
    )
