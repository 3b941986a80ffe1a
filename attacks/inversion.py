"""Embedding inversion: decode center-like vectors into faces (PrivacyFace App. A.2.4, Table 5).

The decoder is PrivacyFace's reconstruction network (modified DCGAN, Radford et al. 2015):

    fc + BN            d -> C0·s0·s0
    reshape            -> [C0, s0, s0]
    n-1 × (convtranspose2d(k=4, stride=2) + BN + ReLU), channels halving
    convtranspose2d(k=4, stride=2) + Sigmoid -> [3, R, R]

Table 5 has d = 512, C0 = 512, s0 = 4 and five up-sampling layers to 128 px; here the number of
layers n and s0 follow the image resolution in use (R = s0·2ⁿ with 4 ≤ s0 ≤ 7: 32 px → 4·2³,
64 px → 4·2⁴, 112 px → 7·2⁴) and C0 is a parameter (512 for the paper, less on a CPU).

Training (``DecoderConfig.objective``) uses (embedding, image) pairs of *public* faces embedded by
the observed (or initial) model F, Adam with weight decay and the learning rate divided by 10
every ``lr_step_epochs``:

* ``"l1"`` (default) — the paper's: L1 loss on pixels in [0, 1].
* ``"gan"`` — the generator G minimises

      λ_L1 · |G(v) − x|₁  +  λ_feat · (1 − cos(F(2·G(v) − 1), v))  +  λ_adv · L_adv(D(G(v)))

  for a public face x with unit embedding v = F(x)/|F(x)|: a pixel term, a feature (identity)
  term through the frozen recogniser the attacker holds — NbNet's idea of training the
  de-convolutional decoder with a loss in a face network's feature space (Mai et al. 2018, "On
  the reconstruction of face images from deep face templates") — and an adversarial term from a
  DCGAN discriminator D (Radford et al. 2016: strided convolutions, LeakyReLU 0.2, BatchNorm on
  every layer but the first), trained alternately with the non-saturating loss (Goodfellow et
  al. 2014, §3) or the hinge loss (Lim & Ye 2017).

The training curve (`DecoderTrainResult.curve`) holds per epoch the training means of L1, the
feature loss, D's loss and G's adversarial loss, and — on held-out public *identities*
(``holdout_fraction``) — L1 and the feature cosine cos(F(G(v)), v). ``patience`` stops training
once the held-out feature cosine has not improved by ``min_delta`` for that many epochs
(``epochs`` is the budget) and returns the best epoch's weights. Checkpoints are safetensors
(weights, Adam state, discriminator, best weights, epoch, curve) so a run can resume exactly.

`invert_and_score` inverts any observed vectors (W, p, p̂, W̃, DP k-means centers) and scores
each reconstruction with the independent evaluator (`attacks.evaluator.IdentityReference`).
Beside the raw scores it gives a floor and a ceiling (DESIGN §8): the same decoder fed as many
seeded random unit vectors (null), and fed the true class centers ``W_k`` behind the same
observations (oracle; optionally also real-image embeddings of the same identities), each scored
the same way, with the normalised success ``(raw - null) / (oracle - null)`` of rank-1 and of
"success at FAR" bootstrapped over independent units (`attacks.metrics.normalised_success`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from attacks.metrics import NormalisedSuccess, ceiling_summary, normalised_success, random_unit_vectors

__all__ = [
    "DecoderConfig",
    "EmbeddingDecoder",
    "Discriminator",
    "decoder_layout",
    "DecoderTrainResult",
    "train_decoder",
    "save_decoder",
    "load_decoder",
    "decoder_record",
    "frozen",
    "feature_cosine",
    "invert",
    "InversionResult",
    "invert_and_score",
    "save_image_grid",
]

_FORMAT_KEY = "privaudit.decoder.format"
_CONFIG_KEY = "privaudit.decoder.config"
_EPOCH_KEY = "privaudit.decoder.epoch"
_LOSSES_KEY = "privaudit.decoder.losses"
_CURVE_KEY = "privaudit.decoder.curve"
_RECORD_KEY = "privaudit.decoder.record"
DECODER_FORMAT = "1"
OBJECTIVES = ("l1", "gan")
ADVERSARIAL_LOSSES = ("nonsaturating", "hinge")
CURVE_FIELDS = (
    "epoch",
    "lr",
    "loss",
    "l1",
    "feature_loss",
    "d_loss",
    "g_adv_loss",
    "heldout_l1",
    "heldout_feature_cosine",
)


def decoder_layout(resolution: int) -> tuple[int, int]:
    """``(s0, n)``: start side and number of stride-2 up-samplings with ``s0 · 2ⁿ = resolution``,
    ``4 <= s0 <= 7`` (PrivacyFace Table 5 starts at 4×4)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution must be an integer >= 8, got {resolution!r}")
    n = 0
    side = resolution
    while side % 2 == 0 and side // 2 >= 4:
        side //= 2
        n += 1
    if n == 0 or side > 7:
        raise ValueError(
            f"resolution must be s0·2^n with 4 <= s0 <= 7 and n >= 1 (e.g. 16, 32, 64, 112, 128), got {resolution}"
        )
    return side, n


def _check_int(name: str, v: Any, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


def _check_weight(name: str, v: float) -> None:
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")


@dataclass(frozen=True)
class DecoderConfig:
    """Decoder architecture and training (defaults: PrivacyFace A.2.4 except ``epochs``/``batch_size``,
    which the paper sets to 50 / 512 for CASIA-WebFace).

    ``objective="gan"`` adds the feature and adversarial terms (module docstring) with weights
    ``l1_weight``, ``feature_weight``, ``adversarial_weight`` (our choice, not a paper's: on a
    toy set with a linear recogniser, ``feature_weight=1`` met the feature loss with images far
    from the faces — a recogniser's null space is large — while 0.1 kept them close; the
    adversarial term is a small realism prior beside the other two); the
    discriminator has ``disc_channels`` in its first layer and its own Adam (``disc_lr``, β1 =
    0.5 as in DCGAN) on the same step decay. ``holdout_fraction`` of the public identities are
    kept out of training for the curve's held-out scores; ``patience`` > 0 (it needs a held-out
    set) stops on the held-out feature cosine. The defaults train exactly as before these options.
    """

    embedding_dim: int = 512
    resolution: int = 64
    base_channels: int = 512
    epochs: int = 50
    batch_size: int = 512
    lr: float = 1e-3
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    weight_decay: float = 5e-4
    flip: bool = False
    seed: int = 0
    objective: str = "l1"
    l1_weight: float = 1.0
    feature_weight: float = 0.1
    adversarial_weight: float = 0.01
    adversarial_loss: str = "nonsaturating"
    disc_channels: int = 64
    disc_lr: float = 2e-4
    holdout_fraction: float = 0.0
    patience: int = 0
    min_delta: float = 1e-3

    def __post_init__(self) -> None:
        decoder_layout(self.resolution)
        for name in ("embedding_dim", "base_channels", "epochs", "batch_size", "lr_step_epochs", "disc_channels"):
            _check_int(name, getattr(self, name), 1)
        _check_int("patience", self.patience, 0)
        for name in ("lr", "disc_lr"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        self._check_objective()
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.patience > 0 and self.holdout_fraction == 0:
            raise ValueError(f"patience={self.patience} needs held-out identities: set holdout_fraction > 0")
        _check_weight("min_delta", self.min_delta)

    def _check_objective(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {self.adversarial_loss!r}")
        for name in ("l1_weight", "feature_weight", "adversarial_weight"):
            _check_weight(name, getattr(self, name))
        if self.objective == "gan" and self.l1_weight + self.feature_weight + self.adversarial_weight == 0:
            raise ValueError("objective 'gan' needs a weight > 0 (l1_weight, feature_weight, adversarial_weight all 0)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def uses_discriminator(self) -> bool:
        return self.objective == "gan" and self.adversarial_weight > 0

    @property
    def needs_feature_model(self) -> bool:
        """Whether training needs the recogniser F (feature loss or a convergence stop on its cosine)."""
        return (self.objective == "gan" and self.feature_weight > 0) or self.patience > 0


class EmbeddingDecoder(nn.Module):
    """PrivacyFace Table 5 decoder: unit embedding ``[B, d]`` -> image ``[B, 3, R, R]`` in ``[0, 1]``."""

    def __init__(self, embedding_dim: int = 512, resolution: int = 64, base_channels: int = 512) -> None:
        super().__init__()
        self.embedding_dim, self.resolution = int(embedding_dim), int(resolution)
        self.side, n = decoder_layout(resolution)
        self.c0 = int(base_channels)
        self.fc = nn.Sequential(
            nn.Linear(embedding_dim, self.c0 * self.side * self.side), nn.BatchNorm1d(self.c0 * self.side * self.side)
        )
        layers: list[nn.Module] = []
        c = self.c0
        for _ in range(n - 1):
            c_out = max(8, c // 2)
            layers += [
                nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c = c_out
        layers += [nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1), nn.Sigmoid()]
        self.up = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.embedding_dim:
            raise ValueError(f"z must be [B, {self.embedding_dim}], got shape {tuple(z.shape)}")
        h = self.fc(z).view(z.shape[0], self.c0, self.side, self.side)
        return self.up(h)


class Discriminator(nn.Module):
    """DCGAN discriminator (Radford et al. 2016, §3.1) mirroring the decoder: image ``[B, 3, R, R]``
    in ``[-1, 1]`` -> logit ``[B]``. ``n`` stride-2 4×4 convolutions (channels doubling from
    ``channels``, at most 8×), LeakyReLU 0.2, BatchNorm on all but the first, then one
    ``s0×s0`` convolution to a single logit."""

    def __init__(self, resolution: int = 64, channels: int = 64) -> None:
        super().__init__()
        side, n = decoder_layout(resolution)
        c = int(channels)
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n - 1):
            c_out = min(2 * c, 8 * int(channels))
            layers += [
                nn.Conv2d(c, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, 1, side))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


@contextlib.contextmanager
def frozen(model: nn.Module, device: str | torch.device | None = None) -> Iterator[nn.Module]:
    """Use ``model`` as a fixed function: eval mode, no parameter gradients (gradients still flow
    to its input), optionally moved to ``device``; its mode, ``requires_grad`` flags and device
    are restored on exit."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    home = params[0].device if params else None
    model.eval()
    for p in params:
        p.requires_grad_(False)
    if device is not None:
        model.to(device)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
        if home is not None and device is not None:
            model.to(home)


def feature_cosine(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row ``cos(F(2x − 1), v)``: the recogniser ``model`` (input in ``[-1, 1]``) on images
    ``x`` in ``[0, 1]`` against target vectors ``v`` ``[N, d]``; differentiable in ``x``."""
    out = model(images * 2 - 1).float()
    if out.shape != targets.shape:
        raise ValueError(
            f"the model embeds to {tuple(out.shape)} (d={out.shape[-1]}), targets are {tuple(targets.shape)}"
        )
    return F.cosine_similarity(out, targets.float(), dim=1, eps=1e-8)


def _build(config: DecoderConfig) -> EmbeddingDecoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return EmbeddingDecoder(config.embedding_dim, config.resolution, config.base_channels)


def _build_discriminator(config: DecoderConfig) -> Discriminator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        return Discriminator(config.resolution, config.disc_channels)


def _optimizer(decoder: nn.Module, config: DecoderConfig) -> torch.optim.Adam:
    return torch.optim.Adam(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _disc_optimizer(disc: nn.Module, config: DecoderConfig) -> torch.optim.Adam:
    return torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.999))


def _lr_at(config: DecoderConfig, epoch: int, base: float | None = None) -> float:
    """Step decay: ``lr · gamma^floor(epoch / lr_step_epochs)`` (epoch 0-based; ``base`` replaces ``lr``)."""
    return (config.lr if base is None else base) * config.lr_gamma ** (epoch // config.lr_step_epochs)


def _module_tensors(prefix: str, module: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
    """``{prefix}model/...`` weights and ``{prefix}adam/...`` optimizer state of one module."""
    tensors = {f"{prefix}model/{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    if optimizer is not None:
        names = {id(p): n for n, p in module.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, value in optimizer.state.get(p, {}).items():
                    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                    tensors[f"{prefix}adam/{names[id(p)]}/{key}"] = (
                        t.detach().cpu().contiguous().clone().reshape(t.shape)
                    )
    return tensors


def save_decoder(
    path: str | Path,
    decoder: EmbeddingDecoder,
    config: DecoderConfig,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    losses: Sequence[float] = (),
    curve: Sequence[Mapping[str, float | None]] = (),
) -> Path:
    """Write weights (and Adam state, for resuming) to a safetensors file with the config (its
    ``objective`` included), per-epoch losses and training curve as metadata."""
    return _write(path, _module_tensors("", decoder, optimizer), config, epoch, losses, curve, {})


def _write(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    config: DecoderConfig,
    epoch: int,
    losses: Sequence[float],
    curve: Sequence[Mapping[str, float | None]],
    record: Mapping[str, Any],
) -> Path:
    from federated_core.models.checkpoint import save_safetensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        _FORMAT_KEY: DECODER_FORMAT,
        _CONFIG_KEY: json.dumps(config.to_dict()),
        _EPOCH_KEY: str(epoch),
        _LOSSES_KEY: json.dumps([float(v) for v in losses]),
        _CURVE_KEY: json.dumps([dict(c) for c in curve]),
        _RECORD_KEY: json.dumps(dict(record)),
    }
    return save_safetensors(tensors, path, metadata)  # sorted header: same inputs, same bytes


def load_decoder(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[EmbeddingDecoder, DecoderConfig, int, list[float]]:
    """``(decoder in eval mode, config, epochs done, per-epoch losses)`` from a checkpoint. With a
    convergence stop (``patience`` > 0) the decoder has the best held-out epoch's weights, as
    `train_decoder` returns it."""
    ck = _load(path, device)
    decoder = ck.decoder
    if ck.best_weights is not None:
        decoder.load_state_dict(ck.best_weights, strict=True)
    return decoder.eval(), ck.config, ck.epoch, ck.losses


def decoder_record(path: str | Path) -> dict[str, Any]:
    """What a checkpoint says of its training, for the report: ``config`` (with ``objective``),
    ``epochs_done``, ``losses``, ``curve`` (per-epoch dicts of `CURVE_FIELDS`; None: not
    measured), and ``best_epoch`` / ``best_heldout_feature_cosine`` / ``stopped_early`` (the
    convergence stop; None / False without one)."""
    ck = _load(path, "cpu")
    return {
        "config": ck.config.to_dict(),
        "epochs_done": ck.epoch,
        "losses": ck.losses,
        "curve": ck.curve,
        "best_epoch": ck.record.get("best_epoch"),
        "best_heldout_feature_cosine": ck.record.get("best_cos"),
        "stopped_early": bool(ck.record.get("stopped", False)),
    }


@dataclass
class _Checkpoint:
    decoder: EmbeddingDecoder
    config: DecoderConfig
    epoch: int
    losses: list[float]
    curve: list[dict[str, float | None]]
    record: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    best_weights: dict[str, torch.Tensor] | None


def _strip(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load(path: str | Path, device: str | torch.device) -> _Checkpoint:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must be an existing decoder checkpoint, got {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get(_FORMAT_KEY) != DECODER_FORMAT:
            raise ValueError(f"{str(path)!r} is not a privaudit decoder checkpoint (format {DECODER_FORMAT})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = DecoderConfig(**json.loads(meta[_CONFIG_KEY]))
    decoder = _build(config)
    decoder.load_state_dict(_strip(tensors, "model/"), strict=True)
    best = _strip(tensors, "best/") or None
    return _Checkpoint(
        decoder.to(device),
        config,
        int(meta[_EPOCH_KEY]),
        json.loads(meta[_LOSSES_KEY]),
        json.loads(meta.get(_CURVE_KEY, "[]")),
        json.loads(meta.get(_RECORD_KEY, "{}")),
        tensors,
        best,
    )


def _restore_adam(
    optimizer: torch.optim.Optimizer, module: nn.Module, adam: dict[str, torch.Tensor], device: torch.device
) -> None:
    for name, p in module.named_parameters():
        state = {key.split("/")[-1]: v.to(device) for key, v in adam.items() if key.rsplit("/", 1)[0] == name}
        if state:
            if "step" in state:
                state["step"] = state["step"].cpu()
            optimizer.state[p] = state


@dataclass
class DecoderTrainResult:
    """The trained decoder and its record. ``losses``: per epoch, the mean of the generator's
    training objective (L1 for ``objective="l1"``); ``curve``: per epoch a dict of
    `CURVE_FIELDS` (None: not measured, e.g. the feature loss without a recogniser, D's loss
    without a discriminator, held-out scores without held-out identities); ``best_epoch`` (1-based)
    and ``stopped_early``: the convergence stop (None / False without ``patience``);
    ``heldout_identity_ids``: the public identities kept out of training for the held-out scores."""

    decoder: EmbeddingDecoder
    config: DecoderConfig
    losses: list[float]
    path: Path | None
    resumed_from_epoch: int = 0
    curve: list[dict[str, float | None]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    heldout_identity_ids: list[int] = field(default_factory=list)


def _training_embeddings(
    encoder: nn.Module | None,
    public_faces: Any,
    config: DecoderConfig,
    embeddings: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """Check the public faces and return their unit embeddings ``[N, d]`` (computed by ``encoder``
    unless given)."""
    from federated_core.models import embed

    if len(public_faces) == 0:
        raise ValueError("public_faces is empty: the decoder needs (embedding, image) pairs")
    if public_faces.resolution != config.resolution:
        raise ValueError(
            f"public_faces have resolution {public_faces.resolution}, config.resolution is {config.resolution}"
        )
    if config.needs_feature_model and encoder is None:
        raise ValueError(
            f"objective {config.objective!r} with feature_weight={config.feature_weight} and "
            f"patience={config.patience} needs the recogniser: give an encoder"
        )
    if embeddings is None:
        if encoder is None:
            raise ValueError("give an encoder or precomputed embeddings")
        embeddings = embed(encoder, public_faces, device=device)
    if embeddings.shape != (len(public_faces), config.embedding_dim):
        raise ValueError(
            f"embeddings must be [{len(public_faces)}, {config.embedding_dim}] (config.embedding_dim), "
            f"got {tuple(embeddings.shape)}"
        )
    return F.normalize(embeddings.float(), dim=1)


def _holdout_split(public_faces: Any, config: DecoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(training rows, held-out rows)``: ``round(holdout_fraction · I)`` (at least 1) of the
    ``I`` public identities, drawn with a generator seeded from ``config.seed``, are held out."""
    n = len(public_faces)
    if config.holdout_fraction == 0:
        return torch.arange(n), torch.arange(0)
    labels = torch.as_tensor(public_faces.labels)
    ids = torch.unique(labels)
    if len(ids) < 2:
        raise ValueError(f"holdout_fraction={config.holdout_fraction} needs >= 2 public identities, got {len(ids)}")
    k = min(len(ids) - 1, max(1, round(config.holdout_fraction * len(ids))))
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(config.seed + 4_242))
    held = torch.isin(labels, ids[perm[:k]])
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()


@dataclass
class _TrainState:
    """What a training run carries from epoch to epoch (and through a checkpoint)."""

    decoder: EmbeddingDecoder
    opt: torch.optim.Adam
    disc: Discriminator | None = None
    disc_opt: torch.optim.Adam | None = None
    epoch: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[dict[str, float | None]] = field(default_factory=list)
    best_cos: float | None = None
    best_epoch: int | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_cos": self.best_cos,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = _module_tensors("", self.decoder, self.opt)
        if self.disc is not None:
            out.update(_module_tensors("disc/", self.disc, self.disc_opt))
        if self.best_weights is not None:
            out.update({f"best/{k}": v.detach().cpu().contiguous().clone() for k, v in self.best_weights.items()})
        return out


def _start_or_resume(config: DecoderConfig, checkpoint: str | Path | None, device: torch.device) -> _TrainState:
    """A fresh decoder (and discriminator) with their Adam, or the state of ``checkpoint`` when it
    exists with a compatible config (only a longer ``epochs`` may continue it)."""
    decoder = _build(config).to(device)
    disc = _build_discriminator(config).to(device) if config.uses_discriminator else None
    state = _TrainState(
        decoder, _optimizer(decoder, config), disc, None if disc is None else _disc_optimizer(disc, config)
    )
    if checkpoint is None or not Path(checkpoint).is_file():
        return state
    ck = _load(checkpoint, device)
    if dataclasses.replace(ck.config, epochs=config.epochs) != config or ck.epoch > config.epochs:
        raise ValueError(
            f"checkpoint {str(checkpoint)!r} was written with a different config (only a longer `epochs` "
            f"may continue it): {ck.config}"
        )
    state.decoder, state.opt = ck.decoder, _optimizer(ck.decoder, config)
    _restore_adam(state.opt, ck.decoder, _strip(ck.tensors, "adam/"), device)
    if state.disc is not None and state.disc_opt is not None:
        state.disc.load_state_dict(_strip(ck.tensors, "disc/model/"), strict=True)
        _restore_adam(state.disc_opt, state.disc, _strip(ck.tensors, "disc/adam/"), device)
    state.epoch, state.losses, state.curve = ck.epoch, ck.losses, ck.curve
    state.best_weights = None if ck.best_weights is None else {k: v.to(device) for k, v in ck.best_weights.items()}
    state.best_cos, state.best_epoch = ck.record.get("best_cos"), ck.record.get("best_epoch")
    state.bad_epochs, state.stopped = int(ck.record.get("bad_epochs", 0)), bool(ck.record.get("stopped", False))
    return state


def _batches(
    public_faces: Any, z_all: torch.Tensor, rows: torch.Tensor, config: DecoderConfig, epoch: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled ``(images in [0, 1], embeddings)`` batches of ``rows`` (generator seeded per epoch;
    optional horizontal flips); a last batch of one is skipped (BatchNorm needs two samples)."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = rows[torch.randperm(len(rows), generator=gen)]
    for s in range(0, len(rows), config.batch_size):
        idx = order[s : s + config.batch_size]
        if len(idx) < 2:
            continue
        target = public_faces.images[idx].to(device).float().div_(255.0)
        z = z_all[idx].to(device)
        if config.flip:
            mask = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            target = torch.where(mask[:, None, None, None], target.flip(-1), target)
        yield target, z


def _l1_step(
    state: _TrainState, target: torch.Tensor, z: torch.Tensor, config: DecoderConfig, feature_model: nn.Module | None
) -> dict[str, float]:
    """PrivacyFace's step: L1 on pixels only."""
    loss = F.l1_loss(state.decoder(z), target)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    value = float(loss.detach())
    return {"loss": value, "l1": value}


def _adversarial_losses(kind: str, real: torch.Tensor | None, fake: torch.Tensor) -> torch.Tensor:
    """D's loss (``real`` given) or G's adversarial loss (``real`` None) on logits: non-saturating
    (Goodfellow et al. 2014: D ``softplus(−D(x)) + softplus(D(G))``, G ``softplus(−D(G))``) or
    hinge (Lim & Ye 2017: D ``relu(1 − D(x)) + relu(1 + D(G))``, G ``−D(G)``)."""
    if real is None:
        return F.softplus(-fake).mean() if kind == "nonsaturating" else -fake.mean()
    if kind == "nonsaturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _gan_step(
    state: _TrainState, target: torch.Tensor, z: torch.Tensor, config: DecoderConfig, feature_model: nn.Module | None
) -> dict[str, float]:
    """One alternating step: D on (real, detached fake), then G on
    ``λ_L1·L1 + λ_feat·(1 − cos(F(G(v)), v)) + λ_adv·L_adv`` (module docstring)."""
    fake = state.decoder(z)
    stats: dict[str, float] = {}
    disc, disc_opt = state.disc, state.disc_opt
    if disc is not None and disc_opt is not None:
        d_loss = _adversarial_losses(config.adversarial_loss, disc(target * 2 - 1), disc(fake.detach() * 2 - 1))
        disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        disc_opt.step()
        stats["d_loss"] = float(d_loss.detach())
    l1 = F.l1_loss(fake, target)
    loss = config.l1_weight * l1
    if feature_model is not None:
        if config.feature_weight > 0:
            feat = (1 - feature_cosine(feature_model, fake, z)).mean()
            loss = loss + config.feature_weight * feat
        else:
            with torch.no_grad():
                feat = (1 - feature_cosine(feature_model, fake.detach(), z)).mean()
        stats["feature_loss"] = float(feat.detach())
    if disc is not None:
        adv = _adversarial_losses(config.adversarial_loss, None, disc(fake * 2 - 1))
        loss = loss + config.adversarial_weight * adv
        stats["g_adv_loss"] = float(adv.detach())
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    stats.update(loss=float(loss.detach()), l1=float(l1.detach()))
    return stats


def _train_epoch(
    state: _TrainState,
    public_faces: Any,
    z_all: torch.Tensor,
    rows: torch.Tensor,
    feature_model: nn.Module | None,
    config: DecoderConfig,
    device: torch.device,
) -> dict[str, float | None]:
    """One epoch over the training ``rows``: the curve's row with each term's mean over them."""
    epoch = state.epoch
    state.decoder.train()
    for group in state.opt.param_groups:
        group["lr"] = _lr_at(config, epoch)
    if state.disc is not None and state.disc_opt is not None:
        state.disc.train()
        for group in state.disc_opt.param_groups:
            group["lr"] = _lr_at(config, epoch, config.disc_lr)
    step = _gan_step if config.objective == "gan" else _l1_step
    sums: dict[str, float] = {"loss": 0.0, "l1": 0.0}
    for target, z in _batches(public_faces, z_all, rows, config, epoch, device):
        for key, value in step(state, target, z, config, feature_model).items():
            sums[key] = sums.get(key, 0.0) + value * len(z)
    row: dict[str, float | None] = dict.fromkeys(CURVE_FIELDS)
    row.update({key: total / len(rows) for key, total in sums.items()})
    row.update(epoch=epoch + 1, lr=_lr_at(config, epoch))
    return row


def _heldout_scores(
    decoder: EmbeddingDecoder,
    public_faces: Any,
    z_all: torch.Tensor,
    rows: torch.Tensor,
    feature_model: nn.Module | None,
    config: DecoderConfig,
    device: torch.device,
) -> dict[str, float | None]:
    """Mean L1 and feature cosine ``cos(F(G(v)), v)`` of the decoder (eval mode) on held-out rows."""
    if len(rows) == 0:
        return {}
    decoder.eval()
    l1_sum, cos_sum = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(rows), config.batch_size):
            idx = rows[s : s + config.batch_size]
            target = public_faces.images[idx].to(device).float().div_(255.0)
            z = z_all[idx].to(device)
            out = decoder(z)
            l1_sum += float((out - target).abs().mean(dim=(1, 2, 3)).sum())
            if feature_model is not None:
                cos_sum += float(feature_cosine(feature_model, out, z).sum())
    return {
        "heldout_l1": l1_sum / len(rows),
        "heldout_feature_cosine": None if feature_model is None else cos_sum / len(rows),
    }


def _update_stop(state: _TrainState, row: Mapping[str, float | None], config: DecoderConfig) -> None:
    """Patience on the held-out feature cosine: a new best (by more than ``min_delta``) keeps the
    weights and resets the count; ``patience`` epochs without one stop training."""
    cos = row.get("heldout_feature_cosine")
    if config.patience == 0 or cos is None:
        return
    if state.best_cos is None or cos > state.best_cos + config.min_delta:
        state.best_cos, state.best_epoch, state.bad_epochs = float(cos), int(row["epoch"] or 0), 0
        state.best_weights = {k: v.detach().clone() for k, v in state.decoder.state_dict().items()}
    else:
        state.bad_epochs += 1
        state.stopped = state.bad_epochs >= config.patience


def train_decoder(
    encoder: nn.Module | None,
    public_faces: Any,
    config: DecoderConfig,
    checkpoint: str | Path | None = None,
    embeddings: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DecoderTrainResult:
    """Train the decoder on (embedding, image) pairs of public faces (PrivacyFace A.2.4; with
    ``config.objective="gan"`` also the feature and adversarial terms of the module docstring).

    Args:
        encoder: the observed (or initial) model F that embeds ``public_faces`` (unless
            ``embeddings`` are given); held frozen, it is the feature network of the ``"gan"``
            objective and of the held-out feature cosine.
        public_faces: a `FaceSet` of public identities (never the attacked ones) at
            ``config.resolution``.
        config: architecture and training.
        checkpoint: safetensors path written after every epoch; when it exists with the same
            config (or one that differs only by fewer ``epochs``), training resumes from it, and
            returns at once if it is complete (or stopped by ``patience``).
        embeddings: precomputed ``[N, d]`` embeddings of ``public_faces``.
    """
    device = torch.device(device)
    z_all = _training_embeddings(encoder, public_faces, config, embeddings, device)
    rows, held = _holdout_split(public_faces, config)
    state = _start_or_resume(config, checkpoint, device)
    resumed = state.epoch
    use_features = encoder is not None and (config.objective == "gan" or len(held) > 0)
    bar = tqdm(total=config.epochs - state.epoch, desc="train decoder", disable=not progress, leave=False)
    with frozen(encoder, device) if use_features and encoder is not None else contextlib.nullcontext() as net:
        while state.epoch < config.epochs and not state.stopped:
            row = _train_epoch(state, public_faces, z_all, rows, net, config, device)
            row.update(_heldout_scores(state.decoder, public_faces, z_all, held, net, config, device))
            state.losses.append(float(row["loss"] or 0.0))
            state.curve.append(row)
            state.epoch += 1
            _update_stop(state, row, config)
            if checkpoint is not None:
                _write(checkpoint, state.tensors(), config, state.epoch, state.losses, state.curve, state.record())
            bar.update(1)
            bar.set_postfix(l1=f"{row['l1']:.4f}")
    bar.close()
    if state.best_weights is not None:
        state.decoder.load_state_dict(state.best_weights, strict=True)
    state.decoder.eval()
    path = None if checkpoint is None else Path(checkpoint)
    return DecoderTrainResult(
        state.decoder,
        config,
        state.losses,
        path,
        resumed,
        state.curve,
        state.best_epoch,
        state.stopped,
        torch.unique(torch.as_tensor(public_faces.labels)[held]).tolist(),
    )


def invert(
    decoder: EmbeddingDecoder, vectors: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Decode center-like vectors ``[N, d]`` (L2-normalised first, as the decoder was trained on
    unit embeddings) into images ``[N, 3, R, R]`` in ``[0, 1]`` (CPU float32)."""
    if vectors.dim() != 2 or vectors.shape[1] != decoder.embedding_dim:
        raise ValueError(f"vectors must be [N, {decoder.embedding_dim}] (the decoder's d), got {tuple(vectors.shape)}")
    if vectors.shape[0] == 0:
        raise ValueError("vectors are empty (0 rows)")
    if not torch.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or inf")
    was = decoder.training
    decoder.eval().to(device)
    out = []
    with torch.no_grad():
        for s in range(0, vectors.shape[0], batch_size):
            z = F.normalize(vectors[s : s + batch_size].float(), dim=1).to(device)
            out.append(decoder(z).cpu())
    decoder.train(was)
    return torch.cat(out)


@dataclass
class InversionResult:
    """Reconstructions of one observed kind and their scores (plain arrays). ``means`` holds the
    impostor baselines too: the same scores against other attacked identities."""

    observer: str
    kind: str
    num_observations: int
    identity_similarity: np.ndarray
    rank1: np.ndarray
    ssim: np.ndarray
    psnr: np.ndarray
    impostor_identity_similarity: np.ndarray | None
    means: dict[str, float]
    evaluator: str
    reconstructions: np.ndarray
    mean_faces: np.ndarray
    grid_path: str | None = None
    notes: list[str] = field(default_factory=list)
    # success metric -> (vs the true-center oracle, vs the real-image oracle); each holds raw, oracle,
    # null, normalised and their intervals over units
    ceilings: dict[str, tuple[NormalisedSuccess | None, NormalisedSuccess | None]] = field(default_factory=dict)
    far_supported: dict[float, bool] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Means of every score, and per success metric (``rank1``, ``success@far=<f>``) the keys of
        `attacks.metrics.ceiling_summary`; ``success@far=<f>_supported`` says whether the
        evaluator's impostor pairs support that FAR."""
        out = {
            "observer": self.observer,
            "kind": self.kind,
            "num_observations": self.num_observations,
            **{f"mean_{k}": v for k, v in self.means.items()},
            "evaluator": self.evaluator,
        }
        for far, ok in self.far_supported.items():
            out[f"success@far={far:g}_supported"] = ok
        for metric, (vs_oracle, vs_real) in self.ceilings.items():
            out.update(ceiling_summary(metric, vs_oracle, vs_real))
        return out


def _check_inversion_inputs(
    where: str,
    decoder: EmbeddingDecoder,
    vectors: torch.Tensor,
    observation_ids: Sequence[frozenset[int]],
    oracle: torch.Tensor | None,
    oracle_real: torch.Tensor | None,
    units: Sequence[Any] | None,
) -> None:
    """Reject vectors, oracles, ids or units whose shapes do not line up with the decoder and each other."""
    if vectors.dim() != 2 or vectors.shape[0] == 0:
        raise ValueError(f"{where}: vectors must be a non-empty [N, d] array, got shape {tuple(vectors.shape)}")
    if vectors.shape[1] != decoder.embedding_dim:
        raise ValueError(f"{where}: vectors have d={vectors.shape[1]}, the decoder expects d={decoder.embedding_dim}")
    if len(observation_ids) != vectors.shape[0]:
        raise ValueError(f"{where}: observation_ids has {len(observation_ids)} entries for {vectors.shape[0]} vectors")
    for name, q in (("oracle", oracle), ("oracle_real", oracle_real)):
        if q is not None and tuple(q.shape) != tuple(vectors.shape):
            raise ValueError(
                f"{where}: {name} must have the shape of vectors {tuple(vectors.shape)}, got {tuple(q.shape)}"
            )
    if units is not None and len(units) != vectors.shape[0]:
        raise ValueError(f"{where}: units has {len(units)} entries for {vectors.shape[0]} vectors")


def _scorable_observations(
    where: str, observation_ids: Sequence[frozenset[int]], reference: Any, notes: list[str]
) -> tuple[list[int], list[frozenset[int]]]:
    """Indices of the observations that stand for an identity with reference images, and those
    identities; the dropped ones are counted in ``notes``."""
    known = set(reference.identity_ids.tolist())
    keep = [i for i, ids in enumerate(observation_ids) if ids & known]
    if len(keep) < len(observation_ids):
        notes.append(
            f"{len(observation_ids) - len(keep)} observations stand for no identity with reference images; skipped"
        )
    if not keep:
        raise ValueError(f"{where}: no observed vector stands for an identity with reference images")
    return keep, [frozenset(observation_ids[i] & known) for i in keep]


def _inversion_ceilings(
    raw: dict[str, np.ndarray],
    null: dict[str, np.ndarray],
    oracles: Sequence[dict[str, np.ndarray] | None],
    unit_list: Sequence[Any],
    unit_name: str,
    confidence: float,
    n_bootstrap: int,
    seed: int,
    notes: list[str],
) -> dict[str, tuple[NormalisedSuccess | None, NormalisedSuccess | None]]:
    """Per success metric, the normalised success vs the true-center and the real-image oracle
    (``(raw - null) / (oracle - null)``, `attacks.metrics.normalised_success`); their notes go to ``notes``."""
    ceilings: dict[str, tuple[NormalisedSuccess | None, NormalisedSuccess | None]] = {}
    for metric, values in raw.items():
        true_center, real_image = (
            None
            if o is None
            else normalised_success(
                values,
                o[metric],
                null[metric],
                unit_list,
                metric=metric,
                unit_name=unit_name,
                confidence=confidence,
                n_bootstrap=n_bootstrap,
                seed=seed,
            )
            for o in oracles
        )
        pair = (true_center, real_image)
        ceilings[metric] = pair
        notes += [
            f"vs the {which} oracle: {n}"
            for which, c in zip(("true-center", "real-image"), pair)
            if c is not None
            for n in c.notes
        ]
    return ceilings


def invert_and_score(
    decoder: EmbeddingDecoder,
    vectors: torch.Tensor,
    observation_ids: Sequence[frozenset[int]],
    reference: Any,
    observer: str = "server",
    kind: str = "class_centers",
    grid_path: str | Path | None = None,
    max_grid: int = 8,
    device: str | torch.device = "cpu",
    oracle: torch.Tensor | None = None,
    oracle_real: torch.Tensor | None = None,
    units: Sequence[Any] | None = None,
    unit_name: str = "observation",
    seed: int = 0,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
) -> InversionResult:
    """Invert ``vectors`` and score each reconstruction against the identities it stands for.

    ``reference`` is an `attacks.evaluator.IdentityReference`. Observations that stand for no
    identity with reference images are dropped (counted in ``notes``). ``grid_path``: save the
    first ``max_grid`` observations as a scored grid (`write_scored_grid`: real images, the attack's,
    the oracles' and the null's reconstructions) for the report.

    Floor and ceiling: the decoder also inverts as many seeded random unit vectors (null, seed
    ``seed + 7777``) and, when given, ``oracle`` / ``oracle_real`` (``[N, d]`` aligned with
    ``vectors``; an all-NaN row: no oracle for that observation); ``units`` labels each
    observation's independent unit for the bootstrap (default: each observation its own).
    """
    where = f"observer {observer!r}, kind {kind!r}"
    _check_inversion_inputs(where, decoder, vectors, observation_ids, oracle, oracle_real, units)
    notes: list[str] = []
    keep, ids = _scorable_observations(where, observation_ids, reference, notes)
    rec = invert(decoder, vectors[keep], device=device)
    scores = reference.score(rec, ids)
    faces = torch.stack([reference.mean_face(s, rec.shape[-1]) for s in ids])
    null_queries = random_unit_vectors(len(keep), vectors.shape[1], seed + 7_777)
    path = None
    if grid_path is not None:
        shown = {"attack": rec[:max_grid]}
        for label, q in (("oracle: true W", oracle), ("oracle: real", oracle_real), ("null: random", null_queries)):
            if q is not None:
                shown[label] = _invert_rows(decoder, (q if label.startswith("null") else q[keep])[:max_grid], device)
        path = str(write_scored_grid(grid_path, reference, ids[:max_grid], shown))
    raw = _successes(scores)
    null = _score_queries(decoder, null_queries, ids, reference, device)
    oracles = [
        None if q is None else _score_queries(decoder, q[keep], ids, reference, device) for q in (oracle, oracle_real)
    ]
    unit_list = [i if units is None else units[i] for i in keep]
    ceilings = _inversion_ceilings(raw, null, oracles, unit_list, unit_name, confidence, n_bootstrap, seed, notes)
    if oracle is None and oracle_real is None:
        notes.append("no oracle vectors given: the success metrics have a null but no ceiling")
    return inversion_result(observer, kind, len(keep), scores, rec, faces, path, notes, ceilings)


def _successes(scores: Any) -> dict[str, np.ndarray]:
    """The per-reconstruction success metrics (0/1 floats): rank-1, and success at each calibrated FAR."""
    out = {"rank1": np.asarray(scores.rank1, dtype=np.float64)}
    for far, hits in scores.success_at_far.items():
        out[f"success@far={far:g}"] = np.asarray(hits, dtype=np.float64)
    return out


def _score_queries(
    decoder: EmbeddingDecoder,
    queries: torch.Tensor,
    ids: Sequence[frozenset[int]],
    reference: Any,
    device: str | torch.device,
) -> dict[str, np.ndarray]:
    """Invert and score ``queries`` (rows aligned with ``ids``) with `_successes`; all-NaN rows
    (no query for that observation) score NaN."""
    ok = [i for i in range(queries.shape[0]) if bool(torch.isfinite(queries[i]).all())]
    out: dict[str, np.ndarray] = {}
    if ok:
        got = _successes(reference.score(invert(decoder, queries[ok], device=device), [ids[i] for i in ok]))
        for metric, values in got.items():
            out[metric] = np.full(queries.shape[0], np.nan)
            out[metric][ok] = values
    else:
        names = ["rank1"] + (
            []
            if reference.calibration is None
            else [f"success@far={t.target_far:g}" for t in reference.calibration.thresholds]
        )
        out = {m: np.full(queries.shape[0], np.nan) for m in names}
    return out


def _invert_rows(decoder: EmbeddingDecoder, queries: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Decoder images of ``queries``; rows without a query (NaN) give NaN images (not scored)."""
    ok = torch.isfinite(queries).all(dim=1)
    r = decoder.resolution
    out = torch.full((queries.shape[0], 3, r, r), float("nan"))
    if bool(ok.any()):
        out[ok] = invert(decoder, queries[ok], device=device).cpu()
    return out


def grid_threshold(reference: Any) -> Any | None:
    """The threshold a grid judges tiles by: the evaluator's at the smallest supported FAR (None
    without a calibration or a supported FAR)."""
    cal = reference.calibration
    supported = [] if cal is None else [t for t in cal.thresholds if t.supported]
    return min(supported, key=lambda t: t.target_far) if supported else None


def write_scored_grid(
    path: str | Path, reference: Any, ids: Sequence[frozenset[int]], rows: dict[str, torch.Tensor]
) -> Path:
    """The grid a reader can judge (issue #14 item 7, `attacks.tiles`): one real image of each
    observation's identity on top, then each row of ``rows`` (label -> ``[n, 3, R, R]`` in [0, 1],
    aligned with ``ids``; a NaN image is not scored), each tile captioned with its evaluator
    similarity to the true identity and framed by pass/fail at `grid_threshold`."""
    from attacks.tiles import TileRow, save_tile_grid, scored_captions

    res = next(iter(rows.values())).shape[-1]
    tile_rows = [TileRow("real", torch.stack([reference.real_face(s, res) for s in ids]))]
    threshold = grid_threshold(reference)
    for label, images in rows.items():
        valid = [i for i in range(images.shape[0]) if bool(torch.isfinite(images[i]).all())]
        sims = np.full(images.shape[0], np.nan)
        passed: list[bool | None] = [None] * images.shape[0]
        if valid:
            got = reference.score(images[valid], [ids[i] for i in valid])
            sims[valid] = got.identity_similarity
            if threshold is not None:
                for j, i in enumerate(valid):
                    passed[i] = bool(got.success_at_far[threshold.target_far][j])
        shown = torch.nan_to_num(images, nan=1.0)
        tile_rows.append(TileRow(label, shown, scored_captions(sims, passed), passed))
    title = (
        f"s = evaluator similarity to the true identity; green: s >= {threshold.threshold:.3f} "
        f"(FAR {threshold.target_far:g}), red: below"
        if threshold is not None
        else "s = evaluator similarity to the true identity (no supported FAR: tiles not judged)"
    )
    return save_tile_grid(path, tile_rows, title=title)


def save_image_grid(
    real: torch.Tensor, reconstructed: torch.Tensor, path: str | Path, pairs_per_row: int = 8, tile: int = 64
) -> Path:
    """PNG grid (`attacks.tiles.save_tile_grid`), images in ``[0, 1]`` (or uint8): ``pairs_per_row``
    real images in a row with their reconstructions in the row below, then the next pair of rows."""
    from attacks.tiles import TileRow, save_tile_grid

    if real.shape != reconstructed.shape or real.dim() != 4:
        raise ValueError(
            f"real {tuple(real.shape)} and reconstructed {tuple(reconstructed.shape)} must be equal [N, 3, R, R]"
        )
    if pairs_per_row < 1:
        raise ValueError(f"pairs_per_row must be >= 1, got {pairs_per_row}")
    rows = [
        TileRow(label, part[i : i + pairs_per_row])
        for i in range(0, real.shape[0], pairs_per_row)
        for label, part in (("real", real), ("reconstruction", reconstructed))
    ]
    return save_tile_grid(path, rows, tile=tile, max_columns=pairs_per_row)


def inversion_result(
    observer: str,
    kind: str,
    num_observations: int,
    scores: Any,
    images: torch.Tensor,
    faces: torch.Tensor,
    grid_path: str | None,
    notes: list[str],
    ceilings: dict[str, Any],
) -> "InversionResult":
    """The `InversionResult` of scored reconstructions ``images`` (in [0, 1]) beside the mean faces
    of their identities: one record for the decoder's and the white-box attack's results."""
    return InversionResult(
        observer=observer,
        kind=kind,
        num_observations=num_observations,
        identity_similarity=scores.identity_similarity,
        rank1=scores.rank1,
        ssim=scores.ssim,
        psnr=scores.psnr,
        impostor_identity_similarity=scores.impostor_identity_similarity,
        means=scores.means(),
        evaluator=scores.evaluator,
        reconstructions=(images * 255).round().to(torch.uint8).numpy(),
        mean_faces=(faces * 255).round().to(torch.uint8).numpy(),
        grid_path=grid_path,
        notes=notes,
        ceilings=ceilings,
        far_supported=dict(scores.far_supported),
    )
