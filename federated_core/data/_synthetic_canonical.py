"""Canonical (nuisance-free) face of each identity, rendered as soft 2-D shapes in torch.

A face is painted back to front with the premultiplied "over" operator (Porter & Duff 1984):
long back hair, neck, ears, the face outline with shading, cheeks, a mole, the beard, the nose;
then, once per expression variant, the eye sockets, eyes (sclera, iris, pupil, highlight, upper
lid), brows and mouth; then the front hair cap and glasses on top. Every shape is a soft mask
``smoothstep(1/2 - sdf / (2 w))`` of an (approximate) signed distance ``sdf``, with a transition
``w`` of about one pixel, so the result is antialiased at any resolution. The expression
variants only differ in the eyes, brows and mouth, which are painted inside fixed windows
(`feature_windows`) rather than over the whole canvas.

Batch invariance. All per-pixel work is elementwise over the batch, and uses only IEEE-exact
operations (``+ - * /``, ``sqrt``, ``min``/``max``/``clamp``, ``where``), one per torch call.
Transcendental functions (``sigmoid``, ``pow``, ``atan2``) are not exact: torch's vectorised and
scalar (tail) CPU paths differ in the last bit, and which elements fall in a tail depends on the
batch size. The textures that need ``sin``/``atan2`` depend only on pixel coordinates and are
computed once per renderer. Hence an identity's pixels do not depend on the other identities it
is rendered with.

Output per identity: ``[E, 5, R, R]`` floats in [0, 1] -- premultiplied RGB of the head, the head
alpha, and the alpha of the clothing (whose colour is chosen per image) -- for the ``E``
expression variants of `EXPRESSIONS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from federated_core.data._synthetic_identity import PARAMS

# Palettes (RGB in [0, 1]); a tone in [0, 1] interpolates piecewise-linearly along a palette.
SKIN_PALETTE = (
    (0.97, 0.84, 0.74),
    (0.92, 0.74, 0.60),
    (0.80, 0.59, 0.44),
    (0.64, 0.45, 0.32),
    (0.45, 0.31, 0.22),
    (0.30, 0.20, 0.15),
)
HAIR_PALETTE = (
    (0.05, 0.045, 0.045),
    (0.12, 0.09, 0.07),
    (0.22, 0.15, 0.10),
    (0.36, 0.24, 0.14),
    (0.52, 0.37, 0.22),
    (0.70, 0.55, 0.34),
    (0.86, 0.75, 0.50),
)
IRIS_PALETTE = (
    (0.18, 0.11, 0.07),
    (0.36, 0.21, 0.10),
    (0.44, 0.36, 0.17),
    (0.30, 0.44, 0.25),
    (0.33, 0.48, 0.68),
    (0.47, 0.54, 0.60),
)
FRAME_PALETTE = ((0.05, 0.05, 0.05), (0.35, 0.20, 0.10), (0.70, 0.62, 0.45), (0.55, 0.56, 0.60))


@dataclass(frozen=True)
class Expression:
    """Offsets of one expression variant from the identity's neutral face."""

    name: str
    mouth_curve: float = 0.0
    mouth_w: float = 1.0
    mouth_open: float = 0.0
    eye_h: float = 1.0
    brow_dy: float = 0.0
    brow_tilt: float = 0.0


EXPRESSIONS: tuple[Expression, ...] = (
    Expression("neutral"),
    Expression("smile", mouth_curve=0.035, mouth_w=1.15, mouth_open=0.012, eye_h=0.72, brow_dy=0.004),
    Expression("surprise", mouth_curve=-0.004, mouth_w=0.80, mouth_open=0.055, eye_h=1.30, brow_dy=-0.035),
    Expression("frown", mouth_curve=-0.018, mouth_w=0.95, eye_h=0.62, brow_dy=0.020, brow_tilt=0.30),
)


def palette(tone: torch.Tensor, colours: tuple[tuple[float, float, float], ...]) -> torch.Tensor:
    """Piecewise-linear interpolation of ``tone`` in [0, 1] along ``colours``: ``[N, 3]``."""
    table = torch.tensor(colours, dtype=torch.float32, device=tone.device)
    pos = tone.clamp(0.0, 1.0) * (len(colours) - 1)
    i0 = pos.floor().long().clamp(max=len(colours) - 2)
    frac = (pos - i0.to(pos.dtype)).unsqueeze(-1)
    return table[i0] * (1 - frac) + table[i0 + 1] * frac


def smooth_coverage(sdf: torch.Tensor, width: float | torch.Tensor) -> torch.Tensor:
    """Coverage of a soft shape: 1 well inside (``sdf <= -width``), 0 well outside, a cubic
    smoothstep in between. Uses only IEEE-exact operations (see the module docstring)."""
    t = (0.5 - sdf / (2 * width)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


class _Canvas:
    """Premultiplied RGB + alpha canvas with the "over" operator."""

    def __init__(self, batch: int, resolution: int, device: torch.device) -> None:
        self.rgb = torch.zeros(batch, 3, resolution, resolution, device=device)
        self.alpha = torch.zeros(batch, 1, resolution, resolution, device=device)

    def paint(self, mask: torch.Tensor, colour: torch.Tensor) -> None:
        """Paint ``colour`` ([B, 3] or [B, 3, R, R]) with coverage ``mask`` ([B, R, R])."""
        m = mask.unsqueeze(1)
        c = colour if colour.dim() == 4 else colour[:, :, None, None]
        keep = 1 - m
        self.rgb = self.rgb * keep
        self.rgb += c * m
        self.alpha = self.alpha * keep
        self.alpha += m

    def darken(self, mask: torch.Tensor, amount: float | torch.Tensor) -> None:
        """Multiply the colour under ``mask`` by ``1 - amount * mask`` (shading; alpha unchanged)."""
        self.rgb = self.rgb * (1 - amount * mask.unsqueeze(1))


def _spec(name: str) -> tuple[float, float]:
    spec = next(p for p in PARAMS if p.name == name)
    return spec.lo, spec.hi


def feature_windows() -> dict[str, tuple[float, float, float, float]]:
    """Boxes ``(x0, x1, y0, y1)`` that contain the left eye + brow, the right eye + brow and the
    mouth of every possible identity and expression (from the parameter ranges, with margins).
    Coverage of a soft shape is exactly 0 beyond its edge, so painting the expression-dependent
    features inside these boxes only gives the same pixels as painting the whole canvas (checked
    by a test), at a fraction of the cost."""
    ey_lo = _spec("face_cy")[0] + _spec("eye_y")[0]
    ey_hi = _spec("face_cy")[1] + _spec("eye_y")[1]
    eye_w, eye_h, brow_w = _spec("eye_w")[1], _spec("eye_h")[1] * 1.3, _spec("brow_w")[1]
    brow_reach = (
        _spec("brow_gap")[1] + 0.6 * eye_h + 0.035 + _spec("brow_arch")[1] + _spec("brow_th")[1] + 0.25 * brow_w
    )
    socket_a, socket_b = eye_w * 1.45 + 0.04, eye_w * 0.75 + 0.04
    eye_top = ey_lo - max(brow_reach, socket_b + 0.01) - 0.06
    eye_bottom = ey_hi + max(socket_b - 0.01, 1.3 * eye_h) + 0.06
    outer = _spec("eye_dx")[1] + max(socket_a, brow_w + 0.012 + 0.02) + 0.06
    inner = _spec("eye_dx")[0] - max(socket_a, brow_w - 0.012 + 0.02) - 0.06
    my_lo = ey_lo + _spec("nose_len")[0] + _spec("mouth_gap")[0]
    my_hi = ey_hi + _spec("nose_len")[1] + _spec("mouth_gap")[1]
    resting = max(abs(_spec("mouth_curve")[0]), _spec("mouth_curve")[1])
    curve = 0.7 * (resting + max(abs(e.mouth_curve) for e in EXPRESSIONS))
    mouth_top = my_lo - curve - 0.9 * _spec("lip_th")[1] - 0.06
    mouth_bottom = my_hi + curve + max(e.mouth_open for e in EXPRESSIONS) + 1.25 * _spec("lip_th")[1] + 0.06
    mouth_x = _spec("mouth_w")[1] * max(e.mouth_w for e in EXPRESSIONS) + 0.06
    return {
        "left_eye": (-outer, -inner, eye_top, eye_bottom),
        "right_eye": (inner, outer, eye_top, eye_bottom),
        "mouth": (-mouth_x, mouth_x, mouth_top, mouth_bottom),
    }


def _col(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None]


class CanonicalRenderer:
    """Renders canonical faces of identities at one resolution (see the module docstring)."""

    def __init__(self, resolution: int, device: torch.device) -> None:
        self.resolution = resolution
        self.device = device
        coords = (torch.arange(resolution, dtype=torch.float32, device=device) * 2 + 1) / resolution - 1
        self.y, self.x = torch.meshgrid(coords, coords, indexing="ij")  # [R, R]
        self.edge = 1.1 / resolution  # transition of about 1.1 px (the pixel size is 2 / R)
        # coordinate-only textures (computed once, so no transcendental runs per identity)
        x, y = self.x, self.y
        self.strands = 1 + 0.04 * torch.sin(x * 90 + 5 * torch.sin(y * 8))
        self.stubble = 0.85 + 0.15 * torch.sin(x * 150) * torch.sin(y * 150)
        self.wave = torch.sin(torch.atan2(y - 0.07, x) * 16)
        # pixel windows of the expression-dependent features (see `feature_windows`)
        pad = 3 * self.edge + 4.0 / resolution  # soft edges reach about one edge width past a shape
        self.windows: dict[str, tuple[int, int, int, int]] = {}
        for name, (wx0, wx1, wy0, wy1) in feature_windows().items():
            in_x = ((coords >= wx0 - pad) & (coords <= wx1 + pad)).nonzero().flatten()
            in_y = ((coords >= wy0 - pad) & (coords <= wy1 + pad)).nonzero().flatten()
            self.windows[name] = (int(in_y[0]), int(in_y[-1]) + 1, int(in_x[0]), int(in_x[-1]) + 1)

    @contextlib.contextmanager
    def _window(self, canvas: _Canvas, window: tuple[int, int, int, int] | None) -> Iterator[_Canvas]:
        """A sub-canvas of ``canvas`` restricted to ``window`` = (row0, row1, col0, col1) (the
        whole canvas for ``None``), with the coordinate grid restricted likewise; what is painted
        on it is written back on exit."""
        if window is None:
            yield canvas
            return
        r0, r1, c0, c1 = window
        full = self.x, self.y
        sub = _Canvas(0, self.resolution, self.device)
        sub.rgb, sub.alpha = canvas.rgb[:, :, r0:r1, c0:c1], canvas.alpha[:, :, r0:r1, c0:c1]
        self.x, self.y = full[0][r0:r1, c0:c1], full[1][r0:r1, c0:c1]
        try:
            yield sub
        finally:
            self.x, self.y = full
        canvas.rgb[:, :, r0:r1, c0:c1] = sub.rgb
        canvas.alpha[:, :, r0:r1, c0:c1] = sub.alpha

    # ---- soft shape primitives (all return [B, R, R] coverage in [0, 1]) ----
    def _soft(self, sdf: torch.Tensor, edge: float | None = None) -> torch.Tensor:
        return smooth_coverage(sdf, edge or self.edge)

    def _ellipse_sdf(self, cx, cy, a, b, dx=None, dy=None) -> torch.Tensor:
        dx = self.x - cx if dx is None else dx
        dy = self.y - cy if dy is None else dy
        # first-order distance (r - 1) / |grad r| with r = |(dx / a, dy / b)|; |grad r| is
        # computed as sqrt((u^2/a^2 + v^2/b^2) / (u^2 + v^2)), regularised at the centre
        u, v = dx / a, dy / b
        uu, vv = u * u, v * v
        r = torch.sqrt(uu + vv)
        inv_ab = 1 / (a * b)
        grad = torch.sqrt((uu / (a * a) + vv / (b * b) + 1e-6 * inv_ab) / (uu + vv + 1e-6))
        return (r - 1) / grad

    def _ellipse(self, cx, cy, a, b, edge: float | None = None) -> torch.Tensor:
        return self._soft(self._ellipse_sdf(cx, cy, a, b), edge)

    def _band(self, v: torch.Tensor, lo, hi, edge: float | None = None) -> torch.Tensor:
        """Soft indicator of ``lo < v < hi``."""
        e = edge or self.edge
        return smooth_coverage(lo - v, e) * smooth_coverage(v - hi, e)

    # ---- the face ----
    def render(self, p: dict[str, torch.Tensor], windowed: bool = True) -> torch.Tensor:
        """Canonical faces of a batch of identities: float ``[B, E, 5, R, R]`` in [0, 1].

        ``windowed=False`` paints the expression features over the whole canvas instead of
        their `feature_windows` (slower, same pixels; used to test the windows)."""
        base, clothing = self._base(p)
        num_expr = len(EXPRESSIONS)
        rep = {k: v.repeat_interleave(num_expr) for k, v in p.items()}
        canvas = _Canvas(0, self.resolution, self.device)
        canvas.rgb = base.rgb.repeat_interleave(num_expr, dim=0)
        canvas.alpha = base.alpha.repeat_interleave(num_expr, dim=0)
        self._features(canvas, rep, windowed)
        top = self._top(p)
        rgb = canvas.rgb.unflatten(0, (-1, num_expr))
        alpha = canvas.alpha.unflatten(0, (-1, num_expr))
        rgb = rgb * (1 - top.alpha[:, None]) + top.rgb[:, None]
        alpha = alpha * (1 - top.alpha[:, None]) + top.alpha[:, None]
        cloth = clothing.unsqueeze(1).expand(-1, num_expr, -1, -1, -1)
        return torch.cat([rgb, alpha, cloth], dim=2).clamp_(0.0, 1.0)

    def _colours(self, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        skin = palette(p["skin_tone"], SKIN_PALETTE)
        warm = p["skin_warm"] - 0.5
        skin = skin * torch.stack([1 + 0.06 * warm, 1 + 0.0 * warm, 1 - 0.10 * warm], dim=-1)
        hair = palette(p["hair_tone"], HAIR_PALETTE)
        red = p["hair_red"].unsqueeze(-1) * torch.tensor([0.14, 0.01, -0.04], device=skin.device)
        hair = (hair + red * (0.3 + hair.mean(-1, keepdim=True))).clamp(0, 1)
        gray = (p["hair_gray"] - 0.65).clamp(min=0).unsqueeze(-1) / 0.35
        hair = hair * (1 - gray) + 0.72 * gray
        lip = skin * torch.tensor([0.82, 0.55, 0.55], device=skin.device)
        lip = lip + p["lip_tone"].unsqueeze(-1) * torch.tensor([0.10, -0.03, 0.0], device=skin.device)
        brow = hair * (0.45 + 0.4 * (1 - p["brow_dark"])).unsqueeze(-1)
        return {
            "skin": skin.clamp(0, 1),
            "hair": hair,
            "lip": lip.clamp(0, 1),
            "brow": brow,
            "iris": palette(p["eye_tone"], IRIS_PALETTE),
            "frame": palette(p["glasses_tone"], FRAME_PALETTE),
        }

    def _geometry(self, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cy = p["face_cy"]
        ey = cy + p["eye_y"]
        tip = ey + p["nose_len"]
        return {"cy": cy, "ey": ey, "tip": tip, "my": tip + p["mouth_gap"]}

    def _face_sdf(self, p: dict[str, torch.Tensor], grow: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Egg-shaped outline: an ellipse whose half-width narrows towards the chin."""
        cy, fw, fh = _col(p["face_cy"]), _col(p["face_w"]), _col(p["face_h"])
        dy = self.y - cy
        t = (dy / fh).clamp(0.0, 1.0)
        a = fw * (1 - _col(p["jaw"]) * t * t) + grow
        return self._ellipse_sdf(0.0, cy, a, fh + grow, dx=self.x, dy=dy)

    def _base(self, p: dict[str, torch.Tensor]) -> tuple[_Canvas, torch.Tensor]:
        b = p["face_w"].shape[0]
        c = self._colours(p)
        g = self._geometry(p)
        x, y = self.x, self.y
        cy, fw, fh = _col(g["cy"]), _col(p["face_w"]), _col(p["face_h"])
        ey, tip, my = _col(g["ey"]), _col(g["tip"]), _col(g["my"])
        canvas = _Canvas(b, self.resolution, self.device)
        vol = _col(p["hair_volume"]) * (1 - _col(p["bald"]))

        # long hair behind the head and shoulders
        hair_len = _col(p["hair_len"])
        long_amount = ((hair_len - 0.45) / 0.06).clamp(0, 1) * (1 - _col(p["bald"]))
        bottom = cy + fh * (0.15 + 1.1 * hair_len)
        half_w = fw + 0.6 * vol + 0.06
        back = self._band(x, -half_w, half_w) * self._band(y, cy - fh * 0.4, bottom, 0.03)
        back = torch.maximum(back, self._ellipse(0.0, cy - 0.05, half_w, fh + vol))
        canvas.paint(back * long_amount, c["hair"][:, :, None, None] * 0.8 * self.strands[None, None])

        # clothing (separate alpha; colour per image) and neck
        clothing = self._ellipse(0.0, cy + fh + 0.62, 0.98, 0.46).unsqueeze(1)
        neck_w = _col(p["neck_w"])
        neck = self._band(x, -neck_w, neck_w) * self._band(y, cy, cy + fh + 0.28, 0.02)
        canvas.paint(neck, c["skin"] * 0.86)
        canvas.darken(self._ellipse(0.0, cy + fh * 0.96, fw * 0.5, 0.07, 0.06) * neck, 0.22)

        # ears
        ear = _col(p["ear_size"])
        ear_y = ey + 0.05
        for s in (-1.0, 1.0):
            ex = s * fw * (1 - 0.2 * _col(p["jaw"]) * ((ear_y - cy) / fh).clamp(0, 1) ** 2) * 0.97
            canvas.paint(self._ellipse(ex, ear_y, ear * 0.45, ear), c["skin"] * 0.93)
            canvas.darken(self._ellipse(ex + s * 0.012, ear_y, ear * 0.22, ear * 0.6, 0.02), 0.22)

        # face with radial shading
        face_sdf = self._face_sdf(p)
        face = self._soft(face_sdf)
        fx, fy = x / fw, (y - cy) / fh
        r = torch.sqrt(fx * fx + fy * fy)
        shade = (1.06 - 0.24 * r * r * r).clamp(0.6, 1.1).unsqueeze(1)
        canvas.paint(face, c["skin"][:, :, None, None] * shade)
        blush = torch.tensor([0.9, 0.35, 0.4], device=self.device)
        for s in (-1.0, 1.0):
            cheek = self._ellipse(s * (_col(p["eye_dx"]) + 0.04), tip - 0.01, 0.09, 0.06, 0.05)
            canvas.paint(cheek * face * 0.12, blush.expand(b, 3))

        # mole
        mole = self._ellipse(_col(p["mole_x"]) * fw, cy + _col(p["mole_y"]) * fh, 0.011, 0.011)
        canvas.paint(mole * face * _col(p["mole"]) * 0.8, c["skin"] * 0.35)

        # beard: full (style < 0.4), goatee + moustache (< 0.7), moustache only
        style = _col(p["beard_style"])
        has_beard = _col(p["beard"]) * _col(p["beard_density"])
        lip_th = _col(p["lip_th"])
        mouth_w = _col(p["mouth_w"])
        grown = self._soft(self._face_sdf(p, grow=0.035), 0.02)
        side = (x / fw).abs().clamp(max=1)
        top_line = tip + 0.02 - (tip - ey - 0.06) * side * torch.sqrt(side)
        full = grown * self._soft(top_line - y, 0.035)
        goatee = grown * self._band(x, -mouth_w * 1.15, mouth_w * 1.15, 0.03) * self._soft(my - 0.02 - y, 0.015)
        moustache = self._band(x, -mouth_w * 1.1, mouth_w * 1.1, 0.015)
        moustache = moustache * self._band(y, tip + 0.02, my - lip_th * 0.5, 0.008)
        beard = torch.where(style < 0.4, full, torch.where(style < 0.7, torch.maximum(goatee, moustache), moustache))
        canvas.paint(beard * has_beard * self.stubble, c["hair"] * 0.75)

        # nose: side strokes, tip highlight, shadow under the tip, nostrils
        nose_w = _col(p["nose_w"])
        for s in (-1.0, 1.0):
            stroke = self._band(x, s * nose_w * 0.45 - 0.012, s * nose_w * 0.45 + 0.012, 0.02)
            canvas.darken(stroke * self._band(y, ey + 0.03, tip - 0.005, 0.04), 0.08 + 0.08 * (s > 0))
            wing = self._ellipse(s * nose_w * 0.62, tip - 0.004, nose_w * 0.36, 0.030, 0.010)
            canvas.darken(wing, 0.14)
            nostril = self._ellipse(s * nose_w * 0.34, tip + 0.012, nose_w * 0.24, 0.012)
            canvas.paint(nostril * 0.8, c["skin"] * 0.3)
        canvas.darken(self._ellipse(0.0, tip + 0.024, nose_w * 0.85, 0.020, 0.012), 0.25)
        highlight = self._ellipse(0.0, tip - 0.018, nose_w * 0.32, 0.024, 0.012)
        canvas.paint(highlight * 0.18, torch.ones(b, 3, device=self.device))
        return canvas, clothing

    def _features(self, canvas: _Canvas, p: dict[str, torch.Tensor], windowed: bool = True) -> None:
        """Expression-dependent features on a batch whose entries cycle through `EXPRESSIONS`,
        each eye and the mouth painted inside its window (see `feature_windows`)."""
        b = p["face_w"].shape[0]
        num_expr = len(EXPRESSIONS)
        expr = {
            f: torch.tensor([getattr(e, f) for e in EXPRESSIONS], device=self.device).repeat(b // num_expr)
            for f in ("mouth_curve", "mouth_w", "mouth_open", "eye_h", "brow_dy", "brow_tilt")
        }
        c = self._colours(p)
        g = self._geometry(p)
        for s in (-1.0, 1.0):
            window = self.windows["left_eye" if s < 0 else "right_eye"] if windowed else None
            with self._window(canvas, window) as sub:
                self._eye(sub, p, c, g, expr, s)
        with self._window(canvas, self.windows["mouth"] if windowed else None) as sub:
            self._mouth(sub, p, c, g, expr)

    def _eye(
        self,
        canvas: _Canvas,
        p: dict[str, torch.Tensor],
        c: dict[str, torch.Tensor],
        g: dict[str, torch.Tensor],
        expr: dict[str, torch.Tensor],
        s: float,
    ) -> None:
        """Eye socket, sclera, iris, pupil, glint, upper lid, crease and brow of side ``s``."""
        b = p["face_w"].shape[0]
        x, y = self.x, self.y
        ey = _col(g["ey"])
        eye_w = _col(p["eye_w"])
        eye_h = _col(p["eye_h"] * expr["eye_h"])
        tilt = _col(p["eye_tilt"])
        iris_r = _col(p["iris_frac"]) * eye_w * 0.62
        sclera_col = (0.93 * torch.ones(b, 3, device=self.device) + 0.05 * c["skin"]).clamp(max=1)
        ex = s * _col(p["eye_dx"])
        lx = s * (x - ex)
        ly = y - ey + tilt * lx
        canvas.darken(self._ellipse(ex, ey - 0.01, eye_w * 1.45, eye_w * 0.75, 0.04), 0.10)
        b_eye = torch.where(ly < 0, eye_h, eye_h * 0.8)
        eye_sdf = self._ellipse_sdf(0.0, 0.0, eye_w, b_eye, dx=lx, dy=ly)
        eye = self._soft(eye_sdf)
        canvas.paint(eye, sclera_col)
        iris_cy = ey + eye_h * 0.12
        iris = self._ellipse(ex, iris_cy, iris_r, iris_r) * eye
        canvas.paint(iris, c["iris"])
        canvas.paint(self._ellipse(ex, iris_cy, iris_r * 0.45, iris_r * 0.45) * eye, c["iris"] * 0.15)
        glint = self._ellipse(ex - 0.3 * iris_r, iris_cy - 0.35 * iris_r, iris_r * 0.22, iris_r * 0.22)
        canvas.paint(glint * eye * 0.85, torch.ones(b, 3, device=self.device))
        upper = self._soft(ly + 0.25 * eye_h)
        span = self._band(lx, -eye_w * 1.08, eye_w * 1.08, 0.01)
        lid = self._soft(eye_sdf.abs() - 0.009) * upper * span
        canvas.paint(lid, c["brow"] * 0.6)
        crease_sdf = self._ellipse_sdf(0.0, 0.0, eye_w * 1.02, b_eye + 0.026, dx=lx, dy=ly)
        crease = self._soft(crease_sdf.abs() - 0.005, 1.5 * self.edge) * upper
        canvas.darken(crease, 0.12)

        # brow: a tapered arc above the eye; t runs from the inner (-1) to the outer (+1) end
        brow_w = _col(p["brow_w"])
        bx = ex + s * 0.012
        by = ey - _col(p["brow_gap"]) - eye_h * 0.6 + _col(expr["brow_dy"])
        t = s * (x - bx) / brow_w
        brow_tilt = _col(p["brow_tilt"]) + _col(expr["brow_tilt"])
        curve = by - _col(p["brow_arch"]) * (1 - t * t) - brow_tilt * t * brow_w * 0.5
        thick = _col(p["brow_th"]) * (1.15 - 0.45 * (t + 1) / 2)
        brow = self._soft((y - curve).abs() - thick / 2) * self._band(t, -1.0, 1.0, 0.08)
        canvas.paint(brow * 0.92, c["brow"])

    def _mouth(
        self,
        canvas: _Canvas,
        p: dict[str, torch.Tensor],
        c: dict[str, torch.Tensor],
        g: dict[str, torch.Tensor],
        expr: dict[str, torch.Tensor],
    ) -> None:
        """Mouth: upper lip, opening (with teeth when wide open), lower lip, tapered to the corners."""
        b = p["face_w"].shape[0]
        x, y = self.x, self.y
        my = _col(g["my"])
        mw = _col(p["mouth_w"] * expr["mouth_w"])
        lip_th = _col(p["lip_th"])
        open_ = _col(expr["mouth_open"])
        u = (x / mw).clamp(-1.0, 1.0)
        env = torch.sqrt((1 - u * u).clamp(min=0.0))
        inside = self._band(x, -mw, mw, self.edge)
        yc = my - _col(p["mouth_curve"] + expr["mouth_curve"]) * (u * u - 0.3)
        gap = open_ * env
        upper_lip = self._band(y, yc - lip_th * env * 0.9 - 0.002, yc, self.edge) * inside
        opening = self._band(y, yc - 0.002, yc + gap + 0.002, self.edge) * inside
        lower_lip = self._band(y, yc + gap, yc + gap + lip_th * env * 1.25 + 0.002, self.edge) * inside
        canvas.paint(upper_lip, c["lip"] * 0.92)
        canvas.paint(lower_lip, c["lip"])
        teeth = self._band(y, yc, yc + gap * 0.45, self.edge) * inside
        canvas.paint(opening, torch.tensor([0.25, 0.08, 0.08], device=self.device).expand(b, 3))
        canvas.paint(teeth * (open_ > 0.02).to(teeth.dtype) * 0.9, torch.full((b, 3), 0.92, device=self.device))
        line = self._band(y, yc - 0.004, yc + gap + 0.004, self.edge) * inside * (gap < 0.01).to(y.dtype)
        canvas.paint(line * 0.55, c["lip"] * 0.45)

    def _top(self, p: dict[str, torch.Tensor]) -> _Canvas:
        """Front hair cap and glasses, painted on a transparent canvas (composited over faces)."""
        b = p["face_w"].shape[0]
        c = self._colours(p)
        g = self._geometry(p)
        x, y = self.x, self.y
        cy, fw, fh, ey = _col(g["cy"]), _col(p["face_w"]), _col(p["face_h"]), _col(g["ey"])
        bald = _col(p["bald"])
        vol = _col(p["hair_volume"]) * (1 - bald)
        canvas = _Canvas(b, self.resolution, self.device)

        # hair cap: inside a (wavy) outer head ellipse and above the hairline
        wave = 0.018 * _col(p["hair_wave"]) * self.wave
        outer = self._soft(self._ellipse_sdf(0.0, cy - 0.03, fw + 0.6 * vol + 0.025, fh + vol + 0.02) - wave)
        hairline = cy - fh * (_col(p["hairline"]) + 0.45 * bald)
        temple = ey + 0.01
        side = (x / fw).abs().clamp(max=1.2)
        side = side * side * torch.sqrt(side)
        part = _col(p["hair_part"])
        line = hairline + (temple - hairline) * side + 0.10 * part * x / fw
        cap = outer * self._soft(y - line, 0.02)
        side_hair = self._soft(fw * 0.93 - x.abs(), 0.02) * self._band(y, cy - fh, ey + 0.06, 0.02) * outer
        cap = torch.maximum(cap, side_hair * (1 - bald * 0.7))
        top_dark = (0.82 + 0.22 * ((y - cy + fh) / fh).clamp(0, 1)).clamp(max=1.0)
        canvas.paint(cap, c["hair"][:, :, None, None] * (self.strands * top_dark).unsqueeze(1))

        # glasses: two superellipse rims, a bridge and the temples; faint lens tint
        has = _col(p["glasses"])
        size = _col(p["glasses_size"])
        rx = _col(p["eye_w"]) * size
        ry = rx * 0.78
        squareness = _col(1 - p["glasses_round"])
        th = 0.009 + 0.008 * _col(p["glasses_tone"])
        for s in (-1.0, 1.0):
            gx = s * _col(p["eye_dx"])
            gy = ey + 0.01
            # blend of an ellipse (L2) and a rounded rectangle (L4 superellipse) rim
            u, v = (x - gx) / rx, (y - gy) / ry
            u2, v2 = u * u, v * v
            l2 = torch.sqrt(u2 + v2)
            l4 = torch.sqrt(torch.sqrt(u2 * u2 + v2 * v2))
            rim_sdf = (l2 + squareness * (l4 - l2) - 1) * ry
            canvas.paint(self._soft(rim_sdf) * has * 0.12, torch.full((b, 3), 0.2, device=self.device))
            canvas.paint(self._soft(rim_sdf.abs() - th / 2) * has, c["frame"])
            arm = self._band(y, gy - ry * 0.55 - th / 2, gy - ry * 0.55 + th / 2)
            arm = arm * self._band(s * x, gx.abs() + rx * 0.95, fw * 1.02)
            canvas.paint(arm * has, c["frame"])
        inner = _col(p["eye_dx"]) - rx * 0.95
        bridge = self._band(x, -inner, inner) * self._band(y, ey - 0.01 - th / 2, ey - 0.01 + th / 2)
        canvas.paint(bridge * has, c["frame"])
        return canvas
