"""Reconstruction grids (`attacks.tiles`): geometry, verdict frames, captions, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attacks import tiles
from attacks.tiles import TileRow, save_tile_grid, scored_captions


def _frame_colour(img: np.ndarray, row: int, col: int, tile: int, top: int) -> tuple[int, ...]:
    cell_w = tile + 2 * tiles._BORDER + tiles._GAP
    cell_h = tile + 2 * tiles._BORDER + tiles._CAPTION_HEIGHT + tiles._GAP
    y, x = top + row * cell_h + 1, tiles._LABEL_WIDTH + col * cell_w + 1
    return tuple(int(v) for v in img[y, x])


def test_frames_follow_the_verdicts_and_tiles_keep_their_pixels(tmp_path) -> None:
    real = torch.full((3, 3, 4, 4), 200, dtype=torch.uint8)
    rec = torch.zeros(3, 3, 4, 4)
    rec[1] = 1.0
    passed = [True, False, None]
    rows = [TileRow("real", real), TileRow("attack", rec, scored_captions([0.5, 0.1, np.nan], passed), passed)]
    path = save_tile_grid(tmp_path / "g.png", rows, title="pass: s >= 0.3 at FAR 1e-3", tile=24)
    img = np.asarray(Image.open(path).convert("RGB"))
    top = 22
    assert _frame_colour(img, 1, 0, 24, top) == tiles.PASS_COLOUR
    assert _frame_colour(img, 1, 1, 24, top) == tiles.FAIL_COLOUR
    assert _frame_colour(img, 1, 2, 24, top) == tiles.NEUTRAL_COLOUR
    assert _frame_colour(img, 0, 0, 24, top) == tiles.NEUTRAL_COLOUR  # real images are not scored
    cell_h = 24 + 2 * tiles._BORDER + tiles._CAPTION_HEIGHT + tiles._GAP
    inner = (top + cell_h + tiles._BORDER + 12, tiles._LABEL_WIDTH + (24 + 2 * tiles._BORDER + tiles._GAP) + 15)
    assert tuple(img[inner]) == (255, 255, 255)  # tile 1 of the attack row is white, upscaled by nearest
    assert tuple(img[top + tiles._BORDER + 12, tiles._LABEL_WIDTH + tiles._BORDER + 12]) == (200, 200, 200)
    again = save_tile_grid(tmp_path / "h.png", rows, title="pass: s >= 0.3 at FAR 1e-3", tile=24)
    assert again.read_bytes() == path.read_bytes()  # same inputs, same bytes


def test_captions_name_score_and_verdict() -> None:
    assert scored_captions([0.4123, np.nan, 0.2], [True, None, False]) == ["s=0.41 pass", "n/a", "s=0.20 fail"]
    assert scored_captions([0.3], None) == ["s=0.30"]


def test_bad_rows_are_refused_with_the_row_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="row 'attack': captions has 1 entries for 2 images"):
        TileRow("attack", torch.zeros(2, 3, 4, 4), captions=["a"])
    with pytest.raises(ValueError, match=r"row 'x': images must be \[n, 1\|3, H, W\]"):
        TileRow("x", torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="at least one TileRow"):
        save_tile_grid(tmp_path / "e.png", [])
