"""`embed`: L2-normalised embeddings of a set of images with a backbone (inference only)."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from federated_core.data.faceset import FaceSet


def _as_image_tensor(images: torch.Tensor | FaceSet) -> torch.Tensor:
    if isinstance(images, FaceSet):
        return images.images
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a FaceSet or a tensor [N, 3, R, R], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [N, 3, R, R], got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if images.is_floating_point():
        if images.numel() and (images.min() < -1.0 or images.max() > 1.0):
            raise ValueError(
                "images given as a float tensor must already be in [-1, 1], got values in "
                f"[{float(images.min()):.4g}, {float(images.max()):.4g}]"
            )
        return images
    raise ValueError(f"images must be uint8 (0..255) or float in [-1, 1], got dtype {images.dtype}")


def _to_network_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(127.5).sub_(1.0)
    return batch.to(torch.float32)


def embed(
    model: nn.Module,
    images: torch.Tensor | FaceSet,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Embed ``images`` with ``model`` and L2-normalise each row.

    Args:
        model: a backbone (float ``[B, 3, R, R]`` in ``[-1, 1]`` -> ``[B, d]``).
        images: a `FaceSet`, a uint8 tensor ``[N, 3, R, R]`` (mapped to ``x / 127.5 - 1`` like
            ``FaceSet.as_float``), or a float tensor already in ``[-1, 1]``.
        batch_size: images per forward pass.
        device: where the forward passes run. The model is moved there for the call and moved
            back to where its parameters were afterwards.
        progress: show a tqdm bar over batches.

    Returns:
        float32 CPU tensor ``[N, d]`` with unit-norm rows.

    The model runs in eval mode (BatchNorm uses its running statistics, dropout is off) under
    ``torch.no_grad()``; its previous train/eval mode is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    pixels = _as_image_tensor(images)
    device = torch.device(device)
    first = next(iter(model.parameters()), None)
    original_device = first.device if first is not None else None
    was_training = model.training
    outputs: list[torch.Tensor] = []
    try:
        model.to(device)
        model.eval()
        with torch.no_grad():
            starts = range(0, pixels.shape[0], batch_size)
            for start in tqdm(starts, desc="embed", disable=not progress, leave=False):
                x = _to_network_input(pixels[start : start + batch_size], device)
                outputs.append(F.normalize(model(x).float(), dim=1).cpu())
    finally:
        model.train(was_training)
        if original_device is not None and original_device != device:
            model.to(original_device)
    if not outputs:
        dim = getattr(model, "embedding_dim", None)
        if dim is None:
            raise ValueError("images is empty and the model has no `embedding_dim` attribute to size the result")
        return torch.zeros(0, int(dim), dtype=torch.float32)
    return torch.cat(outputs)
