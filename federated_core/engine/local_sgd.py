"""A client's local training loop, shared by every method.

A method builds one `nn.Module` ``model(x, y) -> per-example losses [B]`` over the parameters it
trains (backbone, class embeddings, ...; frozen ones with ``requires_grad=False``) and calls
`train_local`. Plain SGD with momentum and weight decay (FedGC's local optimiser) over shuffled
mini-batches; with DP-SGD (`LocalTrainingConfig.noise_multiplier` set), Poisson-sampled batches,
per-sample clipping and Gaussian noise (`federated_core.engine.dp_sgd`). The optimiser's momentum
starts at zero every round (clients keep no optimiser state across rounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from federated_core.engine.config import LocalTrainingConfig
from federated_core.engine.state import ClientData


@dataclass
class LocalTrainingResult:
    """What one local training run did (client-side facts; not sent anywhere by itself).

    ``event`` is the DP-SGD event of these steps (None without DP-SGD).
    """

    mean_loss: float
    steps: int
    examples: int
    event: Any = None


def _float_batch(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)


def _flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], generator=rng) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def _training_device(training: LocalTrainingConfig) -> torch.device:
    """The device of ``training``, with a bare ``cuda`` pinned to the current CUDA device."""
    device = torch.device(training.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _prepare_model(model: nn.Module, device: torch.device) -> list[nn.Parameter]:
    """Move ``model`` to ``device`` (when any tensor is elsewhere), set train mode; its trainable parameters."""
    if any(t.device != device for t in list(model.parameters()) + list(model.buffers())):
        model.to(device)
    model.train()
    return [p for p in model.parameters() if p.requires_grad]


def train_local(
    model: nn.Module,
    data: ClientData,
    training: LocalTrainingConfig,
    rng: torch.Generator,
) -> LocalTrainingResult:
    """Train ``model``'s trainable parameters on ``data`` in place.

    Args:
        model: ``model(x, y) -> [B]`` per-example losses, ``x`` float images in ``[-1, 1]`` on
            ``training.device``, ``y`` local class indices.
        data: the client's images and local labels.
        training: local epochs, batch size, SGD settings, DP-SGD settings.
        rng: CPU generator for batch order, flips and (seeding) DP noise.
    """
    device = _training_device(training)
    params = _prepare_model(model, device)
    if not params:
        return LocalTrainingResult(mean_loss=float("nan"), steps=0, examples=0)
    if not training.dp:
        return _train_sgd(model, params, data, training, rng, device)
    return _train_dp_sgd(model, params, data, training, rng, device)


def _train_sgd(
    model: nn.Module,
    params: list[nn.Parameter],
    data: ClientData,
    training: LocalTrainingConfig,
    rng: torch.Generator,
    device: torch.device,
) -> LocalTrainingResult:
    """Plain SGD with momentum over shuffled mini-batches, ``training.local_epochs`` epochs."""
    n = len(data)
    images, labels = data.faces.images, data.local_labels
    total_loss, total_examples, steps = 0.0, 0, 0
    opt = torch.optim.SGD(params, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay)
    for _epoch in range(training.local_epochs):
        order = torch.randperm(n, generator=rng)
        for start in range(0, n, training.batch_size):
            idx = order[start : start + training.batch_size]
            x = _float_batch(images[idx], device)
            if training.flip:
                x = _flip(x, rng)
            y = labels[idx].to(device)
            loss = model(x, y).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            total_loss += float(loss.detach()) * len(idx)
            total_examples += len(idx)
    mean = total_loss / total_examples if total_examples else float("nan")
    return LocalTrainingResult(mean_loss=mean, steps=steps, examples=total_examples)


def _dp_settings(training: LocalTrainingConfig) -> tuple[float, float]:
    """DP-SGD's ``(noise_multiplier, max_grad_norm)``; both must be set."""
    noise_multiplier, max_grad_norm = training.noise_multiplier, training.max_grad_norm
    if noise_multiplier is None or max_grad_norm is None:
        raise ValueError(
            f"DP-SGD needs noise_multiplier and max_grad_norm, got {noise_multiplier!r} and {max_grad_norm!r}"
        )
    return float(noise_multiplier), float(max_grad_norm)


def _clear_per_sample_buffers(params: list[nn.Parameter]) -> None:
    """Drop the per-sample buffers opacus leaves on the parameters, and their gradients."""
    for p in params:
        for attr in ("grad_sample", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)
        p.grad = None


def _train_dp_sgd(
    model: nn.Module,
    params: list[nn.Parameter],
    data: ClientData,
    training: LocalTrainingConfig,
    rng: torch.Generator,
    device: torch.device,
) -> LocalTrainingResult:
    """DP-SGD: Poisson-sampled batches, per-sample clipping, Gaussian noise; returns its DP event."""
    from federated_core.engine.dp_sgd import DpSgdStep, check_dp_compatible, dp_sgd_event, dp_sgd_schedule

    n = len(data)
    images, labels = data.faces.images, data.local_labels
    total_loss, total_examples, steps = 0.0, 0, 0
    noise_multiplier, max_grad_norm = _dp_settings(training)
    check_dp_compatible(model)
    q, steps_per_round = dp_sgd_schedule(n, training.batch_size, training.local_epochs)
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    noise_gen = torch.Generator(device=device).manual_seed(noise_seed)
    stepper = DpSgdStep(
        model,
        lr=training.lr,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=max(1, round(q * n)),
        generator=noise_gen,
    )
    for _ in range(steps_per_round):
        idx = torch.nonzero(torch.rand(n, generator=rng) < q).flatten()
        x = _float_batch(images[idx], device)
        if training.flip and len(idx):
            x = _flip(x, rng)
        y = labels[idx].to(device)
        loss = stepper.step(x, y)
        steps += 1
        if len(idx) and math.isfinite(loss):
            total_loss += loss * len(idx)
            total_examples += len(idx)
    _clear_per_sample_buffers(params)
    mean = total_loss / total_examples if total_examples else float("nan")
    event = dp_sgd_event(noise_multiplier, q, steps)
    return LocalTrainingResult(mean_loss=mean, steps=steps, examples=total_examples, event=event)
