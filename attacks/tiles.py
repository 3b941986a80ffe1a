"""Reconstruction grids a reader can judge (issue #14 item 7): real images above the attack's
reconstructions, each tile large, captioned with its score and framed by its verdict (green: passes
the evaluator's threshold at the stated false-accept rate; red: does not; grey: not scored), with
the attack's ceiling (oracle) and floor (null) rows beside it.

One PNG per grid, composed with Pillow (no matplotlib: `attacks` sits below `reports`), the same
bytes for the same inputs. `attacks.inversion.save_image_grid` draws its plain grids with it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PASS_COLOUR = (34, 139, 34)
FAIL_COLOUR = (200, 30, 30)
NEUTRAL_COLOUR = (170, 170, 170)
_LABEL_WIDTH = 120
_CAPTION_HEIGHT = 16
_BORDER = 3
_GAP = 6


@dataclass(frozen=True)
class TileRow:
    """One row of a grid: ``images`` ``[n, C, H, W]`` (uint8, or float in [0, 1]); per tile an
    optional ``caption`` and ``passed`` (True / False / None: not scored)."""

    label: str
    images: torch.Tensor
    captions: Sequence[str] | None = None
    passed: Sequence[bool | None] | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(f"row {self.label!r}: images must be [n, 1|3, H, W], got {tuple(self.images.shape)}")
        for name in ("captions", "passed"):
            given = getattr(self, name)
            if given is not None and len(given) != self.images.shape[0]:
                raise ValueError(
                    f"row {self.label!r}: {name} has {len(given)} entries for {self.images.shape[0]} images"
                )


def scored_captions(similarity: Sequence[float] | np.ndarray, passed: Sequence[bool | None] | None) -> list[str]:
    """Tile captions ``"s=0.41 pass"`` from identity similarities and verdicts (NaN: ``"n/a"``)."""
    out = []
    for i, s in enumerate(similarity):
        verdict = None if passed is None else passed[i]
        word = "" if verdict is None else (" pass" if verdict else " fail")
        out.append("n/a" if not np.isfinite(s) else f"s={float(s):.2f}{word}")
    return out


def _as_rgb_uint8(images: torch.Tensor, size: int) -> np.ndarray:
    """``[n, size, size, 3]`` uint8 (grey expanded to RGB; resized with nearest neighbours, so
    a reader sees the pixels the attack produced)."""
    x = images.detach().cpu()
    x = x.float() if x.dtype == torch.uint8 else x.float().clamp(0, 1) * 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="nearest")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_tile_grid(
    path: str | Path, rows: Sequence[TileRow], title: str = "", tile: int = 96, max_columns: int = 8
) -> Path:
    """Write ``rows`` as one PNG at ``path``: row labels on the left, the first ``max_columns``
    tiles of each row at ``tile`` pixels, each framed by its verdict and captioned below;
    ``title`` (e.g. the threshold rule) on top. Returns ``path``."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows:
        raise ValueError("rows must hold at least one TileRow")
    if tile < 8 or max_columns < 1:
        raise ValueError(f"tile must be >= 8 and max_columns >= 1, got tile={tile}, max_columns={max_columns}")
    n = min(max_columns, max(r.images.shape[0] for r in rows))
    cell_w, cell_h = tile + 2 * _BORDER + _GAP, tile + 2 * _BORDER + _CAPTION_HEIGHT + _GAP
    top = 22 if title else _GAP
    canvas = Image.new("RGB", (_LABEL_WIDTH + n * cell_w + _GAP, top + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=11)
    if title:
        draw.text((_GAP, 4), title, fill="black", font=font)
    for r, row in enumerate(rows):
        y = top + r * cell_h
        draw.text((_GAP, y + tile // 2), row.label, fill="black", font=font)
        pixels = _as_rgb_uint8(row.images[:n], tile)
        for c in range(pixels.shape[0]):
            x = _LABEL_WIDTH + c * cell_w
            verdict = None if row.passed is None else row.passed[c]
            colour = NEUTRAL_COLOUR if verdict is None else (PASS_COLOUR if verdict else FAIL_COLOUR)
            draw.rectangle((x, y, x + tile + 2 * _BORDER - 1, y + tile + 2 * _BORDER - 1), fill=colour)
            canvas.paste(Image.fromarray(pixels[c]), (x + _BORDER, y + _BORDER))
            if row.captions is not None:
                draw.text((x, y + tile + 2 * _BORDER + 1), row.captions[c], fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
