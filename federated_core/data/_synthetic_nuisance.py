"""Per-image nuisance of the synthetic face generator, applied to cached canonical faces in batch.

For image ``j`` of identity ``i`` every random quantity is a counter-based hash of
``(seed, i, j)`` (see `_synthetic_hash`). The pipeline, on a batch of canonical RGBA faces:

1. expression: one of the cached expression variants (neutral with probability
   ``1 - min(0.85, 0.4 s)``, where ``s`` is the nuisance scale);
2. pose: one ``grid_sample`` whose sampling grid combines scale, roll and shift (an affine map)
   with a smooth horizontal warp that moves and squeezes the inner face for yaw;
3. background clutter: a smooth random colour field (a 4x4 grid of random colours, upsampled
   with a separable cubic kernel) plus two random rectangles, composited under the clothing
   (colour per image) and the head;
4. partial occlusion: with probability ``min(0.8, 0.22 s)``, a random bar or box;
5. illumination: a multiplicative linear gradient field (stronger on the face than on the
   background), an ambient gain, per-channel colour gains and a contrast change;
6. blur: a separable Gaussian of random width (only images with sigma >= 0.25 px);
7. sensor noise: Gaussian noise of random strength, cropped from a per-generator noise bank at a
   random offset.

Batch invariance: per-image parameters (which need ``exp``/``cos``/``erfinv``) are computed in
float64 and rounded to float32; all per-pixel work uses IEEE-exact operations only (see
`_synthetic_canonical`), plus ``grid_sample``, whose CPU kernel treats every output pixel alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from federated_core.data import _synthetic_hash as rh
from federated_core.data._synthetic_canonical import EXPRESSIONS, smooth_coverage

# Slots of the per-image uniform vector.
_SLOTS = (
    "expr_on",
    "expr_which",
    "scale",
    "roll",
    "tx",
    "ty",
    "yaw",
    "light_angle",
    "light_strength",
    "ambient",
    "gain_r",
    "gain_g",
    "gain_b",
    "contrast",
    "occ_on",
    "occ_type",
    "occ_x",
    "occ_y",
    "occ_w",
    "occ_h",
    "occ_r",
    "occ_g",
    "occ_b",
    "blur",
    "noise",
    "noise_tile",
    "noise_x",
    "noise_y",
    "bg_r",
    "bg_g",
    "bg_b",
    "bg_amp",
    "c1_x",
    "c1_y",
    "c1_w",
    "c1_h",
    "c1_r",
    "c1_g",
    "c1_b",
    "c2_x",
    "c2_y",
    "c2_w",
    "c2_h",
    "c2_r",
    "c2_g",
    "c2_b",
    "cloth_r",
    "cloth_g",
    "cloth_b",
)
_SLOT = {name: i for i, name in enumerate(_SLOTS)}
NOISE_TILES = 8
_BG_GRID = 4


@dataclass
class ImageNuisance:
    """Per-image nuisance parameters (float32 ``[N]`` or ``[N, k]`` tensors, ``expression``
    int64 ``[N]``) drawn by `draw_nuisance`."""

    expression: torch.Tensor
    cos_over_scale: torch.Tensor
    sin_over_scale: torch.Tensor
    shift: torch.Tensor  # [N, 2]
    yaw: torch.Tensor
    light_dir: torch.Tensor  # [N, 2], times the gradient strength
    ambient: torch.Tensor
    gains: torch.Tensor  # [N, 3]
    contrast: torch.Tensor
    occluder: torch.Tensor  # [N, 4] box (x0, x1, y0, y1) in dst coordinates
    occluder_on: torch.Tensor
    occluder_colour: torch.Tensor  # [N, 3]
    blur_sigma_px: torch.Tensor
    noise_sigma: torch.Tensor
    noise_tile: torch.Tensor  # int64
    noise_offset: torch.Tensor  # int64 [N, 2]
    background: torch.Tensor  # [N, 3] base colour
    background_amp: torch.Tensor
    background_grid: torch.Tensor  # [N, 3, G, G] in [-0.5, 0.5]
    clutter: torch.Tensor  # [N, 2, 4] boxes (x0, x1, y0, y1)
    clutter_colour: torch.Tensor  # [N, 2, 3]
    clothing: torch.Tensor  # [N, 3]


def _muted(rgb: torch.Tensor, saturation: float) -> torch.Tensor:
    """Colours ``[N, 3]`` moved towards their grey level (``saturation`` 1 keeps them)."""
    grey = rgb.mean(-1, keepdim=True)
    return grey + (rgb - grey) * saturation


def _f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to a contiguous float32 tensor (per-image parameters are computed in float64)."""
    return t.to(torch.float32).contiguous()


class _Uniforms:
    """The per-image uniforms of `_SLOTS` (float64 ``[N, S]``) and their normal scores (clamped to +-2.5)."""

    def __init__(self, u: torch.Tensor) -> None:
        self.u = u
        self.z = (torch.erfinv(u * 2 - 1) * math.sqrt(2.0)).clamp(-2.5, 2.5)

    def U(self, name: str) -> torch.Tensor:
        """The uniform ``[N]`` of slot ``name``."""
        return self.u[:, _SLOT[name]]

    def Z(self, name: str) -> torch.Tensor:
        """The clamped standard-normal score ``[N]`` of slot ``name``."""
        return self.z[:, _SLOT[name]]

    def rgb(self, prefix: str) -> torch.Tensor:
        """The uniforms of slots ``prefix_r``, ``prefix_g``, ``prefix_b`` as ``[N, 3]``."""
        return torch.stack([self.U(f"{prefix}_r"), self.U(f"{prefix}_g"), self.U(f"{prefix}_b")], dim=-1)


def _draw_expression(d: _Uniforms, s: float) -> dict[str, torch.Tensor]:
    """Step 1: the expression variant (0 = neutral with probability ``1 - min(0.85, 0.4 s)``)."""
    expr_on = d.U("expr_on") < min(0.85, 0.4 * s)
    which = 1 + (d.U("expr_which") * (len(EXPRESSIONS) - 1)).floor().long()
    return {"expression": torch.where(expr_on, which, torch.zeros_like(which))}


def _draw_pose(d: _Uniforms, s: float) -> dict[str, torch.Tensor]:
    """Step 2: scale, roll and shift (the affine part of the sampling grid) and yaw."""
    zoom = torch.exp(0.07 * s * d.Z("scale"))
    roll = 0.11 * s * d.Z("roll")
    shift = torch.stack([0.05 * s * d.Z("tx"), 0.05 * s * d.Z("ty")], dim=-1)
    yaw = (0.22 * s * d.Z("yaw")).clamp(-0.55, 0.55)
    return {
        "cos_over_scale": _f32(torch.cos(roll) / zoom),
        "sin_over_scale": _f32(torch.sin(roll) / zoom),
        "shift": _f32(shift),
        "yaw": _f32(yaw),
    }


def _draw_illumination(d: _Uniforms, s: float) -> dict[str, torch.Tensor]:
    """Step 5: light gradient direction and strength, ambient gain, colour gains, contrast."""
    angle = 2 * math.pi * d.U("light_angle")
    strength = 0.45 * s * d.U("light_strength")
    light_dir = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1) * strength[:, None]
    ambient = torch.exp(0.12 * s * d.Z("ambient"))
    gains = torch.exp(0.05 * s * torch.stack([d.Z("gain_r"), d.Z("gain_g"), d.Z("gain_b")], dim=-1))
    contrast = torch.exp(0.10 * s * d.Z("contrast"))
    return {"light_dir": _f32(light_dir), "ambient": _f32(ambient), "gains": _f32(gains), "contrast": _f32(contrast)}


def _draw_occlusion(d: _Uniforms, s: float) -> dict[str, torch.Tensor]:
    """Step 4: with probability ``min(0.8, 0.22 s)`` a bar or box occluder, its box and colour."""
    occ_on = d.U("occ_on") < min(0.8, 0.22 * s)
    bar = d.U("occ_type") < 0.5
    cx, cy = d.U("occ_x") * 1.2 - 0.6, d.U("occ_y") * 1.2 - 0.5
    half_w = torch.where(bar, 0.45 + 0.55 * d.U("occ_w"), 0.12 + 0.28 * d.U("occ_w"))
    half_h = torch.where(bar, 0.05 + 0.08 * d.U("occ_h"), 0.12 + 0.28 * d.U("occ_h"))
    occluder = torch.stack([cx - half_w, cx + half_w, cy - half_h, cy + half_h], dim=-1)
    occ_colour = _muted(d.rgb("occ") * 0.8 + 0.1, 0.6)
    return {"occluder": _f32(occluder), "occluder_on": occ_on, "occluder_colour": _f32(occ_colour)}


def _draw_blur_and_noise(d: _Uniforms, s: float, resolution: int) -> dict[str, torch.Tensor]:
    """Steps 6-7: blur width (px, float64) and sensor-noise strength, noise-bank tile and offset."""
    blur = 0.9 * s * d.U("blur") * d.U("blur") * (resolution / 64)
    noise = (1.0 + 6.0 * s * d.U("noise")) / 255.0
    tile = (d.U("noise_tile") * NOISE_TILES).floor().long()
    offset = torch.stack([(d.U("noise_y") * resolution).floor(), (d.U("noise_x") * resolution).floor()], dim=-1).long()
    return {"blur_sigma_px": blur, "noise_sigma": _f32(noise), "noise_tile": tile, "noise_offset": offset}


def _draw_background(
    d: _Uniforms, seed: int, identities: torch.Tensor, indices: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Step 3: background colour, amplitude and colour grid, two clutter boxes, clothing colour."""
    n = identities.shape[0]
    background = _muted(d.rgb("bg") * 0.7 + 0.15, 0.5)
    bg_amp = 0.15 + 0.35 * d.U("bg_amp")
    bg_key = rh.hash_key(seed, rh.STREAM_BACKGROUND, identities, indices, device=identities.device)
    grid = rh.uniform(bg_key, 3 * _BG_GRID * _BG_GRID).reshape(n, 3, _BG_GRID, _BG_GRID) - 0.5
    grid_grey = grid.mean(1, keepdim=True)
    grid = grid_grey + (grid - grid_grey) * 0.5
    boxes, colours = [], []
    for c in ("c1", "c2"):
        bx, by = d.U(f"{c}_x") * 2 - 1, d.U(f"{c}_y") * 2 - 1
        bw, bh = 0.08 + 0.4 * d.U(f"{c}_w"), 0.08 + 0.4 * d.U(f"{c}_h")
        boxes.append(torch.stack([bx - bw, bx + bw, by - bh, by + bh], dim=-1))
        colours.append(_muted(d.rgb(c), 0.6))
    clothing = d.rgb("cloth") * 0.75 + 0.05
    return {
        "background": _f32(background),
        "background_amp": _f32(bg_amp),
        "background_grid": _f32(grid),
        "clutter": _f32(torch.stack(boxes, dim=1)),
        "clutter_colour": _f32(torch.stack(colours, dim=1)),
        "clothing": _f32(clothing),
    }


def draw_nuisance(
    seed: int, identities: torch.Tensor, indices: torch.Tensor, scale: float, resolution: int
) -> ImageNuisance:
    """Nuisance parameters of images ``indices[k]`` of identities ``identities[k]`` at nuisance
    scale ``scale`` (0: none; 1: the default amplitudes; 2: doubled)."""
    key = rh.hash_key(seed, rh.STREAM_IMAGE, identities, indices, device=identities.device)
    d = _Uniforms(rh.uniform(key, len(_SLOTS)))  # float64
    s = float(scale)
    return ImageNuisance(
        **_draw_expression(d, s),
        **_draw_pose(d, s),
        **_draw_illumination(d, s),
        **_draw_occlusion(d, s),
        **_draw_blur_and_noise(d, s, resolution),
        **_draw_background(d, seed, identities, indices),
    )


def _c(v: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, 1]; [N, k] -> [N, k, 1, 1]."""
    return v[:, None, None] if v.dim() == 1 else v[:, :, None, None]


class NuisanceRenderer:
    """Applies `ImageNuisance` to canonical faces at one resolution (see the module docstring)."""

    def __init__(self, seed: int, resolution: int, scale: float, device: torch.device) -> None:
        self.resolution = resolution
        self.scale = scale
        self.device = device
        r = resolution
        coords = (torch.arange(r, dtype=torch.float32, device=device) * 2 + 1) / r - 1
        self.coords = coords
        self.y, self.x = torch.meshgrid(coords, coords, indexing="ij")
        self.edge = 1.1 / r
        # smooth upsampling weights of the background grid: [G, R], cubic B-spline-like bumps
        knots = torch.linspace(-1, 1, _BG_GRID, dtype=torch.float64, device=device)
        d = (coords.to(torch.float64)[None, :] - knots[:, None]).abs() / (2.0 / (_BG_GRID - 1))
        w = torch.where(d < 1, 1 - 3 * d**2 + 2 * d**3, torch.zeros_like(d))
        self.bg_weights = (w / w.sum(0, keepdim=True)).to(torch.float32)
        # noise bank: NOISE_TILES standard-normal tiles [T, 3, 2R, 2R]
        key = rh.hash_key(seed, rh.STREAM_NOISE_BANK, torch.arange(NOISE_TILES, device=device), device=device)
        bank = rh.normal(key, 3 * 4 * r * r).to(torch.float32)
        self.noise_bank = bank.reshape(NOISE_TILES, 3, 2 * r, 2 * r)
        self.blur_radius = max(1, min(8, math.ceil(2.0 * 0.9 * scale * r / 64)))

    # ---- helpers (IEEE-exact per-pixel operations only) ----
    def _box(self, box: torch.Tensor) -> torch.Tensor:
        """Soft coverage ``[N, R, R]`` of axis-aligned boxes ``[N, 4]`` = (x0, x1, y0, y1)."""
        x, y = self.coords[None, :], self.coords[None, :]
        e = self.edge
        in_x = smooth_coverage(box[:, 0:1] - x, e) * smooth_coverage(x - box[:, 1:2], e)
        in_y = smooth_coverage(box[:, 2:3] - y, e) * smooth_coverage(y - box[:, 3:4], e)
        return in_y[:, :, None] * in_x[:, None, :]

    def _over(self, img: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        """``img + mask * (colour - img)`` with ``mask`` [N, R, R] and ``colour`` [N, 3]."""
        return img + mask.unsqueeze(1) * (_c(colour) - img)

    def _background(self, p: ImageNuisance) -> torch.Tensor:
        w = self.bg_weights  # [G, R], each column sums to 1
        # base colour + amplitude * grid, upsampled separably (first along x on the small grid)
        g = _c(p.background) + p.background_grid * _c(p.background_amp)[:, None]  # [N, 3, G, G]
        rows = g[:, :, :, 0, None] * w[0]
        for k in range(1, _BG_GRID):
            rows = rows + g[:, :, :, k, None] * w[k]  # [N, 3, G, R]
        img = rows[:, :, 0, None, :] * w[0][:, None]
        for j in range(1, _BG_GRID):
            img += rows[:, :, j, None, :] * w[j][:, None]
        for k in range(p.clutter.shape[1]):
            img = self._over(img, self._box(p.clutter[:, k]) * 0.75, p.clutter_colour[:, k])
        return img

    def _grid(self, p: ImageNuisance) -> torch.Tensor:
        """Sampling grid ``[N, R, R, 2]``: inverse roll/scale/shift, then the yaw warp."""
        xs = self.x - _c(p.shift[:, 0])
        ys = self.y - _c(p.shift[:, 1])
        c, s = _c(p.cos_over_scale), _c(p.sin_over_scale)
        u = c * xs + s * ys
        v = c * ys - s * xs
        # yaw: inner features move by up to 0.25 * yaw, the outline by less (rational bump)
        dv = v - 0.1
        q = u * u * (1 / 0.30) + dv * dv * (1 / 0.45)
        env = 1 / (1 + q * q)
        yaw = _c(p.yaw)
        u = u - yaw * (env * 0.25 + 0.04)
        return torch.stack([u, v], dim=-1)

    def _blur(self, img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of images with ``sigma >= 0.25`` px (others unchanged)."""
        sel = torch.nonzero(sigma >= 0.25).flatten()
        if sel.numel() == 0:
            return img
        rad = self.blur_radius
        taps = torch.arange(-rad, rad + 1, dtype=torch.float64, device=self.device)
        sig = sigma[sel].to(torch.float64)
        w = torch.exp(-(taps[None, :] ** 2) / (2 * sig[:, None] ** 2))
        w = (w / w.sum(1, keepdim=True)).to(torch.float32)  # [M, 2 rad + 1]
        x = img[sel]
        r = self.resolution
        for dim in (3, 2):
            pad = (rad, rad, 0, 0) if dim == 3 else (0, 0, rad, rad)
            xp = F.pad(x, pad, mode="replicate")
            out = xp.narrow(dim, 0, r) * _c(w[:, 0])[:, None]
            for k in range(1, 2 * rad + 1):
                out += xp.narrow(dim, k, r) * _c(w[:, k])[:, None]
            x = out
        img = img.clone()
        img[sel] = x
        return img

    def _noise(self, p: ImageNuisance) -> torch.Tensor:
        """Unit-variance noise ``[N, 3, R, R]``: crops of the noise bank at each image's offset."""
        r = self.resolution
        tiles = p.noise_tile.tolist()
        offsets = p.noise_offset.tolist()
        return torch.stack([self.noise_bank[t, :, oy : oy + r, ox : ox + r] for t, (oy, ox) in zip(tiles, offsets)])

    def apply(self, canonical: torch.Tensor, p: ImageNuisance) -> torch.Tensor:
        """Images float32 ``[N, 3, R, R]`` in [0, 1] from canonical faces ``[N, 5, R, R]`` (the
        expression variant already selected) and their nuisance ``p``."""
        warped = F.grid_sample(canonical, self._grid(p), mode="bilinear", padding_mode="border", align_corners=False)
        head, alpha, cloth = warped[:, :3], warped[:, 3:4], warped[:, 4:5]
        img = self._background(p)
        img = img + cloth * (_c(p.clothing) - img)
        img = img * (1 - alpha) + head
        occ = self._box(p.occluder) * _c(p.occluder_on.to(torch.float32))
        img = self._over(img, occ, p.occluder_colour)
        # illumination: linear gradient, stronger on the face (alpha) than on the background
        grad = _c(p.light_dir[:, 0]) * self.x + _c(p.light_dir[:, 1]) * self.y  # [N, R, R]
        light = (1 + grad * (0.5 + 0.7 * alpha[:, 0])) * _c(p.ambient * p.contrast)
        # colour gains and contrast about mid-grey: img * light * gains + 0.5 * (1 - contrast)
        img = img * (light.unsqueeze(1) * _c(p.gains))
        img += _c(0.5 - 0.5 * p.contrast)[:, None]
        if self.scale > 0:
            img = self._blur(img, p.blur_sigma_px)
        img += self._noise(p) * _c(p.noise_sigma)[:, None]
        return img.clamp_(0.0, 1.0)
