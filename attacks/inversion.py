"""Embedding inversion: decode center-like vectors into faces (PrivacyFace App. A.2.4, Table 5).

The decoder is PrivacyFace's reconstruction network (modified DCGAN, Radford et al. 2015):

    fc + BN            d -> C0·s0·s0
    reshape            -> [C0, s0, s0]
    n-1 × (convtranspose2d(k=4, stride=2) + BN + ReLU), channels halving
    convtranspose2d(k=4, stride=2) + Sigmoid -> [3, R, R]

Table 5 has d = 512, C0 = 512, s0 = 4 and five up-sampling layers to 128 px; here the number of
layers n and s0 follow the image resolution in use (R = s0·2ⁿ with 4 ≤ s0 ≤ 7: 32 px → 4·2³,
64 px → 4·2⁴, 112 px → 7·2⁴) and C0 is a parameter (512 for the paper, less on a CPU).
Training follows the paper: (embedding, image) pairs of *public* faces embedded by the observed
(or initial) model, L1 loss on pixels in [0, 1], Adam with weight decay, the learning rate divided
by 10 every ``lr_step_epochs``. Checkpoints are safetensors (weights, Adam state, epoch) so a
training run can resume exactly.

`invert_and_score` inverts any observed vectors (W, p, p̂, W̃, DP k-means centers) and scores
each reconstruction with the independent evaluator (`attacks.evaluator.IdentityReference`).
Beside the raw scores it gives a floor and a ceiling (DESIGN §8): the same decoder fed as many
seeded random unit vectors (null), and fed the true class centers ``W_k`` behind the same
observations (oracle; optionally also real-image embeddings of the same identities), each scored
the same way, with the normalised success ``(raw - null) / (oracle - null)`` of rank-1 and of
"success at FAR" bootstrapped over independent units (`attacks.metrics.normalised_success`).
"""

from __future__ import annotations

import dataclasses
import json
import math
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
    "decoder_layout",
    "DecoderTrainResult",
    "train_decoder",
    "save_decoder",
    "load_decoder",
    "invert",
    "InversionResult",
    "invert_and_score",
    "save_image_grid",
]

_FORMAT_KEY = "privaudit.decoder.format"
_CONFIG_KEY = "privaudit.decoder.config"
_EPOCH_KEY = "privaudit.decoder.epoch"
_LOSSES_KEY = "privaudit.decoder.losses"
DECODER_FORMAT = "1"


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


@dataclass(frozen=True)
class DecoderConfig:
    """Decoder architecture and training (defaults: PrivacyFace A.2.4 except ``epochs``/``batch_size``,
    which the paper sets to 50 / 512 for CASIA-WebFace)."""

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

    def __post_init__(self) -> None:
        decoder_layout(self.resolution)
        for name in ("embedding_dim", "base_channels", "epochs", "batch_size", "lr_step_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def _build(config: DecoderConfig) -> EmbeddingDecoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return EmbeddingDecoder(config.embedding_dim, config.resolution, config.base_channels)


def _optimizer(decoder: nn.Module, config: DecoderConfig) -> torch.optim.Adam:
    return torch.optim.Adam(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _lr_at(config: DecoderConfig, epoch: int) -> float:
    """Step decay: ``lr · gamma^floor(epoch / lr_step_epochs)`` (epoch 0-based)."""
    return config.lr * config.lr_gamma ** (epoch // config.lr_step_epochs)


def save_decoder(
    path: str | Path,
    decoder: EmbeddingDecoder,
    config: DecoderConfig,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    losses: Sequence[float] = (),
) -> Path:
    """Write weights (and Adam state, for resuming) to a safetensors file with the config as metadata."""
    from federated_core.models.checkpoint import save_safetensors

    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in decoder.state_dict().items()}
    if optimizer is not None:
        names = {id(p): n for n, p in decoder.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, value in optimizer.state.get(p, {}).items():
                    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                    tensors[f"adam/{names[id(p)]}/{key}"] = t.detach().cpu().contiguous().clone().reshape(t.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        _FORMAT_KEY: DECODER_FORMAT,
        _CONFIG_KEY: json.dumps(config.to_dict()),
        _EPOCH_KEY: str(epoch),
        _LOSSES_KEY: json.dumps([float(v) for v in losses]),
    }
    return save_safetensors(tensors, path, metadata)  # sorted header: same inputs, same bytes


def load_decoder(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[EmbeddingDecoder, DecoderConfig, int, list[float]]:
    """``(decoder in eval mode, config, epochs done, per-epoch losses)`` from a checkpoint."""
    decoder, config, epoch, losses, _ = _load(path, device)
    return decoder.eval(), config, epoch, losses


def _load(
    path: str | Path, device: str | torch.device
) -> tuple[EmbeddingDecoder, DecoderConfig, int, list[float], dict[str, torch.Tensor]]:
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
    decoder.load_state_dict({k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}, strict=True)
    adam = {k[len("adam/") :]: v for k, v in tensors.items() if k.startswith("adam/")}
    return decoder.to(device), config, int(meta[_EPOCH_KEY]), json.loads(meta[_LOSSES_KEY]), adam


def _restore_adam(
    optimizer: torch.optim.Optimizer, decoder: nn.Module, adam: dict[str, torch.Tensor], device: torch.device
) -> None:
    for name, p in decoder.named_parameters():
        state = {key.split("/")[-1]: v.to(device) for key, v in adam.items() if key.rsplit("/", 1)[0] == name}
        if state:
            if "step" in state:
                state["step"] = state["step"].cpu()
            optimizer.state[p] = state


@dataclass
class DecoderTrainResult:
    decoder: EmbeddingDecoder
    config: DecoderConfig
    losses: list[float]
    path: Path | None
    resumed_from_epoch: int = 0


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


def _start_or_resume(
    config: DecoderConfig, checkpoint: str | Path | None, device: torch.device
) -> tuple[EmbeddingDecoder, torch.optim.Adam, int, list[float]]:
    """A fresh decoder and Adam, or those of ``checkpoint`` when it exists with a compatible
    config: ``(decoder, optimizer, epochs done, per-epoch losses)``."""
    decoder, start = _build(config).to(device), 0
    losses: list[float] = []
    opt = _optimizer(decoder, config)
    if checkpoint is not None and Path(checkpoint).is_file():
        saved, saved_cfg, start, losses, adam = _load(checkpoint, device)
        if dataclasses.replace(saved_cfg, epochs=config.epochs) != config or start > config.epochs:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} was written with a different config (only a longer `epochs` "
                f"may continue it): {saved_cfg}"
            )
        decoder = saved
        opt = _optimizer(decoder, config)
        _restore_adam(opt, decoder, adam, device)
    return decoder, opt, start, losses


def _train_epoch(
    decoder: EmbeddingDecoder,
    opt: torch.optim.Optimizer,
    public_faces: Any,
    z_all: torch.Tensor,
    config: DecoderConfig,
    epoch: int,
    device: torch.device,
) -> float:
    """One epoch of L1 training on shuffled (embedding, image) pairs (generator seeded per epoch;
    optional horizontal flips); returns the epoch's mean loss over all ``N`` pairs."""
    n = len(public_faces)
    decoder.train()
    for group in opt.param_groups:
        group["lr"] = _lr_at(config, epoch)
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen)
    total = 0.0
    for s in range(0, n, config.batch_size):
        idx = order[s : s + config.batch_size]
        if len(idx) < 2:  # BatchNorm needs two samples
            continue
        target = public_faces.images[idx].to(device).float().div_(255.0)
        z = z_all[idx].to(device)
        if config.flip:
            mask = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            target = torch.where(mask[:, None, None, None], target.flip(-1), target)
        loss = F.l1_loss(decoder(z), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / n


def train_decoder(
    encoder: nn.Module | None,
    public_faces: Any,
    config: DecoderConfig,
    checkpoint: str | Path | None = None,
    embeddings: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DecoderTrainResult:
    """Train the decoder on (embedding, image) pairs of public faces (PrivacyFace A.2.4).

    Args:
        encoder: the observed (or initial) model that embeds ``public_faces``; ignored when
            ``embeddings`` are given.
        public_faces: a `FaceSet` of public identities (never the attacked ones) at
            ``config.resolution``.
        config: architecture and training.
        checkpoint: safetensors path written after every epoch; when it exists with the same
            config (or one that differs only by fewer ``epochs``), training resumes from it, and
            returns at once if it is complete.
        embeddings: precomputed ``[N, d]`` embeddings of ``public_faces``.
    """
    device = torch.device(device)
    z_all = _training_embeddings(encoder, public_faces, config, embeddings, device)
    decoder, opt, start, losses = _start_or_resume(config, checkpoint, device)
    resumed = start
    bar = tqdm(total=config.epochs - start, desc="train decoder", disable=not progress, leave=False)
    for epoch in range(start, config.epochs):
        losses.append(_train_epoch(decoder, opt, public_faces, z_all, config, epoch, device))
        if checkpoint is not None:
            save_decoder(checkpoint, decoder, config, epoch + 1, opt, losses)
        bar.update(1)
        bar.set_postfix(l1=f"{losses[-1]:.4f}")
    bar.close()
    decoder.eval()
    return DecoderTrainResult(decoder, config, losses, None if checkpoint is None else Path(checkpoint), resumed)


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
    max_grid: int = 16,
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
    identity with reference images are dropped (counted in ``notes``). ``grid_path``: save a
    PNG of (real mean face | reconstruction) pairs for the report.

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
    path = None
    if grid_path is not None:
        path = str(save_image_grid(faces[:max_grid], rec[:max_grid], grid_path))
    raw = _successes(scores)
    null = _score_queries(
        decoder, random_unit_vectors(len(keep), vectors.shape[1], seed + 7_777), ids, reference, device
    )
    oracles = [
        None if q is None else _score_queries(decoder, q[keep], ids, reference, device) for q in (oracle, oracle_real)
    ]
    unit_list = [i if units is None else units[i] for i in keep]
    ceilings = _inversion_ceilings(raw, null, oracles, unit_list, unit_name, confidence, n_bootstrap, seed, notes)
    if oracle is None and oracle_real is None:
        notes.append("no oracle vectors given: the success metrics have a null but no ceiling")
    return InversionResult(
        observer=observer,
        kind=kind,
        num_observations=len(keep),
        identity_similarity=scores.identity_similarity,
        rank1=scores.rank1,
        ssim=scores.ssim,
        psnr=scores.psnr,
        impostor_identity_similarity=scores.impostor_identity_similarity,
        means=scores.means(),
        evaluator=scores.evaluator,
        reconstructions=(rec * 255).round().to(torch.uint8).numpy(),
        mean_faces=(faces * 255).round().to(torch.uint8).numpy(),
        grid_path=path,
        notes=notes,
        ceilings=ceilings,
        far_supported=dict(scores.far_supported),
    )


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


def save_image_grid(real: torch.Tensor, reconstructed: torch.Tensor, path: str | Path, pairs_per_row: int = 4) -> Path:
    """PNG grid, images in ``[0, 1]`` (or uint8): ``pairs_per_row`` real images in a row with
    their reconstructions in the row below (then the next real row, ...); a last short row is
    padded with white."""
    from torchvision.utils import save_image

    if real.shape != reconstructed.shape or real.dim() != 4:
        raise ValueError(
            f"real {tuple(real.shape)} and reconstructed {tuple(reconstructed.shape)} must be equal [N, 3, R, R]"
        )
    if pairs_per_row < 1:
        raise ValueError(f"pairs_per_row must be >= 1, got {pairs_per_row}")
    a = real.float() / 255 if real.dtype == torch.uint8 else real.float()
    b = reconstructed.float() / 255 if reconstructed.dtype == torch.uint8 else reconstructed.float()
    cols = min(pairs_per_row, a.shape[0])
    pad = (-a.shape[0]) % cols
    if pad:
        blank = torch.ones((pad, *a.shape[1:]), dtype=a.dtype)
        a, b = torch.cat([a, blank]), torch.cat([b, blank])
    rows = [t for i in range(0, a.shape[0], cols) for t in (a[i : i + cols], b[i : i + cols])]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows).clamp(0, 1), str(path), nrow=cols, padding=2, pad_value=1.0)
    return path
