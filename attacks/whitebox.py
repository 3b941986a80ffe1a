"""White-box embedding inversion: optimise images whose embedding points at an observed vector.

An attacker who holds the observed backbone F (weights and gradients: a white box) can search
for an image the recogniser itself maps onto an observed vector v (a class center, a prototype,
a released template), instead of — or starting from — a decoder's one-shot guess. The objective
is the representation-inversion objective of Mahendran & Vedaldi (2015, "Understanding deep
image representations by inverting them": a loss between Φ(x) and the target representation
plus a total-variation image prior) with the cosine loss of face templates, as in Zhmoginov &
Sandler (2016, "Inverting face embeddings with convolutional neural networks", §3: gradient
descent from a guiding image with a TV term):

    minimise_x   1 − cos(F(2x − 1), v)  +  λ_TV · TV(x)      subject to  x ∈ [0, 1]^{3×R×R}

with TV the anisotropic total variation (mean absolute difference of neighbouring pixels; the
prior of Geiping et al. 2020) per image. Adam with step decay (÷10 at 3/8, 5/8 and 7/8 of
``iterations``, the schedule of Inverting Gradients), the box kept by projection (clamping) after
every step. Restart 0 starts from the initialisation itself — the mean face, or the decoder's
output for v when a decoder is given — and restarts 1, 2, ... from it plus seeded Gaussian
noise; per target the restart with the lowest final objective is kept. Every target is
optimised independently (the summed loss separates, Adam is per-element and F runs in eval
mode), so results do not depend on how targets are batched.

**A lower bound.** A fixed budget, one image prior and a local optimiser: an attacker with the
same access and more iterations, restarts, a learned face prior or a generator's latent space
can do better. A number from this attack bounds what this access allows from below, never from
above; `WhiteBoxResult.settings` states the budget it was obtained with.

`compare_attacks` puts two or more attacks on the *same* target vectors side by side by a score
the caller supplies (images -> one score per target), paired per target with a bootstrap over
independent units, so a pipeline can state which attack is stronger on a kind of vector.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from attacks.inversion import EmbeddingDecoder, feature_cosine, frozen, invert

__all__ = [
    "WhiteBoxConfig",
    "WhiteBoxResult",
    "whitebox_invert",
    "total_variation_per_image",
    "AttackComparison",
    "compare_attacks",
]

INITS = ("mean_face", "decoder")
DECAY_AT = (3 / 8, 5 / 8, 7 / 8)


@dataclass(frozen=True)
class WhiteBoxConfig:
    """Budget and prior of the white-box attack (module docstring). ``iterations``: Adam steps
    per restart; ``restarts``: starts per target (restart 0 from ``init`` as is, the others from
    ``init`` + ``restart_noise`` · N(0, 1) in pixel units, clamped to [0, 1]); ``init``:
    ``"mean_face"`` or ``"decoder"``; ``batch_size``: targets optimised together."""

    iterations: int = 200
    restarts: int = 3
    lr: float = 0.05
    tv_weight: float = 0.05
    init: str = "mean_face"
    restart_noise: float = 0.1
    batch_size: int = 64
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("iterations", "restarts", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("tv_weight", "restart_noise"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")

    def settings(self) -> dict[str, Any]:
        """The budget, for the report: what a result was obtained with."""
        return {
            "iterations": self.iterations,
            "restarts": self.restarts,
            "steps_per_target": self.iterations * self.restarts,
            "lr": self.lr,
            "lr_decay": "x0.1 at " + ", ".join(f"{f:g}" for f in DECAY_AT) + " of the iterations",
            "tv_weight": self.tv_weight,
            "init": self.init,
            "restart_noise": self.restart_noise,
            "seed": self.seed,
            "bound": "lower bound on what white-box access to the observed model allows",
        }


@dataclass
class WhiteBoxResult:
    """Per target ``i``: the kept image ``images[i]`` (``[N, 3, R, R]`` in ``[0, 1]``, CPU),
    its ``cosine`` cos(F(x), v), its ``objective`` (1 − cos + λ_TV·TV, what was minimised), the
    cosine of the initialisation ``init_cosine``, every restart's final objective
    ``restart_objectives[r, i]`` and which one was kept (``best_restart``)."""

    images: torch.Tensor
    cosine: np.ndarray
    objective: np.ndarray
    init_cosine: np.ndarray
    restart_objectives: np.ndarray
    best_restart: np.ndarray
    settings: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "num_targets": int(self.images.shape[0]),
            "mean_cosine": float(self.cosine.mean()),
            "mean_init_cosine": float(self.init_cosine.mean()),
            "mean_objective": float(self.objective.mean()),
            "seconds": self.seconds,
            **self.settings,
        }


def total_variation_per_image(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of each image of ``[N, C, H, W]``: the mean absolute
    difference of vertically plus of horizontally neighbouring pixels (Geiping et al. 2020's
    prior, per image instead of over the batch). Returns ``[N]``."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def _check_targets(targets: torch.Tensor) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor) or targets.dim() != 2 or targets.shape[0] == 0:
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"targets must be a non-empty [N, d] tensor, got {shape}")
    if not bool(torch.isfinite(targets).all()):
        raise ValueError("targets contain NaN or inf")
    norms = targets.float().norm(dim=1)
    if bool((norms == 0).any()):
        raise ValueError(f"targets rows {torch.nonzero(norms == 0).flatten()[:5].tolist()} have zero norm")
    return F.normalize(targets.float(), dim=1)


def _initial_images(
    config: WhiteBoxConfig,
    v: torch.Tensor,
    mean_face: torch.Tensor | None,
    decoder: EmbeddingDecoder | None,
    device: torch.device,
) -> torch.Tensor:
    """Restart 0's images ``[N, 3, R, R]`` in [0, 1]: the mean face for every target, or the
    decoder's output for each target."""
    if config.init == "decoder":
        if decoder is None:
            raise ValueError("init='decoder' needs a decoder")
        if decoder.embedding_dim != v.shape[1]:
            raise ValueError(f"targets have d={v.shape[1]}, the decoder expects d={decoder.embedding_dim}")
        return invert(decoder, v, device=device)
    if mean_face is None:
        raise ValueError("init='mean_face' needs a mean_face [3, R, R] in [0, 1]")
    face = mean_face.float().cpu()
    face = face[0] if face.dim() == 4 and face.shape[0] == 1 else face
    if face.dim() != 3 or face.shape[0] != 3 or face.shape[1] != face.shape[2]:
        raise ValueError(f"mean_face must be [3, R, R], got shape {tuple(mean_face.shape)}")
    if not bool(torch.isfinite(face).all()) or float(face.min()) < 0 or float(face.max()) > 1:
        raise ValueError("mean_face must be finite with values in [0, 1]")
    return face.expand(v.shape[0], *face.shape).clone()


def _noise_seed(seed: int, restart: int, target: int) -> int:
    return int(np.random.SeedSequence([seed, restart, target]).generate_state(1)[0])


def _restart_start(x0: torch.Tensor, first: int, restart: int, config: WhiteBoxConfig) -> torch.Tensor:
    """``x0`` (rows ``first, first+1, ...`` of all targets) for restart 0; for later restarts plus
    noise seeded by ``(seed, restart, target index)``, so the result does not depend on batching."""
    if restart == 0 or config.restart_noise == 0:
        return x0.clone()
    noise = torch.stack(
        [
            torch.randn(
                x0.shape[1:], generator=torch.Generator().manual_seed(_noise_seed(config.seed, restart, first + i))
            )
            for i in range(x0.shape[0])
        ]
    )
    return (x0 + config.restart_noise * noise).clamp(0, 1)


def _objective(
    model: nn.Module, x: torch.Tensor, v: torch.Tensor, tv_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per-target objective 1 − cos + λ·TV, per-target cos)``."""
    cos = feature_cosine(model, x, v)
    return 1 - cos + tv_weight * total_variation_per_image(x), cos


def _optimise(model: nn.Module, start: torch.Tensor, v: torch.Tensor, config: WhiteBoxConfig) -> torch.Tensor:
    """One restart: Adam on the summed per-target objective with step decay, projected to the box."""
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=config.lr)
    milestones = sorted({max(1, int(config.iterations * f)) for f in DECAY_AT})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    for _ in range(config.iterations):
        loss, _ = _objective(model, x, v, config.tv_weight)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def _attack_batch(
    model: nn.Module, x0: torch.Tensor, v: torch.Tensor, first: int, config: WhiteBoxConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All restarts for one batch: ``(kept images, their cos, every restart's objective [R, B],
    index of the kept restart)``."""
    kept = torch.zeros(x0.shape[0], dtype=torch.int64)
    best_x = _optimise(model, _restart_start(x0.cpu(), first, 0, config).to(x0.device), v, config)
    with torch.no_grad():
        best_obj, best_cos = _objective(model, best_x, v, config.tv_weight)
    objs = [best_obj.cpu()]
    for r in range(1, config.restarts):
        x = _optimise(model, _restart_start(x0.cpu(), first, r, config).to(x0.device), v, config)
        with torch.no_grad():
            obj, cos = _objective(model, x, v, config.tv_weight)
        objs.append(obj.cpu())
        better = obj < best_obj
        best_x = torch.where(better[:, None, None, None], x, best_x)
        best_obj, best_cos = torch.where(better, obj, best_obj), torch.where(better, cos, best_cos)
        kept[better.cpu()] = r
    return best_x.cpu(), best_cos.cpu(), torch.stack(objs), kept


def whitebox_invert(
    model: nn.Module,
    targets: torch.Tensor,
    config: WhiteBoxConfig | None = None,
    mean_face: torch.Tensor | None = None,
    decoder: EmbeddingDecoder | None = None,
    device: str | torch.device = "cpu",
) -> WhiteBoxResult:
    """Optimise one image per target vector against the observed model (module docstring).

    Args:
        model: the observed backbone F (input ``[B, 3, R, R]`` in ``[-1, 1]``), used frozen.
        targets: ``[N, d]`` observed vectors (normalised here; finite, no zero row).
        config: budget and prior (default `WhiteBoxConfig()`).
        mean_face: ``[3, R, R]`` in ``[0, 1]``, the start for ``init="mean_face"`` (e.g. the
            mean of the attacker's public faces).
        decoder: the start for ``init="decoder"``: its reconstruction of each target.

    Returns a `WhiteBoxResult`; its ``cosine`` is a lower bound on what white-box access allows.
    """
    config = config or WhiteBoxConfig()
    device = torch.device(device)
    v = _check_targets(targets)
    x0_all = _initial_images(config, v, mean_face, decoder, device)
    t0 = time.perf_counter()
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    init_cos: list[torch.Tensor] = []
    with frozen(model, device):
        with torch.no_grad():
            d_model = model(x0_all[:1].to(device) * 2 - 1).shape[-1]
        if d_model != v.shape[1]:
            raise ValueError(f"targets have d={v.shape[1]}, the model embeds to d={d_model}")
        starts = range(0, v.shape[0], config.batch_size)
        for s in tqdm(starts, desc="white-box inversion", disable=not config.progress, leave=False):
            x0, vb = x0_all[s : s + config.batch_size].to(device), v[s : s + config.batch_size].to(device)
            with torch.no_grad():
                init_cos.append(feature_cosine(model, x0, vb).cpu())
            parts.append(_attack_batch(model, x0, vb, s, config))
    images, cos, objs, kept = (torch.cat([p[i] for p in parts], dim=1 if i == 2 else 0) for i in range(4))
    rows = torch.arange(objs.shape[1])
    return WhiteBoxResult(
        images=images,
        cosine=cos.numpy().astype(np.float64),
        objective=objs[kept, rows].numpy().astype(np.float64),
        init_cosine=torch.cat(init_cos).numpy().astype(np.float64),
        restart_objectives=objs.numpy().astype(np.float64),
        best_restart=kept.numpy(),
        settings=config.settings(),
        seconds=time.perf_counter() - t0,
    )


@dataclass
class AttackComparison:
    """Attacks on the same targets scored by one scorer (higher is stronger unless the caller said
    otherwise). ``stronger``: the attack with the best mean score (None: equal means);
    ``difference``: its mean paired advantage over the runner-up, with a percentile-bootstrap
    ``interval`` over independent units; ``resolved``: the interval excludes 0 (otherwise the
    data do not tell the two apart). ``wins``: targets on which each attack scored strictly
    best; ``ties``: targets with no strict winner."""

    scores: dict[str, np.ndarray]
    means: dict[str, float]
    wins: dict[str, int]
    ties: int
    stronger: str | None
    runner_up: str | None
    difference: float
    interval: tuple[float, float]
    resolved: bool
    higher_is_better: bool
    unit_name: str
    num_units: int
    confidence: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "means": dict(self.means),
            "wins": dict(self.wins),
            "ties": self.ties,
            "stronger": self.stronger if self.resolved else None,
            "best_mean": self.stronger,
            "runner_up": self.runner_up,
            "difference": self.difference,
            "interval": list(self.interval),
            "resolved": self.resolved,
            "higher_is_better": self.higher_is_better,
            "unit": self.unit_name,
            "num_units": self.num_units,
            "confidence": self.confidence,
            "notes": list(self.notes),
        }


def _scored(
    images: Mapping[str, torch.Tensor], scorer: Callable[[torch.Tensor], Any], sign: float
) -> dict[str, np.ndarray]:
    """Each attack's per-target scores (sign-flipped so that higher is stronger), checked."""
    if len(images) < 2:
        raise ValueError(f"compare_attacks needs at least two attacks, got {list(images)}")
    sizes = {name: int(x.shape[0]) for name, x in images.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every attack must give one image per target (the same targets), got {sizes}")
    out = {}
    for name, x in images.items():
        raw = scorer(x)
        s = np.asarray(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw, dtype=np.float64)
        if s.shape != (sizes[name],):
            raise ValueError(f"the scorer returned shape {s.shape} for attack {name!r}, expected ({sizes[name]},)")
        if not np.isfinite(s).all():
            raise ValueError(f"the scorer returned NaN or inf for attack {name!r}")
        out[name] = sign * s
    return out


def _paired_interval(
    diff: np.ndarray, units: np.ndarray, n_bootstrap: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap of the mean paired difference, resampling whole units (cluster bootstrap)."""
    uniq, inverse = np.unique(units, return_inverse=True)
    sums = np.bincount(inverse, weights=diff, minlength=len(uniq))
    counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), size=(n_bootstrap, len(uniq)))
    stats = sums[draws].sum(1) / counts[draws].sum(1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def compare_attacks(
    images: Mapping[str, torch.Tensor],
    scorer: Callable[[torch.Tensor], Any],
    units: Sequence[Any] | None = None,
    unit_name: str = "target",
    higher_is_better: bool = True,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> AttackComparison:
    """Which attack is stronger on the same target vectors, by ``scorer`` (images ``[N, ...]`` ->
    ``[N]`` scores, e.g. the independent evaluator's identity similarity).

    ``images``: attack name -> its ``[N, 3, R, R]`` reconstructions, row ``i`` of every attack for
    the same target. Scores are paired per target; the interval of the mean difference (best
    mean minus runner-up) resamples ``units`` (the independent unit of each target, DESIGN §8;
    default: each target its own). Only attacks on the same targets under the same scorer are
    compared — never rates of different attack families.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be an integer >= 1, got {n_bootstrap!r}")
    sign = 1.0 if higher_is_better else -1.0
    scores = _scored(images, scorer, sign)
    names = list(scores)
    n = len(scores[names[0]])
    unit_arr = np.arange(n) if units is None else np.asarray(list(units))
    if unit_arr.shape != (n,):
        raise ValueError(f"units has {len(unit_arr)} entries for {n} targets")
    means = {k: float(v.mean()) for k, v in scores.items()}
    order = sorted(names, key=lambda k: means[k], reverse=True)
    table = np.stack([scores[k] for k in names])
    top = table.max(0)
    strict = (table == top).sum(0) == 1
    wins = {k: int(((table[i] == top) & strict).sum()) for i, k in enumerate(names)}
    diff = scores[order[0]] - scores[order[1]]
    lo, hi = _paired_interval(diff, unit_arr, n_bootstrap, confidence, seed)  # diff >= 0 on average
    tied = means[order[0]] == means[order[1]]
    notes = [] if len(np.unique(unit_arr)) > 1 else ["one independent unit: the interval is degenerate"]
    return AttackComparison(
        scores={k: sign * v for k, v in scores.items()},
        means={k: sign * m for k, m in means.items()},
        wins=wins,
        ties=int((~strict).sum()),
        stronger=None if tied else order[0],
        runner_up=None if tied else order[1],
        difference=float(diff.mean()),
        interval=(lo, hi),
        resolved=not tied and lo > 0,
        higher_is_better=higher_is_better,
        unit_name=unit_name,
        num_units=len(np.unique(unit_arr)),
        confidence=confidence,
        notes=notes,
    )
