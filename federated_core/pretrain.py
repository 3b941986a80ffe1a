"""Central pre-training of the initial backbone φ0 on public identities.

Every federated method here starts from a φ0 trained centrally on identities disjoint from the
clients' and the test identities (PrivacyFace §4: φ0 pre-trained on CASIA-WebFace; FedFR: a
model pre-trained on public data), except where a paper trains from scratch (FedGC).

The recipe is the usual margin-softmax one (CosFace, Wang et al. 2018, Eq. 2 of PrivacyFace; or
ArcFace, Eq. 3): SGD with momentum and weight decay, cosine learning-rate decay, random
horizontal flips. The result is evaluated on unseen identities with the 1:1 verification protocol
of `federated_core.evaluation` and saved as safetensors with its config; runs are cached by a hash
of the config and of the code that turns it into weights (`weights_code_fingerprint`: this module,
`federated_core.models`, `federated_core.data` and torch's version), so a repeated run with the
same config and code only loads the checkpoint, and a φ0 trained by other code is never reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from federated_core.data.faceset import FaceSet
from federated_core.integrity import CachedFileWarning, verify_checksums, write_checksums

CACHE_FORMAT_VERSION = 3  # 2: evaluation fields out of the weights' key; checksums.json. 3: the code's hash
# the source φ0's weights depend on beside its config (relative to federated_core/): a change to any
# of these files, or another torch, is another cache key
WEIGHTS_CODE = ("pretrain.py", "models", "data")


def code_fingerprint_of(root: Path, entries: tuple[str, ...], torch_version: str) -> str:
    """SHA-256 (16 hex digits) over ``torch_version`` and the relative path and bytes of every
    ``.py`` file of ``entries`` (files or folders) under ``root``, in sorted order."""
    h = hashlib.sha256(torch_version.encode())
    for entry in entries:
        path = root / entry
        if not path.exists():
            raise ValueError(f"code_fingerprint_of: {str(path)!r} does not exist")
        for f in [path] if path.is_file() else sorted(path.rglob("*.py")):
            h.update(b"\0" + f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def weights_code_fingerprint() -> str:
    """The fingerprint of the code that trains φ0 (`WEIGHTS_CODE`, torch's version), once per process."""
    return code_fingerprint_of(Path(__file__).resolve().parent, WEIGHTS_CODE, torch.__version__)


@dataclass(frozen=True)
class SyntheticSpec:
    """Which synthetic generator produces the data (see `federated_core.data.SyntheticFaces`)."""

    seed: int = 0
    resolution: int = 32
    groups: int = 4
    difficulty: float | None = None  # None: the generator's calibrated default

    def generator(self) -> Any:
        from federated_core.data import SyntheticFaces

        kwargs: dict[str, Any] = {"seed": self.seed, "resolution": self.resolution, "groups": self.groups}
        if self.difficulty is not None:
            kwargs["difficulty"] = self.difficulty
        return SyntheticFaces(**kwargs)


@dataclass(frozen=True)
class FolderSpec:
    """An identity-per-folder tree of face crops as φ0's data (`federated_core.data.folder_source`):
    the settings that reopen its `FolderFaceSource` and the source's content ``fingerprint``
    (relative paths and sizes of every image), so a changed folder never reuses a cached φ0."""

    root: str
    resolution: int
    fingerprint: str
    min_images_per_identity: int = 2
    max_identities: int | None = None
    seed: int = 0
    extensions: tuple[str, ...] = ()  # () : the folder reader's image extensions
    skip_unreadable: bool = False
    source: str = "folder"

    @classmethod
    def of(cls, source: Any) -> "FolderSpec":
        """The spec of an open `FolderFaceSource`."""
        settings = source.spec()
        settings["extensions"] = tuple(settings["extensions"])
        return cls(fingerprint=source.fingerprint(), **settings)

    def generator(self) -> Any:
        """The `FolderFaceSource` (`open_source`: opened once per process while the tree is unchanged;
        its fingerprint checked against the spec)."""
        return _open_folder(self)


def _open_folder(spec: FolderSpec) -> Any:
    from federated_core.data.folder_source import open_source

    settings = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("fingerprint", "source")}
    if not settings["extensions"]:
        del settings["extensions"]
    source = open_source(settings)
    if source.fingerprint() != spec.fingerprint:
        raise ValueError(
            f"the folder {spec.root} changed since this config was made: fingerprint {spec.fingerprint} "
            f"recorded, {source.fingerprint()} now"
        )
    return source


def data_spec_from_dict(d: dict[str, Any]) -> "SyntheticSpec | FolderSpec":
    """`SyntheticSpec` or `FolderSpec` from its dict (a folder's carries ``"source": "folder"``)."""
    if d.get("source") == "folder":
        d = dict(d)
        d["extensions"] = tuple(d.get("extensions", FolderSpec.extensions))
        return FolderSpec(**d)
    return SyntheticSpec(**d)


@dataclass(frozen=True)
class PretrainConfig:
    """Central training of φ0.

    Identity ranges are half-open ``(start, stop)`` ids of the synthetic generator; on a folder
    (``data`` a `FolderSpec`) ``train_identity_list`` / ``eval_identity_list`` name the folder's
    identity ids instead (a list overrides its range). The evaluation identities must be disjoint
    from the training ones (checked).
    """

    data: SyntheticSpec | FolderSpec = field(default_factory=SyntheticSpec)
    train_identities: tuple[int, int] = (0, 300)
    train_images_per_identity: int = 20
    eval_identities: tuple[int, int] = (900_000, 900_200)
    train_identity_list: tuple[int, ...] | None = None
    eval_identity_list: tuple[int, ...] | None = None
    eval_images_per_identity: int = 8
    eval_genuine_pairs: int = 3000
    eval_impostor_pairs: int = 3000
    backbone: str = "tiny"
    embedding_dim: int = 128
    head: str = "cosface"
    scale: float = 30.0
    margin: float = 0.35
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_identities", "eval_identities"):
            start, stop = getattr(self, name)
            if not (0 <= start < stop):
                raise ValueError(f"{name} must be a range (start, stop) with 0 <= start < stop, got {(start, stop)}")
        for name in ("train_identity_list", "eval_identity_list"):
            ids = getattr(self, name)
            if ids is not None and (len(ids) < 2 or len(set(ids)) != len(ids) or min(ids) < 0):
                raise ValueError(f"{name} must hold at least 2 distinct ids >= 0, got {list(ids)[:10]}")
        train, held = set(self.train_ids().tolist()), set(self.eval_ids().tolist())
        if train & held:
            a, b = self.train_identities, self.eval_identities
            if self.train_identity_list is None and self.eval_identity_list is None:
                raise ValueError(
                    f"eval_identities {b} overlap train_identities {a}: evaluation must use unseen identities"
                )
            raise ValueError(
                f"evaluation identities {sorted(train & held)[:10]} are also training identities: "
                "evaluation must use unseen identities"
            )
        positive_ints = ("train_images_per_identity", "epochs", "batch_size", "embedding_dim")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_images_per_identity < 2:
            raise ValueError(
                f"eval_images_per_identity must be >= 2 (genuine pairs), got {self.eval_images_per_identity}"
            )
        if self.head not in ("cosface", "arcface", "softmax"):
            raise ValueError(f"head must be one of 'cosface', 'arcface', 'softmax', got {self.head!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    @property
    def resolution(self) -> int:
        return self.data.resolution

    def train_ids(self) -> torch.Tensor:
        """The training identity ids: ``train_identity_list``, else the range ``train_identities``."""
        if self.train_identity_list is not None:
            return torch.tensor(sorted(self.train_identity_list), dtype=torch.int64)
        return _identity_range(self.train_identities)

    def eval_ids(self) -> torch.Tensor:
        """The evaluation identity ids: ``eval_identity_list``, else the range ``eval_identities``."""
        if self.eval_identity_list is not None:
            return torch.tensor(sorted(self.eval_identity_list), dtype=torch.int64)
        return _identity_range(self.eval_identities)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; the id lists only when given (so synthetic configs keep their keys and cache)."""
        d = dataclasses.asdict(self)
        for key in ("train_identity_list", "eval_identity_list"):
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainConfig":
        d = dict(d)
        d["data"] = data_spec_from_dict(d.get("data", {}))
        for key in ("train_identities", "eval_identities", "train_identity_list", "eval_identity_list"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def fingerprint(self) -> str:
        """Hash of everything that determines the trained weights (the cache key): the config and
        the code that trains it (`weights_code_fingerprint`); the evaluation fields are not among
        them (`evaluation_fingerprint`), so one φ0 serves every evaluation."""
        weights = {k: v for k, v in self.to_dict().items() if k not in EVALUATION_FIELDS}
        blob = json.dumps({"v": CACHE_FORMAT_VERSION, "code": weights_code_fingerprint(), **weights}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def evaluation_fingerprint(self) -> str:
        """Hash of the evaluation fields (which unseen identities and pairs φ0 is scored on)."""
        fields = {k: v for k, v in self.to_dict().items() if k in EVALUATION_FIELDS}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class PretrainResult:
    backbone: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any]
    path: Path | None
    cached: bool = False
    cache_problems: list[str] = field(default_factory=list)  # a damaged cache that was retrained: flags


def _identity_range(span: tuple[int, int]) -> torch.Tensor:
    return torch.arange(span[0], span[1], dtype=torch.int64)


def build_sets(config: PretrainConfig) -> tuple[FaceSet, FaceSet]:
    """Render (or load from the generator's cache) the training and evaluation sets."""
    gen = config.data.generator()
    train = gen.make_set(config.train_ids(), config.train_images_per_identity)
    evaluation = gen.make_set(config.eval_ids(), config.eval_images_per_identity)
    return train, evaluation


def evaluate_backbone(
    backbone: nn.Module,
    faces: FaceSet,
    genuine_pairs: int,
    impostor_pairs: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """1:1 verification of ``backbone`` on ``faces`` (unseen identities): accuracy (10-fold, LFW
    protocol), AUROC and TAR@FAR for the FARs the pair count supports."""
    from federated_core.evaluation import verification_report
    from federated_core.models import embed

    emb = embed(backbone, faces, device=device)
    return verification_report(emb, faces.labels, num_genuine=genuine_pairs, num_impostor=impostor_pairs, seed=seed)


def train_backbone(
    config: PretrainConfig,
    train: FaceSet,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, list[float]]:
    """Train φ0 with a margin-softmax head over the classes of ``train`` (labels re-indexed)."""
    from federated_core.models import build_backbone
    from federated_core.models.heads import MarginHead

    device = torch.device(device)
    gen = torch.Generator().manual_seed(config.seed)
    # Parameter initialisation draws from torch's default generator: fork it so the seed is
    # scoped to this call and the caller's global RNG state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = build_backbone(config.backbone, embedding_dim=config.embedding_dim, resolution=config.resolution)
        classes, local_labels = torch.unique(train.labels, return_inverse=True)
        head = MarginHead(len(classes), config.embedding_dim, kind=config.head, s=config.scale, m=config.margin)
    backbone.to(device).train()
    head.to(device).train()
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    n = len(train)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup = min(steps_per_epoch, total_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: (
            (step + 1) / max(1, warmup)
            if step < warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
        ),
    )
    losses: list[float] = []
    bar = tqdm(total=total_steps, desc="pretrain φ0", disable=not progress, leave=False)
    for _epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        epoch_loss, seen = 0.0, 0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            x = train.images[idx].to(device).float().div_(127.5).sub_(1.0)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip.to(device)] = x[flip.to(device)].flip(-1)
            y = local_labels[idx].to(device)
            loss = head(backbone(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            epoch_loss += loss.item() * len(idx)
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(epoch_loss / seen)
    bar.close()
    backbone.eval()
    return backbone, losses


PHI0_FILES = ("backbone.safetensors", "metrics.json")
EVALUATION_FIELDS = (
    "eval_identities",
    "eval_identity_list",
    "eval_images_per_identity",
    "eval_genuine_pairs",
    "eval_impostor_pairs",
)


def pretrain(
    config: PretrainConfig | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> PretrainResult:
    """Train (or load from ``cache_dir``) φ0 and evaluate it on unseen identities.

    The checkpoint is ``cache_dir/phi0-<fingerprint>/backbone.safetensors`` with the config in its
    metadata and ``metrics.json`` beside it, both recorded in the folder's ``checksums.json``; a
    later call with the same config loads them after checking every byte. A missing, truncated or
    altered file is retrained with a `CachedFileWarning` naming it.
    """
    from federated_core.models import load_backbone, state_dict_to_safetensors

    config = config or PretrainConfig()
    folder = None if cache_dir is None else Path(cache_dir) / f"phi0-{config.fingerprint()}"
    cache_problems: list[str] = []
    if folder is not None and folder.is_dir():
        problems = verify_checksums(folder, PHI0_FILES)
        if not problems:
            backbone, saved = load_backbone(folder / "backbone.safetensors", device=device)
            metrics = json.loads((folder / "metrics.json").read_text())
            if metrics.get("evaluation_fingerprint") != config.evaluation_fingerprint():  # same weights, other test
                evaluation = config.data.generator().make_set(config.eval_ids(), config.eval_images_per_identity)
                metrics.update(
                    evaluate_backbone(
                        backbone,
                        evaluation,
                        config.eval_genuine_pairs,
                        config.eval_impostor_pairs,
                        seed=config.seed,
                        device=device,
                    )
                )
                metrics["evaluation_fingerprint"] = config.evaluation_fingerprint()
                (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
                write_checksums(folder, PHI0_FILES)
            return PretrainResult(backbone, saved, metrics, folder / "backbone.safetensors", cached=True)
        warnings.warn(f"cached φ0 not used, it is retrained: {'; '.join(problems)}", CachedFileWarning, stacklevel=2)
        cache_problems = problems

    train, evaluation = build_sets(config)
    backbone, losses = train_backbone(config, train, device=device, progress=progress)
    metrics = evaluate_backbone(
        backbone, evaluation, config.eval_genuine_pairs, config.eval_impostor_pairs, seed=config.seed, device=device
    )
    metrics["train_loss_per_epoch"] = losses
    metrics["train_identities"] = int(config.train_ids().numel())
    metrics["train_images"] = len(train)
    metrics["evaluation_fingerprint"] = config.evaluation_fingerprint()
    model_config = {
        "name": config.backbone,
        "embedding_dim": config.embedding_dim,
        "resolution": config.resolution,
        "pretrain": config.to_dict(),
    }
    path = None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "backbone.safetensors"
        state_dict_to_safetensors(path, backbone, model_config)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        write_checksums(folder, PHI0_FILES)
    return PretrainResult(backbone, model_config, metrics, path, cached=False, cache_problems=cache_problems)
