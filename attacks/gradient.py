"""Gradient-inversion probes against the backbone updates clients send.

Every method here sends a backbone update (the new local backbone, whose difference to the
broadcast one the server sees). The probes ask what that difference reveals about the client's
images:

* **DLG** (Zhu et al. 2019, "Deep Leakage from Gradients", Eq. 4): dummy images (and soft dummy
  labels) optimised with L-BFGS so that their gradient matches the observed one in squared L2.
* **iDLG** label recovery (Zhao et al. 2020): the true label's row of the last layer's gradient
  points against all other rows. Zhao et al. read it off the sign of a linear layer on ReLU
  features; for cosine heads (CosFace/ArcFace), whose rows are tangent to the sphere, we use the
  same fact as "the row whose gradient is anti-aligned with the others"
  (``argmin_c Σ_{c'≠c} cos(g_c, g_c')``), exact for one sample and for one-identity batches.
  **LLG** (Wainakh et al. 2022) label *counts* for batches (`attacks.labels`; both re-exported).
* **BatchNorm-statistics prior** (Yin et al. 2021, GradInversion's ``R_BN``): optional, for
  backbones with BatchNorm; the attacker knows the running statistics (it sent the model).
* **Inverting Gradients** (Geiping et al. 2020, Eq. 4): ``1 − cos(∇θ L(x'), ∇θ L(x)) + α·TV(x')``,
  Adam on signed gradients, images boxed to the valid range, learning rate ÷10 at 3/8, 5/8, 7/8
  of the iterations, several restarts keeping the best loss — by default breaching's recipe
  (``invertinggradients.yaml``: cosine objective, TV scale 0.2, signed Adam at 0.1, step decay;
  4 restarts here), with the iteration budget per scale read off the PSNR-vs-iterations curve of
  ``bench/bench_gradient_budget.py``; and its **multi-step FedAvg variant**
  (Geiping et al. §6): the client's ``local_steps`` SGD steps (with momentum and weight decay) are
  unrolled differentiably on the dummy data and the cosine distance is taken between the
  simulated and the observed parameter *differences*.

`run_gradient_probe` simulates one client update (a backbone from `federated_core.models`, in its
initial or trained state, and a margin head; chosen batch size, local steps, resolution;
optionally DP-SGD through the federated core's opacus step), attacks it, and scores the result
with PSNR / SSIM against the true images and identity similarity / rank-1 match under the
independent evaluator. `sweep_gradient_probe` runs a grid of such probes.

Threat model stated in every result: the attacker knows the starting model (it broadcast it), the
client's local optimiser settings, the number of local images and steps, and the batch order
(Geiping et al.'s assumptions); it does *not* know the images, and knows the labels only when
``label_source="known"`` — then the result is the *granted-labels upper bound* on this attacker,
and with ``granted_labels_row`` a probe with recovered labels carries that bound beside it. The
head's update is observed only when ``head_observed`` (methods that upload class centers); iDLG
and LLG need it.

Every score is a lower bound on what an attacker with this knowledge can do: a longer budget, more
restarts, a learned image prior or a better label guess can only add to it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from attacks.labels import recover_label_counts_llg, recover_labels_idlg
from attacks.metrics import match_reconstructions, psnr, ssim

__all__ = [
    "HEAD_LOSSES",
    "ClientModel",
    "LocalSgd",
    "simulate_local_update",
    "unrolled_update",
    "recover_labels_idlg",
    "recover_label_counts_llg",
    "total_variation",
    "batchnorm_layers",
    "batchnorm_prior",
    "InvertingGradientsConfig",
    "DlgConfig",
    "ReconstructionOutput",
    "inverting_gradients",
    "dlg",
    "GradientProbeConfig",
    "GradientProbeResult",
    "GRANTED_LABELS_ROW",
    "run_gradient_probe",
    "sweep_gradient_probe",
]

HEAD_LOSSES = ("cosface", "arcface", "softmax", "positive")
ATTACK_ROW = "attack"
GRANTED_LABELS_ROW = "labels granted: upper bound on this attacker"
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _cosface_scale_margin(s: float | None, m: float | None) -> tuple[float, float]:
    from federated_core.models.heads import DEFAULT_MARGIN, DEFAULT_SCALE

    return (DEFAULT_SCALE["cosface"] if s is None else float(s), DEFAULT_MARGIN["cosface"] if m is None else float(m))


class ClientModel(nn.Module):
    """Backbone + class centers -> per-example losses (the engine's ``model(x, y) -> [B]`` contract).

    ``loss``: a margin-softmax head (``"cosface"``, ``"arcface"``, ``"softmax"``; PrivacyFace Eq.
    1–3) over the client's centers plus fixed ``extra_negatives`` (other parties' centers, as in
    the shared-centers / PrivacyFace methods), or ``"positive"``: ``1 − cos(f, w_y)``, the
    positive-only loss of one-identity clients (FedFace / FedAwS).
    """

    extra_negatives: torch.Tensor | None  # a buffer (None when there are none)

    def __init__(
        self,
        backbone: nn.Module,
        centers: torch.Tensor,
        loss: str = "cosface",
        s: float | None = None,
        m: float | None = None,
        extra_negatives: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if loss not in HEAD_LOSSES:
            raise ValueError(f"loss must be one of {list(HEAD_LOSSES)}, got {loss!r}")
        if centers.dim() != 2:
            raise ValueError(f"centers must be [C, d], got shape {tuple(centers.shape)}")
        if loss != "positive" and centers.shape[0] + (0 if extra_negatives is None else extra_negatives.shape[0]) < 2:
            raise ValueError(
                f"a {loss!r} head over a single class has zero loss and zero gradient; use loss='positive' "
                "(FedFace) or extra_negatives for one-identity clients"
            )
        self.backbone = backbone
        self.centers = nn.Parameter(centers.detach().clone().float())
        self.loss = loss
        self.s, self.m = s, m
        self.register_buffer("extra_negatives", None if extra_negatives is None else extra_negatives.detach().float())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if self.loss == "positive":
            return 1.0 - F.cosine_similarity(f, self.centers[y], dim=1)
        return F.cross_entropy(self.logits(f, y), y, reduction="none")

    def logits(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The logits ``[B, C + E]`` that `forward`'s cross-entropy sees for features ``f`` with
        labels ``y`` (margin on the own class; the ``E`` extra negatives last)."""
        from federated_core.models.heads import margin_logits

        if self.loss == "positive":
            raise ValueError("the positive-only loss has no logits (it is 1 - cos(f, w_y))")
        if self.loss == "arcface":
            logits = margin_logits(f, self.centers, y, kind=self.loss, s=self.s, m=self.m, check_labels=False)
        else:
            # CosFace / softmax written with a comparison one-hot so that DP-SGD's per-sample
            # gradients (torch.func.vmap) work: F.one_hot inside margin_logits is not vmappable.
            logits = margin_logits(f, self.centers, None, kind=self.loss, s=self.s, m=self.m)
            if self.loss == "cosface":
                s, m = _cosface_scale_margin(self.s, self.m)
                onehot = (torch.arange(logits.shape[1], device=y.device) == y.unsqueeze(1)).to(logits.dtype)
                logits = logits - s * m * onehot
        if self.extra_negatives is not None:
            logits = torch.cat([logits, self._extra_logits(f)], dim=1)
        return logits

    def _extra_logits(self, f: torch.Tensor) -> torch.Tensor:
        """Logits of the fixed extra negatives: inner products (softmax) or ``s·cos`` (PrivacyFace
        Eq. 5 with ρ = 0)."""
        from federated_core.models.heads import DEFAULT_SCALE, margin_logits

        extra = self.extra_negatives
        if extra is None:
            raise ValueError("this ClientModel has no extra_negatives (extra_negatives is None)")
        if self.loss == "softmax":
            return margin_logits(f, extra, None, kind="softmax")
        s = DEFAULT_SCALE[self.loss] if self.s is None else self.s
        return margin_logits(f, extra, None, kind="cosface", s=s)

    def soft_label_loss(self, x: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """DLG's loss with soft labels ``[B, C]`` (probabilities): cross-entropy against the
        margin-free logits, with CosFace's margin applied in proportion to the soft label."""
        from federated_core.models.heads import margin_logits

        if self.loss not in ("softmax", "cosface"):
            raise ValueError(f"DLG's soft labels support loss 'softmax' or 'cosface', got {self.loss!r}")
        f = self.backbone(x)
        logits = margin_logits(f, self.centers, None, kind=self.loss, s=self.s, m=self.m)
        if self.loss == "cosface":
            s, m = _cosface_scale_margin(self.s, self.m)
            logits = logits - s * m * soft
        if self.extra_negatives is not None:
            extra = self._extra_logits(f)
            logits = torch.cat([logits, extra], dim=1)
            soft = torch.cat([soft, torch.zeros(soft.shape[0], extra.shape[1], device=soft.device)], dim=1)
        return -(soft * F.log_softmax(logits, dim=1)).sum(1)


@dataclass(frozen=True)
class LocalSgd:
    """The client's local optimiser: ``steps`` SGD steps over fixed consecutive batches of
    ``batch_size`` (cycling), momentum and weight decay as in `torch.optim.SGD`."""

    steps: int = 1
    batch_size: int = 1
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def batches(self, n: int) -> list[torch.Tensor]:
        """Index of each step's batch over ``n`` local images (consecutive, cycling)."""
        chunks = [torch.arange(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        return [chunks[t % len(chunks)] for t in range(self.steps)]


def _trainable(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    params: dict[str, torch.Tensor] = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return params if names is None else {n: params[n] for n in names}


def simulate_local_update(
    model: ClientModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    sgd: LocalSgd,
    dp_noise_multiplier: float | None = None,
    dp_max_grad_norm: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Run the client's local training on a copy of ``model``; returns ``θ_after − θ_before``
    for every trainable parameter (what the server learns from the upload).

    Without DP: `torch.optim.SGD`. With ``dp_noise_multiplier``: DP-SGD through the federated
    core's opacus step (`federated_core.engine.dp_sgd.DpSgdStep`: per-sample clipping to
    ``dp_max_grad_norm`` and Gaussian noise), on the same fixed batches.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images ({images.shape[0]}) and labels ({labels.shape[0]}) must have the same length")
    client = copy.deepcopy(model).train()
    before = {n: p.detach().clone() for n, p in _trainable(client).items()}
    params = list(_trainable(client).values())
    if dp_noise_multiplier is None:
        opt = torch.optim.SGD(params, lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)
        for idx in sgd.batches(images.shape[0]):
            loss = client(images[idx], labels[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        from federated_core.engine.dp_sgd import DpSgdStep, check_dp_compatible

        if not (dp_noise_multiplier > 0 and math.isfinite(dp_noise_multiplier)):
            raise ValueError(f"dp_noise_multiplier must be a finite number > 0, got {dp_noise_multiplier}")
        if not (dp_max_grad_norm > 0 and math.isfinite(dp_max_grad_norm)):
            raise ValueError(f"dp_max_grad_norm must be a finite number > 0, got {dp_max_grad_norm}")
        if generator is None:
            raise ValueError("DP-SGD needs a torch.Generator for its noise (generator=None given)")
        check_dp_compatible(client)
        stepper = DpSgdStep(
            client,
            lr=sgd.lr,
            momentum=sgd.momentum,
            weight_decay=sgd.weight_decay,
            noise_multiplier=float(dp_noise_multiplier),
            max_grad_norm=float(dp_max_grad_norm),
            expected_batch_size=min(sgd.batch_size, images.shape[0]),
            generator=generator,
        )
        for idx in sgd.batches(images.shape[0]):
            stepper.step(images[idx], labels[idx])
    return {n: (p.detach() - before[n]) for n, p in _trainable(client).items()}


def unrolled_update(
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor | None,
    sgd: LocalSgd,
    create_graph: bool = True,
    soft_labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``θ_T − θ_0`` of ``sgd.steps`` SGD steps on ``(images, labels)``, differentiable with
    respect to the images (Geiping et al. 2020 §6, multi-step FedAvg). The update rule is
    `torch.optim.SGD`'s: ``g ← ∇L + wd·θ``; ``v ← μ·v + g`` (``v = g`` at the first step);
    ``θ ← θ − lr·v``. With ``soft_labels`` the loss is DLG's soft-label loss."""
    from torch.func import functional_call

    names = list(start)
    theta = {n: start[n] for n in names}
    velocity: dict[str, torch.Tensor] = {}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    for step, idx in enumerate(sgd.batches(images.shape[0])):
        params = {**theta, **buffers}
        if soft_labels is not None:
            per = _soft_call(model, params, images[idx], soft_labels[idx])
        elif labels is None:
            raise ValueError("unrolled_update needs labels or soft_labels; got neither (labels is None)")
        else:
            per = functional_call(model, params, (images[idx], labels[idx]))
        loss = per.mean()
        grads = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=create_graph)
        new = {}
        for n, g in zip(names, grads):
            if sgd.weight_decay:
                g = g + sgd.weight_decay * theta[n]
            if sgd.momentum:
                velocity[n] = g if step == 0 else sgd.momentum * velocity[n] + g
                g = velocity[n]
            new[n] = theta[n] - sgd.lr * g
        theta = new
    return {n: theta[n] - start[n] for n in names}


def _soft_call(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    from torch.func import functional_call

    if not isinstance(model, ClientModel):
        raise ValueError(f"soft labels need a ClientModel (its soft_label_loss), got {type(model).__name__}")

    class _Soft(nn.Module):
        def __init__(self, inner: ClientModel) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.inner.soft_label_loss(a, b)

    wrapped = _Soft(model)
    return functional_call(wrapped, {f"inner.{k}": v for k, v in params.items()}, (x, soft))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute difference of neighbouring pixels), the image
    prior of Geiping et al. (2020)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` that carry running statistics; ValueError when there
    are none (e.g. the ``tiny`` backbone and ``norm="group"`` backbones use GroupNorm) or when a
    BatchNorm layer tracks no running statistics."""
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, _BATCHNORMS)]
    if not layers:
        raise ValueError(
            f"bn_prior_weight > 0 needs BatchNorm layers, and this {type(model).__name__} has none "
            "(the 'tiny' backbone and norm='group' backbones use GroupNorm/LayerNorm); set bn_prior_weight=0"
        )
    for m in layers:
        if m.running_mean is None or m.running_var is None:
            raise ValueError(f"BatchNorm layer {m} tracks no running statistics: there is nothing to match")
    return layers


def batchnorm_prior(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """GradInversion's BatchNorm prior (Yin et al. 2021, "See through Gradients", the ``R_BN``
    term of the fidelity regulariser, after DeepInversion): ``Σ_l ‖μ_l(x) − μ_l‖₂ +
    ‖σ²_l(x) − σ²_l‖₂`` over the BatchNorm layers ``l``, where ``μ_l(x)``, ``σ²_l(x)`` are the
    per-channel batch mean and (biased) variance of the layer's *input* for the batch ``x`` and
    ``μ_l``, ``σ²_l`` the layer's running statistics (the broadcast model's, which the attacker
    knows). The forward pass runs in eval mode (each layer normalises with its running
    statistics, no buffer changes; training flags are restored) through ``model(x, labels)``,
    with ``params`` (e.g. the start state) in place of the model's own parameters when given.
    Differentiable with respect to ``x``.

    Scale: the sum runs over every BatchNorm layer (about 680 for noise images through a freshly
    built 32-px MobileFaceNet, 50 layers) while the cosine distance is at most 2, so useful
    weights are small. A freshly built model's running statistics are still (0, 1): the prior is
    informative only for a trained broadcast model."""
    from torch.func import functional_call

    layers = batchnorm_layers(model)
    terms: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        h = inputs[0]
        dims = [0, *range(2, h.dim())]
        mean, var = h.mean(dims), h.var(dims, correction=0)
        terms.append(
            torch.linalg.vector_norm(mean - cast(torch.Tensor, module.running_mean))
            + torch.linalg.vector_norm(var - cast(torch.Tensor, module.running_var))
        )

    y = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device) if labels is None else labels
    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        model.eval()
        if params is None:
            model(x, y)
        else:
            functional_call(model, dict(params), (x, y))
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes:
            m.training = training
    return _tensor_sum(terms)


def _tensor_sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum(terms)``, a tensor: ``terms`` (one per parameter) must not be empty."""
    total = sum(terms)
    if not isinstance(total, torch.Tensor):
        raise ValueError("no parameters to compare: the update is empty")
    return total


def _cosine_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    dot = _tensor_sum((a[n] * b[n]).sum() for n in b)
    na = torch.sqrt(_tensor_sum(a[n].pow(2).sum() for n in b))
    nb = torch.sqrt(_tensor_sum(b[n].pow(2).sum() for n in b))
    return 1.0 - dot / (na * nb).clamp_min(1e-12)


def _l2_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return _tensor_sum((a[n] - b[n]).pow(2).sum() for n in b)


@dataclass(frozen=True)
class InvertingGradientsConfig:
    """Geiping et al. (2020): cosine distance + α·TV, Adam on signed gradients, step decay
    (÷10 at 3/8, 5/8, 7/8 of ``iterations``), ``restarts`` from fresh random images keeping the
    best final loss. Defaults: breaching's Inverting Gradients (TV scale 0.2, lr 0.1, signed,
    boxed) with 4 restarts; ``iterations`` counts the steps of one restart. ``bn_prior_weight``
    adds ``bn_prior_weight · R_BN`` (`batchnorm_prior`; 0 = off, the default)."""

    iterations: int = 2000
    restarts: int = 4
    lr: float = 0.1
    tv_weight: float = 0.2
    signed: bool = True
    boxed: bool = True
    seed: int = 0
    progress: bool = False
    bn_prior_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("iterations", "restarts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.tv_weight < 0:
            raise ValueError(f"tv_weight must be >= 0, got {self.tv_weight}")
        _check_bn_weight(self.bn_prior_weight)


@dataclass(frozen=True)
class DlgConfig:
    """Zhu et al. (2019): squared-L2 gradient matching, L-BFGS (lr 1; ``iterations`` outer steps
    of up to ``inner_iterations`` L-BFGS iterations each, torch's defaults as in the authors'
    code), soft labels optimised jointly unless labels are given. ``bn_prior_weight`` adds
    ``bn_prior_weight · R_BN`` (`batchnorm_prior`; 0 = off, the default)."""

    iterations: int = 300
    lr: float = 1.0
    inner_iterations: int = 20
    line_search: str | None = None
    seed: int = 0
    progress: bool = False
    bn_prior_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("iterations", "inner_iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.line_search not in (None, "strong_wolfe"):
            raise ValueError(f"line_search must be None or 'strong_wolfe', got {self.line_search!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        _check_bn_weight(self.bn_prior_weight)


def _check_bn_weight(weight: float) -> None:
    if isinstance(weight, bool) or not (weight >= 0 and math.isfinite(weight)):
        raise ValueError(f"bn_prior_weight must be a finite number >= 0, got {weight!r}")


@dataclass
class ReconstructionOutput:
    """Images in ``[-1, 1]`` ``[N, 3, R, R]``, the labels used or recovered, the loss history of
    the kept restart (DLG: one entry per L-BFGS step), the wall time and the number of
    gradient-matching evaluations (for `bench/`)."""

    images: torch.Tensor
    labels: torch.Tensor
    losses: list[float]
    restart_losses: list[float]
    seconds: float
    iterations: int


def _check_observed(model: nn.Module, start: Mapping[str, torch.Tensor], observed: Mapping[str, torch.Tensor]) -> None:
    if not observed:
        raise ValueError("the observed update is empty: no parameter difference to invert")
    params = dict(model.named_parameters())
    for n, t in observed.items():
        if n not in start:
            raise ValueError(f"observed update names parameter {n!r}, which the start state lacks")
        if n not in params:
            raise ValueError(f"observed update names parameter {n!r}, which the model does not have")
        if tuple(t.shape) != tuple(start[n].shape):
            raise ValueError(
                f"observed update of {n!r} has shape {tuple(t.shape)}, the parameter {tuple(start[n].shape)}"
            )


def _start_leaves(start: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {n: t.detach().to(device).float().requires_grad_(True) for n, t in start.items()}


def inverting_gradients(
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    image_shape: tuple[int, int, int, int],
    sgd: LocalSgd,
    config: InvertingGradientsConfig,
    device: str | torch.device = "cpu",
) -> ReconstructionOutput:
    """Reconstruct the client's images from its observed update (Geiping et al. 2020, Eq. 4;
    multi-step when ``sgd.steps > 1``; plus ``config.bn_prior_weight · R_BN``, Yin et al. 2021,
    when that weight is > 0). ``start``: every trainable parameter at the start of the round
    (what the attacker broadcast); ``observed``: the differences the attacker saw (a subset of
    ``start``'s names, e.g. the backbone only)."""
    device = torch.device(device)
    _check_observed(model, start, observed)
    if labels.shape[0] != image_shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries for {image_shape[0]} images")
    if config.bn_prior_weight > 0:
        batchnorm_layers(model)  # raises when there is no BatchNorm to match
    model = model.to(device).train()
    target = {n: t.detach().to(device).float() for n, t in observed.items()}
    labels = labels.to(device)
    gen = torch.Generator().manual_seed(config.seed)
    milestones = [int(config.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    best: tuple[float, torch.Tensor, list[float]] | None = None
    restart_losses = []
    t0 = time.perf_counter()
    for r in range(config.restarts):
        x = torch.randn(image_shape, generator=gen).to(device).clamp(-1, 1).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=config.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        history = []
        bar = tqdm(
            range(config.iterations),
            desc=f"inverting gradients (restart {r + 1})",
            disable=not config.progress,
            leave=False,
        )
        for _ in bar:
            theta0 = _start_leaves(start, device)
            delta = unrolled_update(model, theta0, x, labels, sgd, create_graph=True)
            loss = _cosine_distance(delta, target) + config.tv_weight * total_variation(x)
            if config.bn_prior_weight > 0:
                loss = loss + config.bn_prior_weight * batchnorm_prior(model, x, labels, theta0)
            opt.zero_grad(set_to_none=True)
            (grad_x,) = torch.autograd.grad(loss, [x])
            x.grad = grad_x.sign() if config.signed else grad_x
            opt.step()
            sched.step()
            if config.boxed:
                with torch.no_grad():
                    x.clamp_(-1, 1)
            history.append(float(loss.detach()))
        final = _evaluate_loss(
            model, start, target, x.detach(), labels, sgd, config.tv_weight, device, config.bn_prior_weight
        )
        restart_losses.append(final)
        if best is None or final < best[0]:
            best = (final, x.detach().clone(), history)
    assert best is not None
    return ReconstructionOutput(
        best[1].cpu(),
        labels.cpu(),
        best[2],
        restart_losses,
        time.perf_counter() - t0,
        config.iterations * config.restarts,
    )


def _evaluate_loss(model, start, target, x, labels, sgd, tv_weight, device, bn_weight: float = 0.0) -> float:
    theta0 = _start_leaves(start, device)
    delta = unrolled_update(model, theta0, x, labels, sgd, create_graph=False)
    loss = _cosine_distance(delta, target) + tv_weight * total_variation(x)
    if bn_weight > 0:
        loss = loss + bn_weight * batchnorm_prior(model, x, labels, theta0)
    return float(loss.detach())


def dlg(
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    image_shape: tuple[int, int, int, int],
    num_classes: int,
    sgd: LocalSgd,
    config: DlgConfig,
    labels: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> ReconstructionOutput:
    """Deep Leakage from Gradients (Zhu et al. 2019): minimise ``‖Δθ(x', y') − Δθ‖²`` over dummy
    images ``x'`` and (unless ``labels`` are given, e.g. by iDLG) soft labels ``y' = softmax(z)``
    with L-BFGS (plus ``config.bn_prior_weight · R_BN``, Yin et al. 2021, when > 0). Returns the
    images and the argmax labels."""
    device = torch.device(device)
    _check_observed(model, start, observed)
    if config.bn_prior_weight > 0:
        batchnorm_layers(model)  # raises when there is no BatchNorm to match
    model = model.to(device).train()
    target = {n: t.detach().to(device).float() for n, t in observed.items()}
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.randn(image_shape, generator=gen).to(device).requires_grad_(True)
    variables = [x]
    z = None
    if labels is None:
        z = torch.randn(image_shape[0], num_classes, generator=gen).to(device).requires_grad_(True)
        variables.append(z)
    else:
        if labels.shape[0] != image_shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} entries for {image_shape[0]} images")
        labels = labels.to(device)
    opt = torch.optim.LBFGS(
        variables, lr=config.lr, max_iter=config.inner_iterations, history_size=100, line_search_fn=config.line_search
    )
    history: list[float] = []
    t0 = time.perf_counter()
    best_loss, best_x = float("inf"), x.detach().clone()
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        opt.zero_grad(set_to_none=True)
        theta0 = _start_leaves(start, device)
        if z is None:
            delta = unrolled_update(model, theta0, x, labels, sgd, create_graph=True)
        else:
            delta = unrolled_update(model, theta0, x, None, sgd, create_graph=True, soft_labels=F.softmax(z, dim=1))
        loss = _l2_distance(delta, target) / (sgd.lr**2)
        if config.bn_prior_weight > 0:
            loss = loss + config.bn_prior_weight * batchnorm_prior(model, x, labels, theta0)
        gx = torch.autograd.grad(loss, variables)
        for v, g in zip(variables, gx):
            v.grad = g
        return loss.detach()

    for _ in tqdm(range(config.iterations), desc="DLG", disable=not config.progress, leave=False):
        loss = float(opt.step(closure))
        if not math.isfinite(loss):
            break
        history.append(loss)
        if loss < best_loss:
            best_loss, best_x = loss, x.detach().clone()
    # labels were given exactly when there are no soft labels z to optimise
    out_labels = cast(torch.Tensor, labels).cpu() if z is None else z.detach().argmax(1).cpu()
    return ReconstructionOutput(
        best_x.clamp(-1, 1).cpu(), out_labels, history, [best_loss], time.perf_counter() - t0, evaluations
    )


@dataclass(frozen=True)
class GradientProbeConfig:
    """One simulated client update and the attack on it.

    Attributes:
        backbone, embedding_dim, resolution: the client's model (`federated_core.models`).
        model_state: ``"initial"`` (freshly built with ``seed``) or ``"trained"`` (the backbone
            passed to `run_gradient_probe`, e.g. φ0 or the last broadcast model).
        head: the client's loss (see `ClientModel`); ``extra_negatives``: number of fixed other
            parties' centers appended as negatives (known to the attacker, who broadcast them).
        head_init: the client's class centers at the start of the round: ``"random"``
            (``N(0, 0.01²)``, `MarginHead`'s initialisation, a head early in training) or
            ``"mean_embedding"`` (FedFace's average-feature initialisation; with one image per
            class its margin loss is saturated and the update is numerically empty).
        num_images: the client's local images used (the first ones of its FaceSet); the attack
            reconstructs as many.
        batch_size, local_steps, local_lr, momentum, weight_decay: local SGD (`LocalSgd`).
        dp_noise_multiplier, dp_max_grad_norm: DP-SGD on the client (None = off).
        attack: ``"inverting_gradients"`` or ``"dlg"``.
        label_source: ``"idlg"`` (which classes, from the head update; needs ``head_observed``),
            ``"llg"`` (how many images of each class, `attacks.labels.recover_label_counts_llg`;
            needs ``head_observed``) or ``"known"`` (labels granted: the upper bound on this
            attacker); DLG also accepts ``"dlg"`` (soft labels optimised jointly).
        head_observed: whether the head's update reaches the attacker with the backbone's.
        iterations, restarts, attack_lr, tv_weight: Inverting Gradients' budget and prior
            (`InvertingGradientsConfig`; ``iterations`` per restart; DLG uses ``iterations`` only).
        granted_labels_row: with recovered labels (any ``label_source`` but ``"known"``), also run
            the same attack with the true labels and attach it as `GradientProbeResult.granted`
            (`GRANTED_LABELS_ROW`); off by default (it doubles the attack's time).
        bn_prior_weight: weight of GradInversion's BatchNorm-statistics prior (`batchnorm_prior`;
            0 = off; > 0 needs a backbone with BatchNorm: ``mobilefacenet``, ``iresnet18/34`` with
            the default ``norm="batch"``, ``inception_resnet_v1`` — not ``tiny``).
    """

    backbone: str = "tiny"
    embedding_dim: int = 32
    resolution: int = 16
    model_state: str = "initial"
    head: str = "cosface"
    scale: float | None = None
    margin: float | None = None
    extra_negatives: int = 0
    num_images: int = 1
    batch_size: int = 1
    local_steps: int = 1
    local_lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    head_init: str = "random"
    dp_noise_multiplier: float | None = None
    dp_max_grad_norm: float = 1.0
    attack: str = "inverting_gradients"
    label_source: str = "idlg"
    head_observed: bool = True
    iterations: int = 1000
    restarts: int = 4
    attack_lr: float = 0.1
    tv_weight: float = 0.2
    seed: int = 0
    device: str = "cpu"
    progress: bool = False
    granted_labels_row: bool = False
    bn_prior_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.model_state not in ("initial", "trained"):
            raise ValueError(f"model_state must be 'initial' or 'trained', got {self.model_state!r}")
        if self.head not in HEAD_LOSSES:
            raise ValueError(f"head must be one of {list(HEAD_LOSSES)}, got {self.head!r}")
        if self.head_init not in ("random", "mean_embedding"):
            raise ValueError(f"head_init must be 'random' or 'mean_embedding', got {self.head_init!r}")
        if self.attack not in ("inverting_gradients", "dlg"):
            raise ValueError(f"attack must be 'inverting_gradients' or 'dlg', got {self.attack!r}")
        self._check_labels()
        for name in ("num_images", "embedding_dim", "resolution"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if (
            isinstance(self.extra_negatives, bool)
            or not isinstance(self.extra_negatives, int)
            or self.extra_negatives < 0
        ):
            raise ValueError(f"extra_negatives must be an integer >= 0, got {self.extra_negatives!r}")
        if self.dp_noise_multiplier is not None and not (
            self.dp_noise_multiplier > 0 and math.isfinite(self.dp_noise_multiplier)
        ):
            raise ValueError(f"dp_noise_multiplier must be None or a finite number > 0, got {self.dp_noise_multiplier}")
        if not (self.dp_max_grad_norm > 0 and math.isfinite(self.dp_max_grad_norm)):
            raise ValueError(f"dp_max_grad_norm must be a finite number > 0, got {self.dp_max_grad_norm}")
        self.local_sgd()  # validates batch_size, local_steps, local_lr, momentum, weight_decay
        InvertingGradientsConfig(
            self.iterations, self.restarts, self.attack_lr, self.tv_weight, bn_prior_weight=self.bn_prior_weight
        )

    def _check_labels(self) -> None:
        allowed = ("idlg", "llg", "known", "dlg") if self.attack == "dlg" else ("idlg", "llg", "known")
        if self.label_source not in allowed:
            raise ValueError(
                f"label_source must be one of {allowed} for attack {self.attack!r}, got {self.label_source!r}"
            )
        if self.label_source in ("idlg", "llg") and not self.head_observed:
            raise ValueError(
                f"label_source={self.label_source!r} needs the head's update (head_observed=True); a backbone-only "
                "update carries no last-layer gradient to read labels from — use label_source='known'"
            )
        if not isinstance(self.granted_labels_row, bool):
            raise ValueError(f"granted_labels_row must be True or False, got {self.granted_labels_row!r}")

    def local_sgd(self) -> LocalSgd:
        return LocalSgd(self.local_steps, self.batch_size, self.local_lr, self.momentum, self.weight_decay)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GradientProbeResult:
    """Scores of one probe (plain numbers and arrays).

    ``row`` is ``"attack"`` for the attacker as configured, or `GRANTED_LABELS_ROW` for the same
    attack given the true labels; with ``granted_labels_row`` the attack row carries that row as
    ``granted`` (its summary under ``"labels_granted"``)."""

    config: dict[str, Any]
    true_identities: list[int]
    label_accuracy: float
    psnr: np.ndarray
    ssim: np.ndarray
    identity_similarity: np.ndarray | None
    impostor_identity_similarity: np.ndarray | None
    rank1: np.ndarray | None
    identity_recovered: bool | None
    loss_history: list[float]
    reconstructions: np.ndarray
    originals: np.ndarray
    seconds: float
    iterations: int
    evaluator: str | None
    threat_model: str
    row: str = ATTACK_ROW
    granted: GradientProbeResult | None = None

    def summary(self) -> dict[str, Any]:
        finite = self.psnr[np.isfinite(self.psnr)]
        out = {
            k: self.config[k]
            for k in (
                "attack",
                "batch_size",
                "local_steps",
                "resolution",
                "model_state",
                "dp_noise_multiplier",
                "dp_max_grad_norm",
                "num_images",
            )
        }
        out.update(
            {
                "psnr": float(finite.mean()) if len(finite) else float("inf"),
                "ssim": float(self.ssim.mean()),
                "label_accuracy": self.label_accuracy,
                "identity_similarity": None
                if self.identity_similarity is None
                else float(self.identity_similarity.mean()),
                "impostor_identity_similarity": None
                if self.impostor_identity_similarity is None
                else float(np.nanmean(self.impostor_identity_similarity))
                if np.isfinite(self.impostor_identity_similarity).any()
                else None,
                "rank1": None if self.rank1 is None else float(self.rank1.mean()),
                "identity_recovered": self.identity_recovered,
            }
        )
        if self.row != ATTACK_ROW:
            out["row"] = self.row
        if self.granted is not None:
            out["labels_granted"] = self.granted.summary()
        return out


def _client_images(faces: Any, config: GradientProbeConfig) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    if len(faces) < config.num_images:
        raise ValueError(f"client_faces holds {len(faces)} images, num_images={config.num_images} asked for")
    sub = faces.subset(torch.arange(config.num_images))
    x = sub.as_float()
    if x.shape[-1] != config.resolution:
        x = F.interpolate(
            x, size=(config.resolution, config.resolution), mode="bilinear", align_corners=False, antialias=True
        ).clamp(-1, 1)
    identities = sorted(set(faces.labels.tolist()))
    local = torch.tensor([identities.index(i) for i in sub.labels.tolist()], dtype=torch.int64)
    return x, local, identities


def _probe_backbone(config: GradientProbeConfig, trained_backbone: nn.Module | None, device: torch.device) -> nn.Module:
    """The client's backbone: a copy of ``trained_backbone``, or one built with ``config.seed``."""
    from federated_core.models import build_backbone

    if config.model_state == "trained":
        if trained_backbone is None:
            raise ValueError("model_state='trained' needs trained_backbone (e.g. φ0 or the last broadcast model)")
        backbone = copy.deepcopy(trained_backbone)
        res = getattr(backbone, "resolution", config.resolution)
        if res != config.resolution:
            raise ValueError(f"trained_backbone works at resolution {res}, config.resolution is {config.resolution}")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            backbone = build_backbone(config.backbone, embedding_dim=config.embedding_dim, resolution=config.resolution)
    return backbone.to(device)


def _probe_model(
    config: GradientProbeConfig,
    backbone: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    device: torch.device,
) -> ClientModel:
    """The client's model: its class centers as ``config.head_init`` says, plus the seeded extra
    negatives (generator ``config.seed + 1``: random centers first, then the negatives)."""
    gen = torch.Generator().manual_seed(config.seed + 1)
    with torch.no_grad():
        backbone.eval()
        f = F.normalize(backbone(x), dim=1)
        d = f.shape[1]
        if config.head_init == "mean_embedding":
            centers = torch.zeros(n_classes, d, device=device).index_add_(0, y, f)
            centers = F.normalize(centers, dim=1)
        else:
            centers = (0.01 * torch.randn(n_classes, d, generator=gen)).to(device)
    extra = None
    if config.extra_negatives:
        extra = F.normalize(torch.randn(config.extra_negatives, d, generator=gen), dim=1).to(device)
    return ClientModel(backbone, centers, config.head, config.scale, config.margin, extra).to(device)


def _probe_labels(
    config: GradientProbeConfig,
    y: torch.Tensor,
    delta: Mapping[str, torch.Tensor],
    n_classes: int,
    device: torch.device,
    model: ClientModel | None = None,
) -> torch.Tensor | None:
    """The attacker's labels: given, recovered by iDLG (which classes) or LLG (how many of each,
    ``model`` at its start state needed) from the head update, or None (DLG's own)."""
    if config.label_source == "known":
        return y.clone()
    if config.label_source == "llg":
        if model is None:
            raise ValueError("label_source='llg' needs the client's start model (model=None given)")
        shape = (3, config.resolution, config.resolution)
        counts = recover_label_counts_llg(model, delta["centers"], len(y), shape, seed=config.seed + 3)
        return counts.labels().to(device)
    if config.label_source == "idlg":
        if n_classes == 1:
            return torch.zeros_like(y)
        found = recover_labels_idlg(delta["centers"], count=min(n_classes, len(y)))
        return found.to(device)[torch.arange(len(y), device=device) * len(found) // len(y)]
    return None


def _probe_attack(
    config: GradientProbeConfig,
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    labels: torch.Tensor | None,
    n_images: int,
    n_classes: int,
    sgd: LocalSgd,
    device: torch.device,
) -> ReconstructionOutput:
    """Run ``config.attack``: Inverting Gradients (Geiping et al. 2020 Eq. 4) or DLG (Zhu et al. 2019 Eq. 4)."""
    shape = (n_images, 3, config.resolution, config.resolution)
    if config.attack == "inverting_gradients":
        assert labels is not None
        return inverting_gradients(
            model,
            start,
            observed,
            labels,
            shape,
            sgd,
            InvertingGradientsConfig(
                config.iterations,
                config.restarts,
                config.attack_lr,
                config.tv_weight,
                seed=config.seed,
                progress=config.progress,
                bn_prior_weight=config.bn_prior_weight,
            ),
            device=device,
        )
    return dlg(
        model,
        start,
        observed,
        shape,
        n_classes,
        sgd,
        DlgConfig(
            config.iterations, seed=config.seed, progress=config.progress, bn_prior_weight=config.bn_prior_weight
        ),
        labels=labels,
        device=device,
    )


def _multiset_label_accuracy(y: torch.Tensor, got: torch.Tensor, n_classes: int) -> float:
    """Label accuracy as a multiset match (the batch order of a reconstruction is arbitrary)."""
    true_counts = torch.bincount(y.cpu(), minlength=n_classes)
    got_counts = torch.bincount(got.cpu().clamp(0, n_classes - 1), minlength=n_classes)
    return float(torch.minimum(true_counts, got_counts).sum()) / len(y)


def _probe_identity_scores(
    reference: Any | None, rec: torch.Tensor, y: torch.Tensor, identities: list[int]
) -> tuple[Any, Any, Any, bool | None, str | None]:
    """Identity similarity, impostor similarity, rank-1, recovered flag and evaluator name (all
    None without ``reference``)."""
    if reference is None:
        return None, None, None, None, None
    truth = [frozenset({identities[int(c)]}) for c in y.cpu().tolist()]
    sc = reference.score(rec, truth)
    return sc.identity_similarity, sc.impostor_identity_similarity, sc.rank1, bool(sc.rank1.any()), sc.evaluator


def _probe_threat_model(config: GradientProbeConfig) -> str:
    """The threat model stated in the result."""
    budget = (
        f"{config.iterations} iterations x {config.restarts} restart(s), TV {config.tv_weight:g}"
        if config.attack == "inverting_gradients"
        else f"{config.iterations} L-BFGS steps"
    )
    if config.label_source != "known":
        labels = f"labels recovered by {config.label_source}"
    elif config.head_observed:
        labels = GRANTED_LABELS_ROW
    else:  # a backbone-only update has no head gradient to read labels from
        labels = f"{GRANTED_LABELS_ROW} (a backbone-only update carries no head gradient to read labels from)"
    prior = f", BatchNorm prior {config.bn_prior_weight:g}" if config.bn_prior_weight > 0 else ""
    return (
        "attacker knows the start model, local SGD settings, image count, step count and batch order; "
        f"{labels}; "
        f"head update {'observed' if config.head_observed else 'not observed'}; "
        f"{config.attack} with {budget}{prior}: a lower bound on what an attacker with this knowledge can do"
    )


def run_gradient_probe(
    config: GradientProbeConfig,
    client_faces: Any,
    trained_backbone: nn.Module | None = None,
    reference: Any | None = None,
) -> GradientProbeResult:
    """Simulate one client's update on ``client_faces`` (a `FaceSet`; its identities are the
    client's classes) and attack it.

    The head's centers start as ``config.head_init`` says. ``reference`` (an
    `attacks.evaluator.IdentityReference`) adds identity similarity and rank-1 match under the
    independent evaluator. With ``config.granted_labels_row`` and recovered labels, the result's
    ``granted`` holds the same attack given the true labels (`GRANTED_LABELS_ROW`).
    """
    device = torch.device(config.device)
    backbone = _probe_backbone(config, trained_backbone, device)
    x, y, identities = _client_images(client_faces, config)
    x, y = x.to(device), y.to(device)
    n_classes = len(identities)
    model = _probe_model(config, backbone, x, y, n_classes, device)
    if config.bn_prior_weight > 0:
        batchnorm_layers(model)  # fail before the (costly) simulation when there is no BatchNorm
    sgd = config.local_sgd()
    dp_gen = None
    if config.dp_noise_multiplier is not None:
        dp_gen = torch.Generator(device=device).manual_seed(config.seed + 2)
    delta = simulate_local_update(model, x, y, sgd, config.dp_noise_multiplier, config.dp_max_grad_norm, dp_gen)
    start = {n: p.detach().clone() for n, p in _trainable(model).items()}
    observed = {n: v for n, v in delta.items() if config.head_observed or n != "centers"}
    labels = _probe_labels(config, y, delta, n_classes, device, model)
    attack = _ProbeAttack(config, model, start, observed, x, y, identities, sgd, device, reference)
    result = attack.run(config, labels, ATTACK_ROW)
    if config.granted_labels_row and config.label_source != "known":
        granted = dataclasses.replace(config, label_source="known", granted_labels_row=False)
        result.granted = attack.run(granted, y.clone(), GRANTED_LABELS_ROW)
    return result


@dataclass
class _ProbeAttack:
    """One simulated update and what the attacker holds; `run` attacks it and scores the images."""

    config: GradientProbeConfig
    model: ClientModel
    start: dict[str, torch.Tensor]
    observed: dict[str, torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    identities: list[int]
    sgd: LocalSgd
    device: torch.device
    reference: Any | None

    def run(self, config: GradientProbeConfig, labels: torch.Tensor | None, row: str) -> GradientProbeResult:
        """Attack with ``labels`` under ``config`` (its label settings may differ from the probe's)."""
        y, n_classes = self.y, len(self.identities)
        out = _probe_attack(
            config, self.model, self.start, self.observed, labels, len(y), n_classes, self.sgd, self.device
        )
        rec = (out.images.cpu() + 1) / 2
        orig = (self.x.cpu() + 1) / 2
        rec = rec[match_reconstructions(rec, orig)]
        id_sim, imp_sim, rank1, recovered, evaluator = _probe_identity_scores(self.reference, rec, y, self.identities)
        return GradientProbeResult(
            config=config.to_dict(),
            true_identities=[self.identities[int(c)] for c in y.cpu().tolist()],
            label_accuracy=_multiset_label_accuracy(y, out.labels, n_classes),
            psnr=psnr(rec, orig).numpy(),
            ssim=ssim(rec, orig).numpy(),
            identity_similarity=id_sim,
            impostor_identity_similarity=imp_sim,
            rank1=rank1,
            identity_recovered=recovered,
            loss_history=out.losses,
            reconstructions=(rec * 255).round().clamp(0, 255).to(torch.uint8).numpy(),
            originals=(orig * 255).round().clamp(0, 255).to(torch.uint8).numpy(),
            seconds=out.seconds,
            iterations=out.iterations,
            evaluator=evaluator,
            threat_model=_probe_threat_model(config),
            row=row,
        )


def sweep_gradient_probe(
    base: GradientProbeConfig,
    grid: Mapping[str, Sequence[Any]],
    client_faces: Any,
    trained_backbone: nn.Module | None = None,
    reference: Any | None = None,
    progress: bool = False,
) -> list[GradientProbeResult]:
    """Run `run_gradient_probe` for every combination of ``grid`` (field name -> values), e.g.
    ``{"batch_size": [1, 4], "local_steps": [1, 5], "dp_noise_multiplier": [None, 0.5]}``."""
    names = {f.name for f in dataclasses.fields(GradientProbeConfig)}
    unknown = sorted(set(grid) - names)
    if unknown:
        raise ValueError(f"grid names unknown probe settings {unknown}; allowed: {sorted(names)}")
    for k, values in grid.items():
        if len(values) == 0:
            raise ValueError(f"grid[{k!r}] is empty")
    combos = list(itertools.product(*grid.values()))
    results = []
    for combo in tqdm(combos, desc="gradient probes", disable=not progress, leave=False):
        cfg = dataclasses.replace(base, **dict(zip(grid.keys(), combo)))
        results.append(run_gradient_probe(cfg, client_faces, trained_backbone, reference))
    return results
