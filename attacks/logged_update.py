"""Gradient inversion of a client's *logged* backbone update: what the server can recover from
exactly what it received.

`attacks.gradient.run_gradient_probe` answers controlled "what if" questions (batch size, local
steps, DP-SGD) on updates it simulates itself, with the attacker granted the batch order and the
client's head. This module attacks the real thing: the difference ``Δ = θ_upload − θ_broadcast``
between a client's uploaded backbone and the broadcast it started from, read from the wire log
(`attacks.views.ObserverView.backbone_updates`), made of ``E·⌈|D_k|/B⌉`` shuffled SGD steps with
momentum and weight decay on all of the client's images.

What the server knows and does (stated in every result):

* the start model ``θ_0`` (it broadcast it), the protocol's local optimiser (learning rate, weight
  decay; from the run's configuration) and the client's sample count (``num_samples`` of the
  upload, used for FedAvg weighting); weight decay's known, data-independent direction ``θ_0`` is
  projected out of the observed update before matching (``decay_share`` records how much of the
  update it was);
* not the shuffle order, so the update is matched in direction only, as one SGD step on the
  dummy batch: ``Δ ∝ −(∇_θ L(x'; θ_0) + λ·θ_0)`` (the FedSGD approximation of a multi-step
  update; Inverting Gradients' cosine distance is scale-invariant, Geiping et al. 2020 Eq. 4);
* not the client's private class centers (FedPE-style methods never send them): the head is
  approximated by the normalised mean feature of the dummies of each class (FedFace's
  average-feature initialisation; a trained head sits near its classes' mean features), held
  constant within each step; center-like tensors the server itself broadcast to that client in
  that round (other parties' centers or clusters) are added as fixed negatives, as the client's
  loss uses them;
* the number of the client's identities is *granted* (``granted_classes``, read from the ground
  truth) and the dummies are spread evenly over them — more than a real server knows. With one
  identity the loss is the positive-only ``1 − cos(f, w)`` (FedFace / FedAwS), the worst case of
  the survey.

Every result is a lower bound on what an attacker with this knowledge can do (a longer budget,
more restarts, an image prior or a model of the shuffled steps can only add to it), not a bound
on what leaks.

**Epoch priors** (``epoch_prior``, off by default: ``"none"`` is the attack above, unchanged).
With ``"independent"``, ``"shared"`` or ``"dimitrov"`` the update is no longer matched as one
step: the client's ``E`` epochs of ``⌈N/B⌉`` shuffled steps (momentum from the protocol) are
unrolled on dummies of all ``N`` of its images, with the epochs' dummies untied, shared (later
epochs in a guessed order) or tied by Dimitrov et al.'s (2022) epoch order-invariant prior
(`attacks.multistep`). Weight decay stays a projected-out direction, flips are not modelled, the
order of every epoch is unknown to the attacker. ``N`` reconstructions come back (one per image;
per-epoch copies are matched and averaged), scored as above against all the client's images,
with the same null over clients.

The attack reconstructs ``dummies`` images (fewer than the client holds: each dummy can only be a
blend of the client's faces). Scores: PSNR / SSIM of each reconstruction against its *nearest*
real training image of the client (pixel leak), and, under the independent evaluator, identity
similarity to the client's best-matching identity and rank-1 match against the evaluator's
gallery (identity leak), each with the impostor baseline the evaluator provides, and
``rank1_chance``: the share of gallery images that belong to the client's identities (what a
random face would score).

**Null over clients.** The unit of this attack is the client update: the dummies of one
optimisation share its noise and are not independent trials, so no rate or interval is taken over
them. The same reconstructions are scored, the same way, against the real images (and identities)
of every client that was *not* attacked (`score_against_clients`); under the null hypothesis that
the reconstructions single out no client, the attacked one is exchangeable with the others, and
the exact permutation p-value over the ``K`` clients is ``#{k : T_k >= T_attacked} / K`` (ties
count against the attack; the smallest possible p is ``1/K``). ``T`` is the identity similarity
under the independent evaluator when there is one, otherwise the nearest-image PSNR.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.gradient import InvertingGradientsConfig, LocalSgd, ReconstructionOutput, inverting_gradients
from attacks.metrics import psnr, ssim
from attacks.multistep import EpochSchedule, check_epoch_prior, invert_fedavg_update
from attacks.views import backbone_from_state

__all__ = [
    "AGGREGATE",
    "ClientNull",
    "LoggedUpdateProbeConfig",
    "LoggedUpdateResult",
    "ProxyHeadModel",
    "group_identity_similarity",
    "invert_logged_update",
    "participants",
    "permutation_p_value",
    "pick_update",
    "score_against_clients",
    "score_against_groups",
]

HEAD_LOSSES = ("cosface", "softmax")
AGGREGATE = "aggregate"  # the attacked "client" when the server sees only the sum of the updates


class ProxyHeadModel(nn.Module):
    """``backbone(x)`` + a class-center head the attacker builds from the batch itself:
    ``w_c = normalise(mean_{i: y_i = c} f_i)`` with the features detached (constant for the
    derivative), plus fixed ``negatives``. Per-example CosFace / softmax losses (PrivacyFace
    Eq. 1–2, the margin loss of the methods' clients), or ``1 − cos(f, w_y)`` when there is one
    class and no negative (FedFace's positive-only loss). The engine's ``model(x, y) -> [B]``
    contract, so `attacks.gradient.unrolled_update` can differentiate it."""

    negatives: torch.Tensor | None  # a buffer (None when there are none)

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        loss: str = "cosface",
        scale: float = 64.0,
        margin: float = 0.35,
        negatives: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if loss not in HEAD_LOSSES:
            raise ValueError(f"loss must be one of {list(HEAD_LOSSES)}, got {loss!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.loss = loss
        self.scale, self.margin = float(scale), float(margin)
        neg = None if negatives is None or negatives.shape[0] == 0 else F.normalize(negatives.detach().float(), dim=1)
        self.register_buffer("negatives", neg)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = F.normalize(self.backbone(x), dim=1)
        fd = f.detach()
        centers = torch.zeros(self.num_classes, f.shape[1], dtype=f.dtype, device=f.device).index_add(0, y, fd)
        centers = F.normalize(centers, dim=1)
        if self.num_classes == 1 and self.negatives is None:
            return 1.0 - (f * centers[y]).sum(1)
        weights = centers if self.negatives is None else torch.cat([centers, self.negatives.to(f.dtype)])
        cos = f @ weights.T
        if self.loss == "cosface":
            onehot = (torch.arange(cos.shape[1], device=y.device) == y.unsqueeze(1)).to(cos.dtype)
            logits = self.scale * (cos - self.margin * onehot)
        else:
            logits = self.scale * cos
        return F.cross_entropy(logits, y, reduction="none")


@dataclass(frozen=True)
class LoggedUpdateProbeConfig:
    """Which logged update to invert, and the attack's budget.

    Attributes:
        client: the party whose upload is attacked (``"client:<id>"``), or ``"aggregate"``: the
            sum the server learns of round ``r``'s updates under secure aggregation, read as the
            difference of the models it broadcast in rounds ``r`` and ``r + 1`` (FedAvg's
            weighted mean of the participants' updates); the last round's aggregate is never
            broadcast and cannot be attacked from the wire.
        round: the round of the upload (an integer), or ``"first"`` / ``"last"`` of that client's
            (for the aggregate: the round whose updates it sums).
        dummies: images reconstructed (at most the client's sample count).
        loss, scale, margin: the attacker's model of the client's margin loss. The proxy centers
            are the dummies' own class means, a tighter fit than a trained head, so the default
            scale is tempered (16, not CosFace's 64): at 64 the proxy's softmax saturates and its
            gradient vanishes in float32, leaving nothing to match.
        iterations, restarts, attack_lr, tv_weight: Inverting Gradients (Geiping et al. 2020;
            breaching's recipe: TV 0.2, 4 restarts; ``iterations`` per restart).
        epoch_prior: how the client's local epochs are modelled (`attacks.multistep`):
            ``"none"`` (default: today's attack, the update matched as one step on ``dummies``
            images); ``"independent"`` (the ``E·⌈N/B⌉`` steps unrolled, one free copy of the
            ``N`` images per epoch, the ablation baseline); ``"shared"`` (one set of ``N``
            images re-used every epoch, later epochs shuffled by the attacker's seeded guess,
            one guess per restart); ``"dimitrov"`` (per-epoch copies tied by Dimitrov et al.'s
            epoch order-invariant prior). Any option but ``"none"`` reconstructs all ``N``
            images of the client and needs ``local_epochs`` and ``batch_size``.
        epoch_prior_weight: the weight λ of that prior (``"dimitrov"`` only; 0 = untied).
        seed, device, progress: as everywhere.
    """

    client: str
    round: int | str = "first"
    dummies: int = 8
    loss: str = "cosface"
    scale: float = 16.0
    margin: float = 0.35
    iterations: int = 100
    restarts: int = 4
    attack_lr: float = 0.1
    tv_weight: float = 0.2
    epoch_prior: str = "none"
    epoch_prior_weight: float = 1.0
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        from federated_core.engine.messages import is_party

        if self.client != AGGREGATE and (not is_party(self.client) or self.client == "server"):
            raise ValueError(f"client must be 'client:<id>' or {AGGREGATE!r}, got {self.client!r}")
        if self.client == AGGREGATE and self.epoch_prior != "none":
            raise ValueError(
                f"epoch_prior={self.epoch_prior!r} models one client's local schedule; the aggregate mixes "
                "several clients' schedules: use epoch_prior='none' (the one-step model) to attack it"
            )
        if not (
            self.round in ("first", "last")
            or (isinstance(self.round, int) and not isinstance(self.round, bool) and self.round >= 0)
        ):
            raise ValueError(f"round must be 'first', 'last' or an integer >= 0, got {self.round!r}")
        if isinstance(self.dummies, bool) or not isinstance(self.dummies, int) or self.dummies < 1:
            raise ValueError(f"dummies must be an integer >= 1, got {self.dummies!r}")
        if self.loss not in HEAD_LOSSES:
            raise ValueError(f"loss must be one of {list(HEAD_LOSSES)}, got {self.loss!r}")
        for name in ("scale", "margin"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        InvertingGradientsConfig(self.iterations, self.restarts, self.attack_lr, self.tv_weight)
        check_epoch_prior(self.epoch_prior, self.epoch_prior_weight)


@dataclass
class LoggedUpdateResult:
    """Scores of the inversion of one logged update (plain numbers and arrays). ``epochs``: with
    an epoch prior, the simulated schedule and the restarts' objectives (``epoch_*`` keys of the
    summary); None for the default one-step attack."""

    config: dict[str, Any]
    round: int
    base_round: int
    num_samples: int | None
    granted_classes: int
    local_steps_estimate: int | None
    negatives: int
    psnr: np.ndarray
    ssim: np.ndarray
    identity_similarity: np.ndarray | None
    impostor_identity_similarity: np.ndarray | None
    rank1: np.ndarray | None
    rank1_chance: float | None
    update_cosine: float
    decay_share: float
    loss_history: list[float]
    reconstructions: np.ndarray
    nearest_originals: np.ndarray
    seconds: float
    iterations: int
    evaluator: str | None
    threat_model: str
    notes: list[str] = field(default_factory=list)
    grid_path: str | None = None
    null: "ClientNull | None" = None
    epochs: dict[str, Any] | None = None
    participants: list[str] | None = None  # the aggregate's: the clients the round's broadcast went to

    def summary(self) -> dict[str, Any]:
        finite = self.psnr[np.isfinite(self.psnr)]
        imp = self.impostor_identity_similarity
        null = self.null.summary() if self.null is not None else ClientNull.empty(self.config["client"]).summary()
        if self.null is None and self.config["client"] == AGGREGATE:
            null["unit_name"] = GROUP_UNIT
        return {
            "attack": "inverting_gradients (logged update)",
            "client": self.config["client"],
            "participants": self.participants,
            "round": self.round,
            "num_images": int(self.psnr.shape[0]),
            "num_samples": self.num_samples,
            "granted_classes": self.granted_classes,
            "local_steps": self.local_steps_estimate,
            "negatives": self.negatives,
            "psnr": float(finite.mean()) if len(finite) else float("inf"),
            "ssim": float(self.ssim.mean()),
            "identity_similarity": None if self.identity_similarity is None else float(self.identity_similarity.mean()),
            "impostor_identity_similarity": None
            if imp is None or not np.isfinite(imp).any()
            else float(np.nanmean(imp)),
            "rank1": None if self.rank1 is None else float(self.rank1.mean()),
            "rank1_chance": self.rank1_chance,
            "identity_recovered": None if self.rank1 is None else bool(self.rank1.any()),
            "update_cosine": self.update_cosine,
            "decay_share": self.decay_share,
            "iterations": self.config["iterations"],
            "restarts": self.config["restarts"],
            "tv_weight": self.config["tv_weight"],
            **null,
            **({} if self.epochs is None else {f"epoch_{k}": v for k, v in self.epochs.items()}),
        }


@dataclass
class ClientNull:
    """The same reconstructions scored against every client's real images: the attacked one and
    those that were not attacked (`score_against_clients`).

    Attributes:
        attacked: the attacked client (or the group of an aggregate's participants).
        scores: per client (attacked included), the per-update scores: ``psnr`` / ``ssim`` (mean
            over the dummies of the nearest real image of that client), and under the evaluator
            ``identity_similarity`` (mean over dummies of the best cosine to that client's
            identities) and ``rank1`` (share of dummies whose nearest gallery image is one of
            that client's identities); None where there is no evaluator.
        statistic: the score the permutation test ranks (``identity_similarity`` or ``psnr``).
        permutation_p: exact permutation p-value over the clients on ``statistic``;
            ``permutation_p_psnr`` the same on ``psnr``. None with a single client.
    """

    attacked: str
    scores: dict[str, dict[str, float | None]]
    statistic: str | None
    permutation_p: float | None
    permutation_p_psnr: float | None
    unit_name: str = "client (one update each; the dummies of one update are not independent trials)"

    @classmethod
    def empty(cls, attacked: str) -> "ClientNull":
        """No null: the attacked update alone (one unit), nothing to compare it with."""
        return cls(attacked, {}, None, None, None)

    @property
    def units(self) -> int:
        return len(self.scores)

    def attacked_rank(self) -> int | None:
        """Rank of the attacked client among all clients on ``statistic`` (1 = highest; ties
        counted against the attack)."""
        if self.statistic is None or self.attacked not in self.scores:
            return None
        statistic = self.statistic
        t = self.scores[self.attacked][statistic]
        if t is None:
            return None
        values = [v[statistic] for v in self.scores.values()]
        return sum(1 for x in values if x is not None and x >= t)

    def summary(self) -> dict[str, Any]:
        others = [v for k, v in self.scores.items() if k != self.attacked]

        def mean(metric: str) -> float | None:
            vals = [x for x in (v.get(metric) for v in others) if x is not None]
            return float(np.mean(vals)) if vals else None

        return {
            "units": max(1, self.units),  # without a null: the attacked update alone
            "unit_name": self.unit_name,
            "null_clients": len(others),
            "null_psnr": mean("psnr"),
            "null_ssim": mean("ssim"),
            "null_identity_similarity": mean("identity_similarity"),
            "null_rank1": mean("rank1"),
            "permutation_statistic": self.statistic,
            "permutation_p": self.permutation_p,
            "permutation_p_psnr": self.permutation_p_psnr,
            "attacked_rank": self.attacked_rank(),
            "null_by_client": {k: dict(v) for k, v in self.scores.items() if k != self.attacked},
        }


def permutation_p_value(statistics: Mapping[str, float], attacked: str) -> float:
    """Exact permutation p-value over clients: ``#{k : T_k >= T_attacked} / K``.

    Under the null hypothesis that the reconstructions carry nothing that singles out the
    attacked client, which of the ``K`` clients was attacked is a uniform draw, so the attacked
    client's statistic is at least as large as ``j`` of the ``K`` with probability ``j/K``. The
    attacked client counts itself (``p >= 1/K``); ties count against the attack.
    """
    if attacked not in statistics:
        raise ValueError(f"the attacked client {attacked!r} has no statistic (clients: {sorted(statistics)})")
    values = {k: float(v) for k, v in statistics.items()}
    if any(math.isnan(v) for v in values.values()):
        raise ValueError(f"statistics must not be NaN, got {values}")
    t = values[attacked]
    return sum(1 for v in values.values() if v >= t) / len(values)


def _unit_images(faces: Any, resolution: int) -> torch.Tensor:
    """A FaceSet's images at ``resolution``, in ``[0, 1]``."""
    real = faces.as_float()
    if real.shape[-1] != resolution:
        real = F.interpolate(real, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return ((real.clamp(-1, 1) + 1) / 2).cpu()


def _nearest(rec: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per reconstruction: PSNR and SSIM to its nearest (highest-PSNR) real image, and its index."""
    pair_psnr = torch.stack([psnr(rec[i : i + 1].expand_as(real), real) for i in range(len(rec))])
    nearest = pair_psnr.argmax(1)
    return pair_psnr.max(1).values, ssim(rec, real[nearest]), nearest


def score_against_clients(
    reconstructions: torch.Tensor,
    attacked: str,
    faces: Mapping[str, Any],
    identities: Mapping[str, Sequence[int]] | None = None,
    reference: Any | None = None,
) -> ClientNull:
    """Score ``reconstructions`` (``[N, 3, R, R]`` in ``[0, 1]``, the dummies of one update)
    against every client's real images ``faces`` (client -> `FaceSet`, the attacked one
    included) the same way, and rank the attacked client among them (`permutation_p_value`).

    With ``reference`` (an `attacks.evaluator.IdentityReference`) and ``identities`` (client ->
    its identity ids), identity similarity and rank-1 are scored too and are the permutation
    statistic; otherwise the nearest-image PSNR is."""
    if attacked not in faces:
        raise ValueError(f"the attacked client {attacked!r} is not among the scored clients {sorted(faces)}")
    if reconstructions.dim() != 4 or reconstructions.shape[1] != 3:
        raise ValueError(f"reconstructions must be [N, 3, R, R], got shape {tuple(reconstructions.shape)}")
    rec = reconstructions.detach().float().cpu()
    with_ids = reference is not None and identities is not None
    scores: dict[str, dict[str, float | None]] = {}
    for client in sorted(faces):
        row = _pixel_row(rec, faces[client], f"client {client!r}")
        if with_ids:
            assert identities is not None and reference is not None
            ids = [int(i) for i in identities.get(client, [])]
            if not ids:
                raise ValueError(f"client {client!r} has no identities to score against")
            sc = reference.score(rec, [frozenset(ids)] * len(rec))
            row["identity_similarity"] = float(np.mean(sc.identity_similarity))
            row["rank1"] = float(np.mean(sc.rank1))
        scores[client] = row
    return _ranked(attacked, scores, "identity_similarity" if with_ids else "psnr")


def _pixel_row(rec: torch.Tensor, faces: Any, who: str) -> dict[str, float | None]:
    """One unit's scores of ``rec`` (``[0, 1]``): mean nearest-image PSNR / SSIM against ``faces``;
    identity similarity and rank-1 left for the caller (None)."""
    if len(faces) == 0:
        raise ValueError(f"{who} has no images to score against")
    best_psnr, best_ssim, _ = _nearest(rec, _unit_images(faces, rec.shape[-1]))
    return {
        "psnr": float(best_psnr.double().mean()),
        "ssim": float(best_ssim.double().mean()),
        "identity_similarity": None,
        "rank1": None,
    }


def _ranked(
    attacked: str, scores: dict[str, dict[str, float | None]], statistic: str, unit_name: str | None = None
) -> ClientNull:
    """The `ClientNull` of ``scores``: the exact permutation p of ``attacked`` on ``statistic`` and on PSNR."""
    p = p_psnr = None
    if len(scores) > 1:
        p = permutation_p_value({k: cast(float, v[statistic]) for k, v in scores.items()}, attacked)
        p_psnr = permutation_p_value({k: cast(float, v["psnr"]) for k, v in scores.items()}, attacked)
    if unit_name is None:
        return ClientNull(attacked, scores, statistic, p, p_psnr)
    return ClientNull(attacked, scores, statistic, p, p_psnr, unit_name)


GROUP_UNIT = (
    "group of identities (the aggregate's participants, or as many non-member identities with as many images "
    "each); the dummies of one aggregate are not independent trials"
)


def group_identity_similarity(
    rec_embeddings: torch.Tensor, faces: Any, embed: Callable[[torch.Tensor], torch.Tensor]
) -> np.ndarray:
    """Per reconstruction (normalised evaluator embeddings ``[N, d]``), the best cosine to the
    templates of ``faces``' identities, each the normalised mean evaluator embedding of that
    identity's images in ``faces``."""
    emb = F.normalize(embed((faces.as_float() + 1) / 2).float(), dim=1)
    ids = faces.labels
    templates = torch.stack([F.normalize(emb[ids == i].mean(0), dim=0) for i in torch.unique(ids)])
    return (rec_embeddings @ templates.T).max(1).values.double().numpy()


def score_against_groups(
    reconstructions: torch.Tensor,
    attacked: str,
    faces: Mapping[str, Any],
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ClientNull:
    """Score ``reconstructions`` (``[N, 3, R, R]`` in ``[0, 1]``) the same way against every group
    of ``faces`` (group -> `FaceSet`) and rank the ``attacked`` group among them
    (`permutation_p_value`): the participants of an aggregate against groups of non-member
    identities of the same size, images per identity and source, which stand for the null (the
    reconstructions single out nobody who took part).

    Per group: the nearest-image PSNR / SSIM of `score_against_clients` and, with ``embed`` (the
    independent evaluator's embedding of images in ``[0, 1]``), the identity similarity: the mean
    over reconstructions of the best cosine to the group's identity templates, each built from
    that identity's images *in the group's set* — the same recipe for every group, so the groups
    are exchangeable under the null (the evaluator's gallery, which holds members only, is not
    used; rank-1 is not scored). ``identity_similarity`` is then the permutation statistic,
    otherwise ``psnr``."""
    if attacked not in faces:
        raise ValueError(f"the attacked group {attacked!r} is not among the scored groups {sorted(faces)}")
    if reconstructions.dim() != 4 or reconstructions.shape[1] != 3:
        raise ValueError(f"reconstructions must be [N, 3, R, R], got shape {tuple(reconstructions.shape)}")
    rec = reconstructions.detach().float().cpu()
    rec_emb = None if embed is None else F.normalize(embed(rec).float(), dim=1)
    scores: dict[str, dict[str, float | None]] = {}
    for group in sorted(faces):
        row = _pixel_row(rec, faces[group], f"group {group!r}")
        if rec_emb is not None and embed is not None:
            row["identity_similarity"] = float(group_identity_similarity(rec_emb, faces[group], embed).mean())
        scores[group] = row
    return _ranked(attacked, scores, "identity_similarity" if embed is not None else "psnr", GROUP_UNIT)


def pick_update(view: Any, config: LoggedUpdateProbeConfig) -> Any:
    """The `attacks.views.BackboneUpdate` that ``config`` names in ``view``: ``config.client``'s
    upload of ``config.round``, or for the aggregate the difference of the broadcasts of that
    round and the next (its ``base_round`` is the round whose updates it sums)."""
    from federated_core.engine.messages import SERVER

    aggregate = config.client == AGGREGATE
    sender = SERVER if aggregate else config.client
    ups = [u for u in view.backbone_updates(required=False) if u.sender == sender]
    if not ups:
        raise ValueError(
            f"observer {view.party!r} saw no two consecutive broadcasts: no aggregate update to attack (round r's "
            "aggregate is the model broadcast in round r+1; the last round's is never broadcast)"
            if aggregate
            else f"observer {view.party!r} observed no backbone update sent by {config.client!r} "
            "(only the server observes a single client's upload)"
        )

    def of(u: Any) -> int:
        return u.base_round if aggregate else u.round

    if config.round == "first":
        return min(ups, key=of)
    if config.round == "last":
        return max(ups, key=of)
    found = [u for u in ups if of(u) == config.round]
    if not found:
        what = "the server broadcast no aggregate of" if aggregate else f"{config.client!r} sent no backbone update in"
        raise ValueError(f"{what} round {config.round}; its updates are from rounds {sorted(of(u) for u in ups)}")
    return found[0]


def _broadcast(view: Any, update: Any) -> Any:
    """The broadcast ``update`` started from (for the aggregate: round ``base_round``'s, to anyone)."""
    from federated_core.engine.messages import SERVER

    for m in view.messages:
        if (
            m.kind == "backbone"
            and m.sender == SERVER
            and m.round == update.base_round
            and (update.sender in m.receivers or update.sender == SERVER)
        ):
            return m
    raise ValueError(f"the broadcast of round {update.base_round} to {update.sender!r} is not in the view")


def participants(view: Any, update: Any) -> list[str]:
    """The clients the server sent the broadcast an aggregate ``update`` starts from (what the
    server knows of who contributed to it), sorted by client id."""
    from federated_core.engine.messages import SERVER, client_id_of

    found = {
        r
        for m in view.messages
        if m.kind == "backbone" and m.sender == SERVER and m.round == update.base_round
        for r in m.receivers
        if r != SERVER
    }
    return sorted(found, key=client_id_of)


def _negatives(view: Any, update: Any, dim: int) -> torch.Tensor | None:
    """Center-like tensors the server sent to the client in the update's round (known to it);
    None for an aggregate (several clients' losses, each with its own negatives)."""
    from attacks.views import CENTER_KINDS
    from federated_core.engine.messages import SERVER

    if update.sender == SERVER:
        return None
    rows = []
    for m in view.messages:
        if m.sender == SERVER and m.kind in CENTER_KINDS and m.round == update.round and update.sender in m.receivers:
            for t in m.tensors.values():
                if t.dim() == 2 and t.shape[1] == dim and t.is_floating_point():
                    rows.append(t.float())
    return torch.cat(rows) if rows else None


def _project_out(
    update: dict[str, torch.Tensor], theta: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], float]:
    """Remove the component of ``update`` along ``θ_0`` (all parameters as one vector): weight
    decay adds ``−lr·λ·θ`` at every step, a data-independent direction the attacker knows and
    that would otherwise dominate a saturated margin loss's small gradient. Returns the projected
    update and the squared cosine of the removed share (how much of the update was decay-like)."""
    dot = sum(float((update[n].double() * theta[n].double()).sum()) for n in update)
    tt = sum(float(theta[n].double().pow(2).sum()) for n in update)
    uu = sum(float(update[n].double().pow(2).sum()) for n in update)
    if tt == 0 or uu == 0:
        return update, 0.0
    c = dot / tt
    return {n: (update[n].double() - c * theta[n].double()).float() for n in update}, dot * dot / (tt * uu)


def _check_logged_inputs(
    config: LoggedUpdateProbeConfig, client_faces: Any, granted_classes: int, local_lr: float, weight_decay: float
) -> None:
    """Reject an invalid granted identity count, protocol setting or an empty scoring set."""
    if isinstance(granted_classes, bool) or not isinstance(granted_classes, int) or granted_classes < 1:
        raise ValueError(f"granted_classes must be an integer >= 1, got {granted_classes!r}")
    if not (local_lr > 0 and math.isfinite(local_lr)):
        raise ValueError(f"local_lr must be a finite number > 0, got {local_lr}")
    if weight_decay < 0 or not math.isfinite(weight_decay):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    if len(client_faces) == 0:
        raise ValueError(f"no training images of {config.client!r} to score against")


@dataclass
class _LoggedTarget:
    """The attacked upload, the broadcast it started from and the update the attacker matches."""

    update: Any
    base: Any
    backbone: nn.Module
    start: dict[str, torch.Tensor]
    observed: dict[str, torch.Tensor]
    decay_share: float


def _logged_target(view: Any, config: LoggedUpdateProbeConfig, weight_decay: float) -> _LoggedTarget:
    """Read the upload and its broadcast from ``view``; with weight decay, project ``θ_0`` out."""
    update = pick_update(view, config)
    base = _broadcast(view, update)
    backbone = backbone_from_state(base.tensors, base.meta.get("spec") or {}).train()
    names = {n for n, _ in backbone.named_parameters()}
    missing = sorted(names - set(update.delta))
    if missing:
        raise ValueError(
            f"the logged update of {config.client!r} (round {update.round}) lacks parameters {missing[:3]}"
        )
    observed = {f"backbone.{n}": update.delta[n].float() for n in sorted(names)}
    start = {f"backbone.{n}": p.detach().clone().float() for n, p in backbone.named_parameters()}
    if not any(float(t.abs().max()) > 0 for t in observed.values()):
        raise ValueError(f"the logged update of {config.client!r} in round {update.round} is zero: nothing to invert")
    decay_share = 0.0
    if weight_decay > 0:
        observed, decay_share = _project_out(observed, start)
    return _LoggedTarget(update, base, backbone, start, observed, decay_share)


def _embedding_dim(backbone: nn.Module, base: Any) -> int:
    """The backbone's embedding size: its ``embedding_dim``, else the width of one forward pass."""
    return int(getattr(backbone, "embedding_dim", 0)) or int(
        backbone(torch.zeros(1, 3, base.meta["spec"]["resolution"], base.meta["spec"]["resolution"])).shape[1]
    )


def _dummy_counts(
    config: LoggedUpdateProbeConfig, n_samples: int | None, granted_classes: int, notes: list[str]
) -> tuple[int, int]:
    """Dummies (at most the client's sample count) and the identities they cover, noting any cut."""
    dummies = config.dummies if n_samples is None else min(config.dummies, n_samples)
    if dummies < config.dummies:
        notes.append(f"{dummies} dummies: the client holds only {n_samples} images")
    classes = min(granted_classes, dummies)
    if classes < granted_classes:
        notes.append(f"{dummies} dummies cover {classes} of the {granted_classes} granted identities")
    return dummies, classes


def _invert_target(
    target: _LoggedTarget,
    config: LoggedUpdateProbeConfig,
    dummies: int,
    classes: int,
    negatives: torch.Tensor | None,
    local_lr: float,
    device: torch.device,
) -> tuple[ReconstructionOutput, int]:
    """Inverting Gradients on the proxy-head model, matching the update as one SGD step (Geiping
    et al. 2020 Eq. 4). Returns the reconstruction output and the image resolution."""
    model = ProxyHeadModel(target.backbone, classes, config.loss, config.scale, config.margin, negatives).to(device)
    labels = torch.arange(dummies) % classes
    resolution = int(target.base.meta["spec"]["resolution"])
    sgd = LocalSgd(steps=1, batch_size=dummies, lr=float(local_lr))
    out = inverting_gradients(
        model,
        target.start,
        target.observed,
        labels,
        (dummies, 3, resolution, resolution),
        sgd,
        InvertingGradientsConfig(
            config.iterations,
            config.restarts,
            config.attack_lr,
            config.tv_weight,
            seed=config.seed,
            progress=config.progress,
        ),
        device=device,
    )
    return out, resolution


@dataclass
class _Inversion:
    """What either attack hands to the scoring: images in ``[-1, 1]``, the kept restart's loss
    history, ``update_cosine``, cost, the image resolution and (epoch priors only) the record of
    the simulated schedule."""

    images: torch.Tensor
    losses: list[float]
    update_cosine: float
    seconds: float
    iterations: int
    resolution: int
    epochs: dict[str, Any] | None = None


def _invert_one_step(
    target: _LoggedTarget,
    config: LoggedUpdateProbeConfig,
    n_samples: int | None,
    granted_classes: int,
    negatives: torch.Tensor | None,
    local_lr: float,
    device: torch.device,
    notes: list[str],
) -> _Inversion:
    """Today's attack (``epoch_prior="none"``): ``dummies`` images, the update matched as one step."""
    dummies, classes = _dummy_counts(config, n_samples, granted_classes, notes)
    out, resolution = _invert_target(target, config, dummies, classes, negatives, local_lr, device)
    update_cos = 1.0 - out.restart_losses[int(np.argmin(out.restart_losses))]
    return _Inversion(out.images, out.losses, float(update_cos), out.seconds, out.iterations, resolution)


def _epoch_schedule(
    config: LoggedUpdateProbeConfig,
    n_samples: int | None,
    local_lr: float,
    momentum: float,
    local_epochs: int | None,
    batch_size: int | None,
) -> EpochSchedule:
    """The client's local schedule for an epoch prior; ValueError naming what is missing."""
    known = {"local_epochs": local_epochs, "batch_size": batch_size, "the upload's num_samples": n_samples}
    missing = [name for name, v in known.items() if not v]
    if missing:
        raise ValueError(f"epoch_prior={config.epoch_prior!r} needs {', '.join(missing)} (the client's local schedule)")
    assert n_samples and local_epochs and batch_size
    return EpochSchedule(int(n_samples), int(local_epochs), int(batch_size), float(local_lr), float(momentum))


def _invert_epochs(
    target: _LoggedTarget,
    config: LoggedUpdateProbeConfig,
    schedule: EpochSchedule,
    granted_classes: int,
    negatives: torch.Tensor | None,
    device: torch.device,
    notes: list[str],
) -> _Inversion:
    """An epoch prior (`attacks.multistep.invert_fedavg_update`) on the proxy-head model: all
    ``N`` images of the client, its ``E·⌈N/B⌉`` steps unrolled."""
    n = schedule.images
    classes = min(granted_classes, n)
    if config.dummies != n:
        notes.append(
            f"epoch prior {config.epoch_prior!r}: all {n} images of the client are reconstructed "
            f"(dummies={config.dummies} not used)"
        )
    if classes < granted_classes:
        notes.append(f"{n} dummies cover {classes} of the {granted_classes} granted identities")
    model = ProxyHeadModel(target.backbone, classes, config.loss, config.scale, config.margin, negatives).to(device)
    resolution = int(target.base.meta["spec"]["resolution"])
    ig = InvertingGradientsConfig(
        config.iterations,
        config.restarts,
        config.attack_lr,
        config.tv_weight,
        seed=config.seed,
        progress=config.progress,
    )
    out = invert_fedavg_update(
        model,
        target.start,
        target.observed,
        torch.arange(n) % classes,
        (n, 3, resolution, resolution),
        schedule,
        ig,
        config.epoch_prior,
        config.epoch_prior_weight,
        device,
    )
    record = {
        "prior": config.epoch_prior,
        "prior_weight": float(config.epoch_prior_weight) if config.epoch_prior == "dimitrov" else None,
        "epochs": schedule.epochs,
        "batch_size": schedule.batch_size,
        "momentum": schedule.momentum,
        "steps": schedule.steps,
        "restart_losses": [float(v) for v in out.restart_losses],
        "kept_restart": out.best,
    }
    update_cos = 1.0 - out.restart_matching[out.best]
    return _Inversion(out.images, out.losses, float(update_cos), out.seconds, out.iterations, resolution, record)


@dataclass
class _IdentityScores:
    """Identity scores of the reconstructions under the independent evaluator (None without one)."""

    similarity: np.ndarray | None = None
    impostor_similarity: np.ndarray | None = None
    rank1: np.ndarray | None = None
    rank1_chance: float | None = None
    evaluator: str | None = None


def _identity_scores(
    rec: torch.Tensor, reference: Any | None, client_identities: Sequence[int] | None
) -> _IdentityScores:
    """Identity similarity and rank-1 to the client's identities, and the rank-1 chance level."""
    if reference is None:
        return _IdentityScores()
    if not client_identities:
        raise ValueError("client_identities are needed to score identities with the reference")
    truth = [frozenset(int(i) for i in client_identities)] * len(rec)
    sc = reference.score(rec, truth)
    gallery_ids = torch.as_tensor(reference.gallery.identity_ids)
    rank1_chance = float(torch.isin(gallery_ids, torch.tensor(list(client_identities))).double().mean())
    return _IdentityScores(
        sc.identity_similarity, sc.impostor_identity_similarity, sc.rank1, rank1_chance, sc.evaluator
    )


def _null_over_clients(
    rec: torch.Tensor,
    config: LoggedUpdateProbeConfig,
    client_faces: Any,
    client_identities: Sequence[int] | None,
    reference: Any | None,
    null_faces: Mapping[str, Any] | None,
    null_identities: Mapping[str, Sequence[int]] | None,
    notes: list[str],
) -> ClientNull | None:
    """The reconstructions scored against the clients not attacked (`score_against_clients`), or
    for the aggregate against groups of non-member identities (`score_against_groups`)."""
    if not null_faces:
        return None
    if config.client == AGGREGATE:
        embed = None if reference is None else reference.embed
        null = score_against_groups(rec, AGGREGATE, {**null_faces, AGGREGATE: client_faces}, embed)
        notes.append(
            f"null over groups: the same {len(rec)} reconstructions scored against {null.units - 1} groups of "
            f"non-member identities, each as many identities with as many images as the participants; exact "
            f"permutation p over {null.units} groups (smallest possible {1 / null.units:.3g}) on "
            f"{null.statistic} (identity templates from each group's own images)"
        )
        return null
    if config.client in null_faces:
        raise ValueError(f"null_faces must hold clients that were not attacked; it holds {config.client!r}")
    ids_by_client = None
    if reference is not None and client_identities:
        ids_by_client = {**(null_identities or {}), config.client: list(client_identities)}
        lacking = sorted(set(null_faces) - set(ids_by_client))
        if lacking:
            raise ValueError(f"null_identities lacks clients {lacking[:3]} (needed to score identities)")
    null = score_against_clients(
        rec, config.client, {**null_faces, config.client: client_faces}, ids_by_client, reference
    )
    notes.append(
        f"null over clients: the same {len(rec)} reconstructions scored against the {null.units - 1} clients "
        f"that were not attacked; exact permutation p over {null.units} clients (smallest possible "
        f"{1 / null.units:.3g}); rank-1 and identity similarity are per update (dummies are not independent)"
    )
    return null


def _local_steps_estimate(n_samples: int | None, local_epochs: int | None, batch_size: int | None) -> int | None:
    """``E·⌈|D_k|/B⌉``, the client's number of local steps, when all three are known."""
    if n_samples and local_epochs and batch_size:
        return int(local_epochs) * math.ceil(n_samples / int(batch_size))
    return None


_EPOCH_MODELS = {
    "independent": "one free copy of the images per epoch (untied)",
    "shared": "one set of images re-used every epoch, later epochs in the attacker's seeded guess of the order "
    "(one guess per restart)",
    "dimitrov": "per-epoch copies tied by Dimitrov et al.'s epoch order-invariant prior (weight {w:g})",
}


def _order_model(config: LoggedUpdateProbeConfig, epochs: dict[str, Any] | None) -> str:
    """How the threat model states the client's unseen batch order."""
    if epochs is None:
        return "batch order (update matched in direction as one step: FedSGD approximation)"
    how = _EPOCH_MODELS[config.epoch_prior].format(w=config.epoch_prior_weight)
    return (
        f"batch order (its {epochs['epochs']} epoch(s) x {epochs['steps'] // epochs['epochs']} step(s) of batch "
        f"{epochs['batch_size']} unrolled with momentum {epochs['momentum']:g}, weight decay as its θ_0 direction "
        f"only, flips not modelled; {how})"
    )


def _logged_threat_model(
    config: LoggedUpdateProbeConfig,
    granted_classes: int,
    negatives: torch.Tensor | None,
    epochs: dict[str, Any] | None = None,
) -> str:
    """The threat model stated in the result."""
    if config.client == AGGREGATE:
        return (
            "secure aggregation's view: the server sees no client's update, only the aggregate (the difference of "
            "the models it broadcast in consecutive rounds: FedAvg's weighted mean of the participants' updates), "
            "matched in direction as one SGD step on the union of their data ("
            + _order_model(config, epochs)
            + "); it knows θ_0, lr and weight decay (its θ_0 direction projected out); the participants' total "
            f"image count and identity count ({granted_classes}) are granted; the head is approximated by the "
            "dummies' mean features; Inverting Gradients with "
            f"{config.iterations} iterations x {config.restarts} restart(s), TV {config.tv_weight:g}: a lower "
            "bound on what an attacker with this knowledge can do"
        )
    return (
        "logged update from the wire log; the server knows θ_0, lr and weight decay (its θ_0 direction projected out), "
        "the sample count; not the " + _order_model(config, epochs) + ", not the client's class "
        "centers (head approximated by the dummies' mean features"
        + (f", plus {negatives.shape[0]} centers it broadcast as negatives" if negatives is not None else "")
        + f"); the identity count ({granted_classes}) is granted (a real server does not know it); "
        f"Inverting Gradients with {config.iterations} iterations x {config.restarts} restart(s), "
        f"TV {config.tv_weight:g}: a lower bound on what an attacker with this knowledge can do"
    )


def _uint8(images: torch.Tensor) -> np.ndarray:
    """Images in ``[0, 1]`` as uint8 arrays."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def invert_logged_update(
    view: Any,
    config: LoggedUpdateProbeConfig,
    client_faces: Any,
    granted_classes: int,
    local_lr: float,
    weight_decay: float = 0.0,
    local_epochs: int | None = None,
    batch_size: int | None = None,
    reference: Any | None = None,
    client_identities: Sequence[int] | None = None,
    null_faces: Mapping[str, Any] | None = None,
    null_identities: Mapping[str, Sequence[int]] | None = None,
    momentum: float = 0.0,
    num_samples: int | None = None,
) -> LoggedUpdateResult:
    """Invert ``config.client``'s logged backbone update seen by ``view`` (the server's), or with
    ``config.client == "aggregate"`` the aggregate of a round's updates (secure aggregation's view).

    ``client_faces`` (the client's real training images) and ``client_identities`` are ground
    truth, used only to score; ``granted_classes`` is the identity count granted to the attacker;
    ``local_lr`` / ``weight_decay`` come from the protocol (the run's configuration);
    ``local_epochs`` / ``batch_size`` estimate the number of local steps for the record and,
    with ``config.epoch_prior`` other than ``"none"``, are the schedule the attack simulates,
    with the protocol's SGD ``momentum`` (unused by the default one-step attack).
    ``reference`` (an `attacks.evaluator.IdentityReference`) adds the identity scores.
    ``null_faces`` / ``null_identities`` (client -> real images / identity ids of clients that
    were *not* attacked; ground truth, scoring only) add the null over clients
    (`score_against_clients`): the same reconstructions scored against them, and the exact
    permutation p-value of the attacked client among all of them.

    For the aggregate, ``client_faces`` / ``client_identities`` are the participants' (all their
    images and identities), ``num_samples`` their total image count (granted: an upload's own
    count is used where it carries one), and ``null_faces`` maps groups of non-member identities
    to their images (`score_against_groups`; ``null_identities`` is not used). Its identity
    similarity follows that null's recipe (templates from the participants' own images, no
    gallery: no rank-1), so that the row and its null compare like with like.
    """
    _check_logged_inputs(config, client_faces, granted_classes, local_lr, weight_decay)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    device = torch.device(config.device)
    target = _logged_target(view, config, weight_decay)
    update = target.update
    notes: list[str] = []
    negatives = _negatives(view, update, _embedding_dim(target.backbone, target.base))
    n_samples = update.num_samples if update.num_samples is not None else num_samples
    aggregate = config.client == AGGREGATE
    if aggregate:
        notes.append(
            f"aggregate of round {update.base_round}'s updates: the broadcast of round {update.round} minus "
            f"that of round {update.base_round}"
        )
        notes.append(
            "no oracle row: nothing here is this attacker's ceiling on the aggregate; the simulated probes "
            "(exact model of a one-image update, labels granted) bound what the attack finds when its model is exact"
        )
    if config.epoch_prior == "none":
        out = _invert_one_step(target, config, n_samples, granted_classes, negatives, local_lr, device, notes)
    else:
        schedule = _epoch_schedule(config, n_samples, local_lr, momentum, local_epochs, batch_size)
        out = _invert_epochs(target, config, schedule, granted_classes, negatives, device, notes)
    rec = (out.images.cpu() + 1) / 2
    real = _unit_images(client_faces, out.resolution)
    best_psnr, best_ssim, nearest = _nearest(rec, real)
    if aggregate and reference is not None:  # the recipe of its null over groups, comparable with it
        rec_emb = F.normalize(reference.embed(rec).float(), dim=1)
        similarity = group_identity_similarity(rec_emb, client_faces, reference.embed)
        ids = _IdentityScores(similarity=similarity, evaluator=reference.evaluator.description)
    else:
        ids = _identity_scores(rec, reference, client_identities)
    null = _null_over_clients(
        rec, config, client_faces, client_identities, reference, null_faces, null_identities, notes
    )
    return LoggedUpdateResult(
        config=asdict(config),
        round=update.base_round if aggregate else update.round,
        base_round=update.base_round,
        num_samples=n_samples,
        granted_classes=granted_classes,
        # an aggregate mixes its participants' schedules (each its own step count): none is stated
        local_steps_estimate=None if aggregate else _local_steps_estimate(n_samples, local_epochs, batch_size),
        negatives=0 if negatives is None else int(negatives.shape[0]),
        psnr=best_psnr.numpy(),
        ssim=best_ssim.numpy(),
        identity_similarity=ids.similarity,
        impostor_identity_similarity=ids.impostor_similarity,
        rank1=ids.rank1,
        rank1_chance=ids.rank1_chance,
        update_cosine=out.update_cosine,
        decay_share=target.decay_share,
        loss_history=out.losses,
        reconstructions=_uint8(rec),
        nearest_originals=_uint8(real[nearest]),
        seconds=out.seconds,
        iterations=out.iterations,
        evaluator=ids.evaluator,
        threat_model=_logged_threat_model(config, granted_classes, negatives, out.epochs),
        notes=notes,
        null=null,
        epochs=out.epochs,
    )
