"""DP-SGD on a client (Abadi et al. 2016) through opacus.

Per-sample gradients are computed with ``torch.func`` (``vmap(grad(...))`` over the client's
whole per-example loss, so margin heads that take labels, extra negatives and any parameter layout
work alike); opacus's `DPOptimizer` then clips each per-sample gradient to ``max_grad_norm``, sums,
adds Gaussian noise of std ``noise_multiplier * max_grad_norm`` and divides by the expected batch
size, before the wrapped SGD step. Batches are Poisson-sampled with rate ``q = batch_size / n``
(capped at 1), which is what the accounting assumes.

The privacy spent is described, never computed here: each client's upload carries the event
``SelfComposedEvent(PoissonSampledGaussianEvent(noise_multiplier, q), steps)`` of the DP-SGD steps
behind it (example-level DP), which the ledger composes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def dp_sgd_schedule(num_examples: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """Poisson sampling rate ``q`` and the number of DP-SGD steps per round: ``q = min(1, B/n)``
    and ``local_epochs * max(1, round(n / B))`` steps (one expected pass over the data per epoch)."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    q = min(1.0, batch_size / num_examples)
    steps = local_epochs * max(1, round(num_examples / batch_size))
    return q, steps


def dp_sgd_event(noise_multiplier: float, sampling_probability: float, steps: int) -> Any:
    """The `accountants` event of ``steps`` Poisson-sampled Gaussian DP-SGD steps."""
    from accountants import PoissonSampledGaussianEvent, SelfComposedEvent

    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    if not (0.0 < sampling_probability <= 1.0):
        raise ValueError(f"sampling_probability must be in (0, 1], got {sampling_probability!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    return SelfComposedEvent(PoissonSampledGaussianEvent(noise_multiplier, sampling_probability, unit="image"), steps)


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sampling_probability: float,
    steps: int,
    accountant: str = "rdp",
    tolerance: float = 1e-3,
) -> float:
    """Smallest noise multiplier (to ``tolerance`` relative) whose ``steps`` Poisson-sampled
    Gaussian steps give at most ``target_epsilon`` at ``delta`` (bisection over
    `accountants.epsilon`)."""
    from accountants import epsilon

    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")

    def eps_of(sigma: float) -> float:
        return float(epsilon(dp_sgd_event(sigma, sampling_probability, steps), delta, accountant=accountant))

    low, high = 1e-2, 1.0
    while eps_of(high) > target_epsilon:
        low, high = high, high * 2.0
        if high > 1e4:
            raise ValueError(
                f"target_epsilon={target_epsilon} at delta={delta} needs a noise multiplier above 1e4 for "
                f"{steps} steps at q={sampling_probability:.4g}; raise target_epsilon"
            )
    if eps_of(low) <= target_epsilon:
        return low
    while (high - low) / high > tolerance:
        mid = 0.5 * (low + high)
        if eps_of(mid) > target_epsilon:
            low = mid
        else:
            high = mid
    return high


def check_dp_compatible(model: nn.Module) -> None:
    """DP-SGD needs per-sample gradients: no BatchNorm (it mixes the samples of a batch) and no
    other module opacus's validator rejects."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(
            "dp_sgd needs a model without batch-mixing layers (use the 'tiny' backbone, which uses "
            "GroupNorm, or 'mobilefacenet' / 'iresnet18' / 'iresnet34' built with norm='group'); "
            f"opacus's validator reports: {'; '.join(str(e) for e in errors[:3])}"
        )


def per_sample_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gradient of each example's loss w.r.t. every trainable parameter (``name -> [B, *shape]``)
    and the per-example losses ``[B]``.

    ``model(x, y)`` must return per-example losses ``[B]`` and treat examples independently.
    """
    from torch.func import functional_call, grad_and_value, vmap

    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b for n, b in model.named_buffers()}

    def one(params: dict[str, torch.Tensor], x1: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**params, **frozen, **buffers}, (x1.unsqueeze(0), y1.unsqueeze(0)))
        return out.sum()

    if x.shape[0] == 0:
        empty = {n: torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device) for n, p in trainable.items()}
        return empty, torch.zeros(0, device=x.device)
    if type(model) not in _NOT_VMAPPABLE:
        try:
            grads, losses = vmap(grad_and_value(one), in_dims=(None, 0, 0), randomness="error")(trainable, x, y)
            return grads, losses.detach()
        except RuntimeError as exc:
            if "vmap" not in str(exc):
                raise
            # Some op in the loss has no batching rule (e.g. F.one_hot checks its input's values):
            # fall back to one backward pass per example, which gives the same gradients.
            _NOT_VMAPPABLE.add(type(model))
    return _per_sample_loop(model, x, y)


_NOT_VMAPPABLE: set[type] = set()


def _per_sample_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    per_param: list[list[torch.Tensor]] = [[] for _ in params]
    losses = []
    for i in range(x.shape[0]):
        loss = model(x[i : i + 1], y[i : i + 1]).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for k, (g, p) in enumerate(zip(grads, params)):
            per_param[k].append(torch.zeros_like(p) if g is None else g.detach())
        losses.append(loss.detach())
    return {n: torch.stack(gs) for n, gs in zip(names, per_param)}, torch.stack(losses)


class DpSgdStep:
    """One optimiser for a client's local DP-SGD: SGD wrapped in opacus's `DPOptimizer`.

    Args:
        model: ``model(x, y) -> per-example losses``.
        lr, momentum, weight_decay: of the wrapped SGD.
        noise_multiplier, max_grad_norm: DP-SGD.
        expected_batch_size: ``q * n`` (the denominator of the averaged noisy gradient).
        generator: the noise's `torch.Generator` (on the model's device).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        momentum: float,
        weight_decay: float,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        generator: torch.Generator,
    ) -> None:
        from opacus.optimizers import DPOptimizer

        self.model = model
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        sgd = torch.optim.SGD([p for _, p in self.named], lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.optimizer = DPOptimizer(
            sgd,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=max(1, int(expected_batch_size)),
            loss_reduction="mean",
            generator=generator,
        )

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One DP-SGD step on the batch ``(x, y)`` (may be empty); returns the batch's mean loss."""
        grads, losses = per_sample_gradients(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        for name, p in self.named:
            p.grad_sample = grads[name]  # type: ignore[attr-defined]  # opacus's attribute; torch's stub lacks it
        self.optimizer.step()
        return float(losses.mean()) if losses.numel() else float("nan")
