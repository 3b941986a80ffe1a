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
  truth) and the dummies are spread evenly over them — more than a real server knows, so the
  result bounds this attacker from above. With one identity the loss is the positive-only
  ``1 − cos(f, w)`` (FedFace / FedAwS), the worst case of the survey.

The attack reconstructs ``dummies`` images (fewer than the client holds: each dummy can only be a
blend of the client's faces). Scores: PSNR / SSIM of each reconstruction against its *nearest*
real training image of the client (pixel leak), and, under the independent evaluator, identity
similarity to the client's best-matching identity and rank-1 match against the evaluator's
gallery (identity leak), each with the impostor baseline the evaluator provides, and
``rank1_chance``: the share of gallery images that belong to the client's identities (what a
random face would score).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.gradient import InvertingGradientsConfig, LocalSgd, inverting_gradients
from attacks.metrics import psnr, ssim
from attacks.views import backbone_from_state

__all__ = ["LoggedUpdateProbeConfig", "LoggedUpdateResult", "ProxyHeadModel", "invert_logged_update"]

HEAD_LOSSES = ("cosface", "softmax")


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
        client: the party whose upload is attacked (``"client:<id>"``).
        round: the round of the upload (an integer), or ``"first"`` / ``"last"`` of that client's.
        dummies: images reconstructed (at most the client's sample count).
        loss, scale, margin: the attacker's model of the client's margin loss. The proxy centers
            are the dummies' own class means, a tighter fit than a trained head, so the default
            scale is tempered (16, not CosFace's 64): at 64 the proxy's softmax saturates and its
            gradient vanishes in float32, leaving nothing to match.
        iterations, restarts, attack_lr, tv_weight: Inverting Gradients (Geiping et al. 2020).
        seed, device, progress: as everywhere.
    """

    client: str
    round: int | str = "first"
    dummies: int = 8
    loss: str = "cosface"
    scale: float = 16.0
    margin: float = 0.35
    iterations: int = 300
    restarts: int = 1
    attack_lr: float = 0.1
    tv_weight: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        from federated_core.engine.messages import is_party

        if not is_party(self.client) or self.client == "server":
            raise ValueError(f"client must be 'client:<id>', got {self.client!r}")
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


@dataclass
class LoggedUpdateResult:
    """Scores of the inversion of one logged update (plain numbers and arrays)."""

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

    def summary(self) -> dict[str, Any]:
        finite = self.psnr[np.isfinite(self.psnr)]
        imp = self.impostor_identity_similarity
        return {
            "attack": "inverting_gradients (logged update)",
            "client": self.config["client"],
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
            "iterations_per_second": self.iterations / self.seconds if self.seconds > 0 else float("nan"),
        }


def _pick_update(view: Any, config: LoggedUpdateProbeConfig) -> Any:
    ups = [u for u in view.backbone_updates(required=False) if u.sender == config.client]
    if not ups:
        raise ValueError(
            f"observer {view.party!r} observed no backbone update sent by {config.client!r} "
            "(only the server observes a single client's upload)"
        )
    if config.round == "first":
        return min(ups, key=lambda u: u.round)
    if config.round == "last":
        return max(ups, key=lambda u: u.round)
    found = [u for u in ups if u.round == config.round]
    if not found:
        raise ValueError(
            f"{config.client!r} sent no backbone update in round {config.round}; "
            f"its updates are from rounds {sorted(u.round for u in ups)}"
        )
    return found[0]


def _broadcast(view: Any, update: Any) -> Any:
    from federated_core.engine.messages import SERVER

    for m in view.messages:
        if (
            m.kind == "backbone"
            and m.sender == SERVER
            and m.round == update.base_round
            and (update.sender in m.receivers)
        ):
            return m
    raise ValueError(f"the broadcast of round {update.base_round} to {update.sender!r} is not in the view")


def _negatives(view: Any, update: Any, dim: int) -> torch.Tensor | None:
    """Center-like tensors the server sent to the client in the update's round (known to it)."""
    from attacks.views import CENTER_KINDS
    from federated_core.engine.messages import SERVER

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
) -> LoggedUpdateResult:
    """Invert ``config.client``'s logged backbone update seen by ``view`` (the server's).

    ``client_faces`` (the client's real training images) and ``client_identities`` are ground
    truth, used only to score; ``granted_classes`` is the identity count granted to the attacker;
    ``local_lr`` / ``weight_decay`` come from the protocol (the run's configuration);
    ``local_epochs`` / ``batch_size`` only estimate the number of local steps for the record.
    ``reference`` (an `attacks.evaluator.IdentityReference`) adds the identity scores.
    """
    if isinstance(granted_classes, bool) or not isinstance(granted_classes, int) or granted_classes < 1:
        raise ValueError(f"granted_classes must be an integer >= 1, got {granted_classes!r}")
    if not (local_lr > 0 and math.isfinite(local_lr)):
        raise ValueError(f"local_lr must be a finite number > 0, got {local_lr}")
    if weight_decay < 0 or not math.isfinite(weight_decay):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    if len(client_faces) == 0:
        raise ValueError(f"no training images of {config.client!r} to score against")
    device = torch.device(config.device)
    update = _pick_update(view, config)
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
    notes = []
    if not any(float(t.abs().max()) > 0 for t in observed.values()):
        raise ValueError(f"the logged update of {config.client!r} in round {update.round} is zero: nothing to invert")
    decay_share = 0.0
    if weight_decay > 0:
        observed, decay_share = _project_out(observed, start)
    dim = int(getattr(backbone, "embedding_dim", 0)) or int(
        backbone(torch.zeros(1, 3, base.meta["spec"]["resolution"], base.meta["spec"]["resolution"])).shape[1]
    )
    negatives = _negatives(view, update, dim)
    n_samples = update.num_samples
    dummies = config.dummies if n_samples is None else min(config.dummies, n_samples)
    if dummies < config.dummies:
        notes.append(f"{dummies} dummies: the client holds only {n_samples} images")
    classes = min(granted_classes, dummies)
    if classes < granted_classes:
        notes.append(f"{dummies} dummies cover {classes} of the {granted_classes} granted identities")
    model = ProxyHeadModel(backbone, classes, config.loss, config.scale, config.margin, negatives).to(device)
    labels = torch.arange(dummies) % classes
    resolution = int(base.meta["spec"]["resolution"])
    sgd = LocalSgd(steps=1, batch_size=dummies, lr=float(local_lr))
    out = inverting_gradients(
        model,
        start,
        observed,
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
    update_cos = 1.0 - out.restart_losses[int(np.argmin(out.restart_losses))]
    rec = (out.images.cpu() + 1) / 2
    real = client_faces.as_float()
    if real.shape[-1] != resolution:
        real = F.interpolate(real, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    real = ((real.clamp(-1, 1) + 1) / 2).cpu()
    pair_psnr = torch.stack([psnr(rec[i : i + 1].expand_as(real), real) for i in range(len(rec))])
    nearest = pair_psnr.argmax(1)
    best_psnr = pair_psnr.max(1).values
    best_ssim = ssim(rec, real[nearest])
    id_sim = imp_sim = rank1 = rank1_chance = None
    evaluator = None
    if reference is not None:
        if not client_identities:
            raise ValueError("client_identities are needed to score identities with the reference")
        truth = [frozenset(int(i) for i in client_identities)] * len(rec)
        sc = reference.score(rec, truth)
        id_sim, imp_sim, rank1, evaluator = (
            sc.identity_similarity,
            sc.impostor_identity_similarity,
            sc.rank1,
            sc.evaluator,
        )
        gallery_ids = torch.as_tensor(reference.gallery.identity_ids)
        rank1_chance = float(torch.isin(gallery_ids, torch.tensor(list(client_identities))).double().mean())
    steps = None
    if n_samples and local_epochs and batch_size:
        steps = int(local_epochs) * math.ceil(n_samples / int(batch_size))
    threat = (
        "logged update from the wire log; the server knows θ_0, lr and weight decay (its θ_0 direction projected out), "
        "the sample count; not the "
        "batch order (update matched in direction as one step: FedSGD approximation), not the client's class "
        "centers (head approximated by the dummies' mean features"
        + (f", plus {negatives.shape[0]} centers it broadcast as negatives" if negatives is not None else "")
        + f"); the identity count ({granted_classes}) is granted: an upper bound on this attacker"
    )
    return LoggedUpdateResult(
        config=asdict(config),
        round=update.round,
        base_round=update.base_round,
        num_samples=n_samples,
        granted_classes=granted_classes,
        local_steps_estimate=steps,
        negatives=0 if negatives is None else int(negatives.shape[0]),
        psnr=best_psnr.numpy(),
        ssim=best_ssim.numpy(),
        identity_similarity=id_sim,
        impostor_identity_similarity=imp_sim,
        rank1=rank1,
        rank1_chance=rank1_chance,
        update_cosine=float(update_cos),
        decay_share=decay_share,
        loss_history=out.losses,
        reconstructions=(rec * 255).round().clamp(0, 255).to(torch.uint8).numpy(),
        nearest_originals=(real[nearest] * 255).round().clamp(0, 255).to(torch.uint8).numpy(),
        seconds=out.seconds,
        iterations=out.iterations,
        evaluator=evaluator,
        threat_model=threat,
        notes=notes,
    )
