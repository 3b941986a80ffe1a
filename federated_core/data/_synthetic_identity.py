"""Identity parameters of the synthetic face generator: population groups and per-identity draws.

Every continuous parameter ``p`` of an identity ``i`` in group ``g`` is drawn in a latent space
and squashed into its physical range ``[lo, hi]``:

    value = lo + (hi - lo) * sigmoid(mu[g, p] + spread * sd[p] * z[i, p]),    z ~ N(0, 1)

``mu[g, p]`` is the group mean (groups differ in skin tone, face shape, hair and eye colour, ...,
like the four racial splits of BUPT-Balancedface), ``sd[p]`` the parameter's identity spread and
``spread`` the generator's ``identity_spread`` knob: lowering it pulls every identity towards its
group mean, so identities become harder to tell apart while group membership stays visible.
Accessories (glasses, beard, mole, baldness) are Bernoulli draws whose group probability is also
scaled by ``spread`` (at spread 0 every identity looks like its group's modal member).

All draws are counter-based hashes of ``(seed, identity)`` (see `_synthetic_hash`), never of a
sequential stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from federated_core.data import _synthetic_hash as rh


@dataclass(frozen=True)
class ParamSpec:
    """One continuous identity parameter: physical range, group separation and identity spread
    (both in latent units), whether group means are evenly spaced (ordered: skin tone) or random,
    and for random ones how much the group mean follows the group's skin tone (``skin_corr`` in
    [-1, 1]: groups with darker skin tend to darker hair and eyes, as in real populations)."""

    name: str
    lo: float
    hi: float
    group_sep: float
    identity_sd: float
    ordered: bool = False
    skin_corr: float = 0.0


# Coordinates are those of the canonical canvas: x right, y down, both in [-1, 1].
PARAMS: tuple[ParamSpec, ...] = (
    # face outline
    ParamSpec("face_w", 0.47, 0.60, 0.6, 1.2),
    ParamSpec("face_h", 0.62, 0.73, 0.4, 1.2),
    ParamSpec("jaw", 0.05, 0.45, 0.6, 1.3),
    ParamSpec("face_cy", 0.07, 0.14, 0.0, 1.0),
    # eyes (offsets from the face centre)
    ParamSpec("eye_y", -0.20, -0.07, 0.3, 1.2),
    ParamSpec("eye_dx", 0.18, 0.27, 0.4, 1.2),
    ParamSpec("eye_w", 0.080, 0.120, 0.5, 1.2),
    ParamSpec("eye_h", 0.032, 0.062, 0.8, 1.2),
    ParamSpec("eye_tilt", -0.16, 0.22, 0.6, 1.2),
    ParamSpec("iris_frac", 0.50, 0.72, 0.0, 1.2),
    # brows
    ParamSpec("brow_gap", 0.06, 0.11, 0.3, 1.2),
    ParamSpec("brow_w", 0.095, 0.150, 0.3, 1.2),
    ParamSpec("brow_th", 0.016, 0.036, 0.4, 1.2),
    ParamSpec("brow_arch", -0.005, 0.050, 0.3, 1.2),
    ParamSpec("brow_tilt", -0.20, 0.20, 0.3, 1.2),
    # nose and mouth
    ParamSpec("nose_len", 0.15, 0.26, 0.4, 1.2),
    ParamSpec("nose_w", 0.050, 0.105, 0.7, 1.2),
    ParamSpec("mouth_gap", 0.085, 0.150, 0.3, 1.2),
    ParamSpec("mouth_w", 0.11, 0.20, 0.4, 1.2),
    ParamSpec("lip_th", 0.014, 0.040, 0.7, 1.2),
    ParamSpec("mouth_curve", -0.015, 0.025, 0.0, 1.2),
    ParamSpec("ear_size", 0.09, 0.14, 0.3, 1.2),
    ParamSpec("neck_w", 0.20, 0.30, 0.3, 1.0),
    # hair
    ParamSpec("hair_volume", 0.02, 0.20, 0.8, 1.2),
    ParamSpec("hairline", 0.52, 0.86, 0.3, 1.3),
    ParamSpec("hair_len", 0.0, 1.0, 1.0, 2.2),
    ParamSpec("hair_part", -0.35, 0.35, 0.0, 1.4),
    ParamSpec("hair_wave", 0.0, 1.0, 1.0, 1.4),
    # colours (tones index palettes in `_synthetic_canonical`)
    ParamSpec("skin_tone", 0.0, 1.0, 2.4, 0.55, ordered=True),
    ParamSpec("skin_warm", 0.0, 1.0, 0.8, 1.0),
    ParamSpec("hair_tone", 0.0, 1.0, 1.6, 1.0, skin_corr=-0.7),
    ParamSpec("hair_red", 0.0, 1.0, 0.8, 1.2),
    ParamSpec("hair_gray", 0.0, 1.0, 0.0, 1.0),
    ParamSpec("eye_tone", 0.0, 1.0, 1.8, 1.0, skin_corr=-0.7),
    ParamSpec("lip_tone", 0.0, 1.0, 0.6, 1.2),
    ParamSpec("brow_dark", 0.0, 1.0, 0.4, 1.2),
    # accessory shapes (used only when the accessory is present)
    ParamSpec("glasses_round", 0.0, 1.0, 0.0, 1.5),
    ParamSpec("glasses_size", 1.15, 1.55, 0.0, 1.2),
    ParamSpec("glasses_tone", 0.0, 1.0, 0.0, 1.6),
    ParamSpec("beard_style", 0.0, 1.0, 0.0, 1.6),
    ParamSpec("beard_density", 0.35, 0.90, 0.3, 1.2),
    ParamSpec("mole_x", -0.35, 0.35, 0.0, 1.5),
    ParamSpec("mole_y", -0.05, 0.35, 0.0, 1.5),
)
PARAM_INDEX = {p.name: i for i, p in enumerate(PARAMS)}

# (name, lowest and highest group probability) of the Bernoulli accessories.
ACCESSORIES: tuple[tuple[str, float, float], ...] = (
    ("glasses", 0.12, 0.35),
    ("beard", 0.10, 0.45),
    ("mole", 0.15, 0.35),
    ("bald", 0.04, 0.12),
)


@dataclass(frozen=True)
class GroupTable:
    """Per-group latent means ``[groups, P]`` and accessory probabilities ``[groups, A]``."""

    means: torch.Tensor
    accessory_prob: torch.Tensor


def group_table(seed: int, groups: int, device: torch.device | str = "cpu") -> GroupTable:
    """The group means of every parameter: evenly spaced over ``[-sep, sep]`` for ordered
    parameters (in a seed-dependent order of the groups), otherwise
    ``sep * (c * t + sqrt(1 - c^2) * N(0, 1))`` with ``t`` the group's skin-tone rank in [-1, 1]
    and ``c`` the parameter's ``skin_corr``.
    Float64 (see `identity_params`)."""
    g = torch.arange(groups, dtype=torch.int64, device=device)
    key = rh.hash_key(seed, rh.STREAM_GROUP_PARAMS, g, device=device)
    z = rh.normal(key, len(PARAMS))
    u = rh.uniform(rh.mix32(key ^ 0x51ED270B), len(ACCESSORIES) + 1)
    # rank of each group in a seed-dependent permutation: ordered parameters get spaced means
    order = torch.argsort(torch.argsort(u[:, -1]))
    f64 = torch.float64
    spaced = torch.zeros(groups, dtype=f64, device=device) if groups == 1 else order.to(f64) / (groups - 1) * 2 - 1
    sep = torch.tensor([p.group_sep for p in PARAMS], dtype=f64, device=device)
    ordered = torch.tensor([p.ordered for p in PARAMS], device=device)
    corr = torch.tensor([p.skin_corr for p in PARAMS], dtype=f64, device=device)
    random_mean = corr * spaced[:, None] + torch.sqrt(1 - corr * corr) * z
    means = torch.where(ordered, spaced[:, None], random_mean) * sep
    lo = torch.tensor([a[1] for a in ACCESSORIES], dtype=f64, device=device)
    hi = torch.tensor([a[2] for a in ACCESSORIES], dtype=f64, device=device)
    return GroupTable(means=means, accessory_prob=lo + (hi - lo) * u[:, : len(ACCESSORIES)])


def group_of(seed: int, groups: int, identities: torch.Tensor) -> torch.Tensor:
    """Population group of each identity: ``hash(seed, identity) mod groups`` (int64)."""
    key = rh.hash_key(seed, rh.STREAM_GROUP_OF, identities, device=identities.device)
    return key % groups


def identity_params(
    seed: int, table: GroupTable, identities: torch.Tensor, groups: torch.Tensor, spread: float
) -> dict[str, torch.Tensor]:
    """Every parameter of every identity: ``{name: float32 [N]}`` plus accessory flags (0/1).

    Computed in float64 and rounded to float32 once at the end, so last-bit differences of the
    transcendental functions between batch sizes vanish (see `_synthetic_hash.normal`).
    """
    dev, f64 = identities.device, torch.float64
    key = rh.hash_key(seed, rh.STREAM_IDENTITY, identities, device=dev)
    z = rh.normal(key, len(PARAMS))
    u = rh.uniform(rh.mix32(key ^ 0x2545F491), len(ACCESSORIES))
    sd = torch.tensor([p.identity_sd for p in PARAMS], dtype=f64, device=dev)
    lo = torch.tensor([p.lo for p in PARAMS], dtype=f64, device=dev)
    hi = torch.tensor([p.hi for p in PARAMS], dtype=f64, device=dev)
    latent = table.means[groups] + spread * sd * z
    values = (lo + (hi - lo) * torch.sigmoid(latent)).to(torch.float32)
    out = {p.name: values[:, i].contiguous() for i, p in enumerate(PARAMS)}
    prob = table.accessory_prob[groups] * min(spread, 1.0)
    for j, (name, _, _) in enumerate(ACCESSORIES):
        out[name] = (u[:, j] < prob[:, j]).to(torch.float32)
    return out
