"""Inverting a multi-epoch FedAvg update with epoch-order-invariant priors (Dimitrov et al. 2022,
"Data Leakage in Federated Averaging", TMLR).

A client that trains ``E`` local epochs goes over the *same* ``N`` images ``E`` times, each epoch
in a fresh shuffled order the server does not see, in batches of ``B``: ``E·⌈N/B⌉`` SGD steps
(`torch.optim.SGD`: momentum carried across epochs, as `federated_core.engine.local_sgd` does).
The attacker simulates those steps differentiably on dummy images (`attacks.gradient.unrolled_update`,
Geiping et al. 2020 §6) and matches the simulated parameter difference to the observed one with
Inverting Gradients' cosine distance plus total variation. How the dummies of the ``E`` epochs
relate is the ``epoch_prior``:

* ``"none"``: no epoch model here (the caller's own single-step or known-order attack).
* ``"independent"``: every epoch has its own copy of ``N`` dummies (so every step has its own
  batch of dummies, nothing ties them). The baseline the priors are measured against.
* ``"shared"``: one set of ``N`` dummies re-used in every epoch (Dimitrov et al.'s observation
  that the epochs see the same images), epoch 0 in the dummies' own order (without loss of
  generality) and every later epoch shuffled by the attacker's seeded *guess* of the client's
  permutation. Each restart draws its own guess and the restart with the lowest final objective
  is kept, so restarts double as a small search over orders. With one batch per epoch the order
  inside the batch does not matter and the guess is exact.

  The copies of ``"independent"`` / ``"dimitrov"`` are walked in the same guessed orders (copy
  ``e``'s dummy ``i`` keeps dummy ``i``'s label). With one label for all images (one identity)
  the guess does not matter for them: a free copy can put any image at any place. With several
  labels it fixes which labels share a batch, as it does for ``"shared"``.
* ``"dimitrov"``: per-epoch copies as in ``"independent"``, tied by Dimitrov et al.'s *epoch
  order-invariant prior*: a permutation-invariant summary of each epoch's set of images (here the
  mean image, the pooling of their ``l2_mean`` configuration) must agree across epochs, in
  squared L2 averaged over all ordered pairs of epochs, times ``weight``. It needs no guess of the
  order: any reordering of a copy leaves its summary unchanged.

With the per-epoch copies, the reconstruction of image ``i`` is the mean of the copies after each
later copy has been matched to the first one by a one-to-one assignment (Hungarian on pixel MSE,
`attacks.metrics.match_reconstructions`), as Dimitrov et al. combine their epochs; ``N`` images
come back in every mode, never ``E·N``, so no image is counted once per epoch.

With one epoch (``E = 1``) the three options coincide (one copy, nothing to tie, the order of the
only epoch is free) and the attack *is* `attacks.gradient.inverting_gradients` on the single
epoch's unrolled steps; with one batch as well it is the one-step attack exactly.

Weight decay is not simulated step by step: a caller that projects the broadcast ``θ_0`` out of
the observed update (as `attacks.logged_update` does) has removed its dominant, data-independent
direction, and the small remainder is part of the model's mismatch.

Threat model: the attacker knows ``θ_0``, the optimiser (lr, momentum), ``N``, ``E`` and ``B``; not
the order of any epoch, not the images. Every score is a lower bound on what such an attacker can
do (a longer budget, more restarts, label recovery per step or an image prior can only add).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from attacks.gradient import (
    InvertingGradientsConfig,
    LocalSgd,
    inverting_gradients,
    total_variation,
    unrolled_update,
)
from attacks.metrics import match_reconstructions

__all__ = [
    "EPOCH_PRIORS",
    "EpochSchedule",
    "MultistepOutput",
    "check_epoch_prior",
    "combine_epoch_copies",
    "epoch_order_invariant_prior",
    "invert_fedavg_update",
]

EPOCH_PRIORS = ("none", "independent", "shared", "dimitrov")
_ORDER_SEED_OFFSET = 1_000_003  # the order guesses' generator, apart from the images' one


def check_epoch_prior(epoch_prior: str, weight: float) -> None:
    """ValueError naming the value when ``epoch_prior`` is not one of `EPOCH_PRIORS` or the
    prior's weight is not a finite number >= 0."""
    if not isinstance(epoch_prior, str) or epoch_prior not in EPOCH_PRIORS:
        raise ValueError(f"epoch_prior must be one of {list(EPOCH_PRIORS)}, got {epoch_prior!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"epoch_prior_weight must be a finite number >= 0, got {weight!r}")


@dataclass(frozen=True)
class EpochSchedule:
    """The client's local training as the attacker models it: ``epochs`` passes over ``images``
    images in batches of ``batch_size`` (the last one smaller when ``B`` does not divide ``N``),
    `torch.optim.SGD` at ``lr`` with ``momentum`` (carried across epochs)."""

    images: int
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0

    def __post_init__(self) -> None:
        for name in ("images", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @property
    def steps(self) -> int:
        """``E·⌈N/B⌉``, the client's number of local steps."""
        return self.epochs * math.ceil(self.images / self.batch_size)

    def plan(self, orders: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The batches of every step: epoch ``e`` takes consecutive slices of ``orders[e]``
        (indices into the dummy tensor)."""
        if len(orders) != self.epochs:
            raise ValueError(f"{len(orders)} epoch orders for {self.epochs} epochs")
        return tuple(order[s : s + self.batch_size] for order in orders for s in range(0, self.images, self.batch_size))


@dataclass(frozen=True, eq=False)
class _PlannedSgd(LocalSgd):
    """`LocalSgd` whose steps take the given batches (``plan``) instead of consecutive cycling
    ones, so `unrolled_update` / `inverting_gradients` simulate shuffled epochs."""

    plan: tuple[torch.Tensor, ...] = ()

    def batches(self, n: int) -> list[torch.Tensor]:
        """The planned batches (``n``, the dummy count, is checked against them)."""
        top = max(int(b.max()) for b in self.plan)
        if top >= n:
            raise ValueError(f"the plan indexes image {top} of {n} dummies")
        return list(self.plan)


def _planned_sgd(schedule: EpochSchedule, plan: tuple[torch.Tensor, ...]) -> _PlannedSgd:
    return _PlannedSgd(
        steps=len(plan), batch_size=schedule.batch_size, lr=schedule.lr, momentum=schedule.momentum, plan=plan
    )


def epoch_order_invariant_prior(images: torch.Tensor, epochs: int) -> torch.Tensor:
    """Dimitrov et al.'s epoch order-invariant prior with mean pooling: ``images`` holds ``E``
    consecutive copies of ``N`` images; each copy is summarised by its mean image (invariant to
    the copy's order) and the summaries are compared in mean squared difference over all ordered
    pairs of epochs (the pairs of an epoch with itself count zero). Differentiable."""
    if epochs < 1 or images.shape[0] % epochs:
        raise ValueError(f"{images.shape[0]} images are not {epochs} equal epoch copies")
    pooled = images.reshape(epochs, images.shape[0] // epochs, *images.shape[1:]).mean(1).flatten(1)
    return (pooled.unsqueeze(0) - pooled.unsqueeze(1)).pow(2).mean()


def combine_epoch_copies(images: torch.Tensor, epochs: int) -> torch.Tensor:
    """One reconstruction per image from ``E`` consecutive copies: each later copy is put in the
    first copy's order by a one-to-one assignment (min total pixel MSE,
    `attacks.metrics.match_reconstructions`), then the copies are averaged."""
    if epochs < 1 or images.shape[0] % epochs:
        raise ValueError(f"{images.shape[0]} images are not {epochs} equal epoch copies")
    copies = images.detach().reshape(epochs, images.shape[0] // epochs, *images.shape[1:])
    aligned = [copies[0]] + [copies[e][match_reconstructions(copies[e], copies[0])] for e in range(1, epochs)]
    return torch.stack(aligned).mean(0)


@dataclass
class MultistepOutput:
    """What `invert_fedavg_update` returns.

    Attributes:
        images: ``[N, 3, R, R]`` in ``[-1, 1]``, one per client image (copies combined).
        epoch_images: the optimised dummies of the kept restart (``N`` shared, or ``E·N`` copies).
        labels: the label of each of ``images``.
        losses: objective per iteration of the kept restart.
        restart_losses: final objective (cosine + TV + prior) of each restart.
        restart_matching: final cosine distance + TV of each restart (the prior left out).
        best: index of the kept restart (lowest ``restart_losses``).
        orders: the epoch orders the kept restart simulated (indices into ``epoch_images``).
        seconds, iterations: wall time and gradient-matching evaluations.
    """

    images: torch.Tensor
    epoch_images: torch.Tensor
    labels: torch.Tensor
    losses: list[float]
    restart_losses: list[float]
    restart_matching: list[float]
    best: int
    orders: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0


def _epoch_orders(epoch_prior: str, schedule: EpochSchedule, guess: torch.Generator) -> list[torch.Tensor]:
    """Indices of each epoch's images in the dummy tensor: epoch 0 in order, later epochs a
    guessed permutation; ``"shared"``: of the same ``N`` dummies; copies: of copy ``e``."""
    n = schedule.images
    perms = [torch.arange(n)] + [torch.randperm(n, generator=guess) for _ in range(1, schedule.epochs)]
    if epoch_prior == "shared":
        return perms
    return [e * n + perm for e, perm in enumerate(perms)]


def _cosine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``1 − cos(a, b)`` over all the parameters of ``b`` as one vector (Geiping et al. Eq. 4)."""
    names = list(b)
    dot = torch.stack([(a[n] * b[n]).sum() for n in names]).sum()
    na = torch.stack([a[n].pow(2).sum() for n in names]).sum().sqrt()
    nb = torch.stack([b[n].pow(2).sum() for n in names]).sum().sqrt()
    return 1.0 - dot / (na * nb).clamp_min(1e-12)


@dataclass
class _Problem:
    """Everything one restart needs: the model, start state, target, labels of the dummies, the
    simulated steps, the attack's settings and the prior (``None``: off)."""

    model: nn.Module
    start: Mapping[str, torch.Tensor]
    target: dict[str, torch.Tensor]
    labels: torch.Tensor
    sgd: LocalSgd
    config: InvertingGradientsConfig
    prior: Callable[[torch.Tensor], torch.Tensor] | None
    prior_weight: float
    device: torch.device

    def objective(self, x: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(full objective, cosine distance + TV) of the dummies ``x``."""
        theta0 = {n: t.detach().to(self.device).float().requires_grad_(True) for n, t in self.start.items()}
        delta = unrolled_update(self.model, theta0, x, self.labels, self.sgd, create_graph=create_graph)
        matching = _cosine(delta, self.target) + self.config.tv_weight * total_variation(x)
        if self.prior is None:
            return matching, matching
        return matching + self.prior_weight * self.prior(x), matching


def _run_restart(problem: _Problem, x0: torch.Tensor, restart: int) -> tuple[torch.Tensor, list[float]]:
    """Inverting Gradients' optimiser on one start ``x0``: Adam on the signed gradient, learning
    rate ÷10 at 3/8, 5/8, 7/8 of the iterations, images boxed to ``[-1, 1]``."""
    from tqdm.auto import tqdm

    cfg = problem.config
    x = x0.clone().to(problem.device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    milestones = [int(cfg.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    history = []
    label = f"multi-epoch inversion (restart {restart + 1})"
    for _ in tqdm(range(cfg.iterations), desc=label, disable=not cfg.progress, leave=False):
        loss, _ = problem.objective(x, create_graph=True)
        (grad,) = torch.autograd.grad(loss, [x])
        x.grad = grad.sign() if cfg.signed else grad
        opt.step()
        sched.step()
        if cfg.boxed:
            with torch.no_grad():
                x.clamp_(-1, 1)
        history.append(float(loss.detach()))
    return x.detach(), history


def _check_problem(
    start: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    image_shape: tuple[int, int, int, int],
    schedule: EpochSchedule,
) -> None:
    """ValueError when the observed update, the labels or the image shape do not fit."""
    if not observed:
        raise ValueError("the observed update is empty: no parameter difference to invert")
    for n, t in observed.items():
        if n not in start:
            raise ValueError(f"observed update names parameter {n!r}, which the start state lacks")
        if tuple(t.shape) != tuple(start[n].shape):
            raise ValueError(
                f"observed update of {n!r} has shape {tuple(t.shape)}, the parameter {tuple(start[n].shape)}"
            )
    if image_shape[0] != schedule.images:
        raise ValueError(f"image_shape has {image_shape[0]} images, the schedule {schedule.images}")
    if labels.shape != (schedule.images,):
        raise ValueError(f"labels must be [{schedule.images}], got shape {tuple(labels.shape)}")


def _single_epoch(
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    image_shape: tuple[int, int, int, int],
    schedule: EpochSchedule,
    config: InvertingGradientsConfig,
    device: torch.device,
) -> MultistepOutput:
    """One epoch: every option is Inverting Gradients on that epoch's unrolled steps, the
    dummies in their own order (free: nothing else pins it)."""
    orders = [torch.arange(schedule.images)]
    sgd = _planned_sgd(schedule, schedule.plan(orders))
    out = inverting_gradients(model, start, observed, labels, image_shape, sgd, config, device=device)
    best = min(range(len(out.restart_losses)), key=out.restart_losses.__getitem__)
    return MultistepOutput(
        images=out.images,
        epoch_images=out.images,
        labels=out.labels,
        losses=out.losses,
        restart_losses=list(out.restart_losses),
        restart_matching=list(out.restart_losses),
        best=best,
        orders=orders,
        seconds=out.seconds,
        iterations=out.iterations,
    )


def invert_fedavg_update(
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    image_shape: tuple[int, int, int, int],
    schedule: EpochSchedule,
    config: InvertingGradientsConfig,
    epoch_prior: str = "shared",
    prior_weight: float = 1.0,
    device: str | torch.device = "cpu",
) -> MultistepOutput:
    """Reconstruct a client's ``N`` images from its ``E``-epoch update ``observed`` (``θ_T −
    θ_0`` for a subset of ``start``'s parameters), simulating the epochs as ``epoch_prior`` says
    (``"independent"``, ``"shared"`` or ``"dimitrov"``; see the module's docstring).

    ``model(x, y) -> [B]`` per-example losses (the engine's contract); ``labels``: the label of
    each of the ``N`` dummies (copies inherit them); ``config``: Inverting Gradients' budget,
    TV weight and seed (its ``bn_prior_weight`` is not used here); ``prior_weight``: the weight
    of the epoch order-invariant prior (``"dimitrov"`` only; 0 makes it ``"independent"``).
    Deterministic for a given ``config.seed``."""
    check_epoch_prior(epoch_prior, prior_weight)
    if epoch_prior == "none":
        raise ValueError("epoch_prior 'none' has no multi-epoch model: use the single-step attack")
    if config.bn_prior_weight > 0:
        raise ValueError(
            f"the multi-epoch inversion has no BatchNorm prior, got bn_prior_weight={config.bn_prior_weight}"
        )
    _check_problem(start, observed, labels, image_shape, schedule)
    dev = torch.device(device)
    model = model.to(dev).train()
    if schedule.epochs == 1:
        return _single_epoch(model, start, observed, labels, image_shape, schedule, config, dev)
    copies = 1 if epoch_prior == "shared" else schedule.epochs
    tied = epoch_prior == "dimitrov" and prior_weight > 0
    problem = _Problem(
        model=model,
        start=start,
        target={n: t.detach().to(dev).float() for n, t in observed.items()},
        labels=labels.repeat(copies).to(dev),
        sgd=LocalSgd(),
        config=config,
        prior=(lambda x: epoch_order_invariant_prior(x, schedule.epochs)) if tied else None,
        prior_weight=float(prior_weight),
        device=dev,
    )
    gen = torch.Generator().manual_seed(config.seed)
    guess = torch.Generator().manual_seed(config.seed + _ORDER_SEED_OFFSET)
    runs = []
    t0 = time.perf_counter()
    for r in range(config.restarts):
        orders = _epoch_orders(epoch_prior, schedule, guess)
        problem.sgd = _planned_sgd(schedule, schedule.plan(orders))
        x0 = torch.randn((copies * image_shape[0], *image_shape[1:]), generator=gen).clamp(-1, 1)
        x, history = _run_restart(problem, x0, r)
        full, matching = problem.objective(x, create_graph=False)
        runs.append((float(full.detach()), float(matching.detach()), x.cpu(), history, orders))
    best = min(range(len(runs)), key=lambda i: runs[i][0])
    x = runs[best][2]
    return MultistepOutput(
        images=x if copies == 1 else combine_epoch_copies(x, schedule.epochs),
        epoch_images=x,
        labels=labels.cpu(),
        losses=runs[best][3],
        restart_losses=[r[0] for r in runs],
        restart_matching=[r[1] for r in runs],
        best=best,
        orders=runs[best][4],
        seconds=time.perf_counter() - t0,
        iterations=config.iterations * config.restarts,
    )
