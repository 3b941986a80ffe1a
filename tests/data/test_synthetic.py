"""Tests of the synthetic face generator `federated_core.data.synthetic.SyntheticFaces`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from federated_core.data import _synthetic_hash as rh
from federated_core.data import _synthetic_identity as ident
from federated_core.data._synthetic_canonical import CanonicalRenderer
from federated_core.data._synthetic_nuisance import NuisanceRenderer, draw_nuisance
from federated_core.data.faceset import FaceSet
from federated_core.data.synthetic import SyntheticFaces


def _pairwise_mean_l2(x: torch.Tensor) -> float:
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    d = torch.cdist(flat, flat)
    n = flat.shape[0]
    return float(d.sum() / (n * (n - 1)))


# ---- determinism ----

def test_same_seed_identity_index_gives_identical_pixels() -> None:
    ids, idx = [0, 7, 123456789, 7], [0, 3, 2, 4]
    a = SyntheticFaces(seed=11, resolution=32).render(ids, idx)
    b = SyntheticFaces(seed=11, resolution=32).render(torch.tensor(ids), torch.tensor(idx))
    assert torch.equal(a, b)
    assert not torch.equal(a[1], a[3])  # same identity, different image index


@pytest.mark.parametrize("resolution", [32, 50])
def test_batch_composition_invariance(resolution: int) -> None:
    # difficulty 1 exercises every nuisance (occlusion, strong blur, expressions) often
    kwargs = dict(seed=4, resolution=resolution, difficulty=1.0)
    alone = SyntheticFaces(**kwargs).render([5], [3])
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10**9, (100,), generator=gen)
    idx = torch.randint(0, 1000, (100,), generator=gen)
    ids[37], idx[37] = 5, 3
    ids[60:70] = 5  # other images of the same identity in the batch
    batch = SyntheticFaces(**kwargs).render(ids, idx)
    assert torch.equal(batch[37], alone[0])
    # a different internal batch size and a warm canonical cache change nothing either
    small = SyntheticFaces(**kwargs, batch_size=7)
    small.render(ids[:20], idx[:20])
    assert torch.equal(small.render(ids, idx), batch)


def test_float_level_batch_invariance_before_quantisation() -> None:
    """Stronger than the uint8 check: the float canonical faces and the float images are
    bit-identical alone and in a batch (last-bit differences would only rarely flip a uint8)."""
    seed, resolution = 8, 36
    ids = torch.arange(70, 107)  # 37 identities; identity 90 sits at position 20
    table = ident.group_table(seed, 4)
    renderer = CanonicalRenderer(resolution, torch.device("cpu"))

    def canonical(identities: torch.Tensor) -> torch.Tensor:
        params = ident.identity_params(seed, table, identities, ident.group_of(seed, 4, identities), 0.7)
        return renderer.render(params)

    batch = canonical(ids)
    alone = canonical(torch.tensor([90]))
    assert torch.equal(batch[20], alone[0])

    nuisance = NuisanceRenderer(seed, resolution, 1.8, torch.device("cpu"))
    idx = torch.arange(37) * 3
    faces = batch[:, 0]

    def images(sel: torch.Tensor) -> torch.Tensor:
        p = draw_nuisance(seed, ids[sel], idx[sel], 1.8, resolution)
        return nuisance.apply(faces[sel], p)

    full = images(torch.arange(37))
    assert torch.equal(full[20], images(torch.tensor([20]))[0])
    assert torch.equal(full[5:9], images(torch.arange(5, 9)))


def test_different_seeds_identities_and_indices_differ() -> None:
    a = SyntheticFaces(seed=0, resolution=32).render([1, 1, 2], [0, 1, 0])
    b = SyntheticFaces(seed=1, resolution=32).render([1, 1, 2], [0, 1, 0])
    for k in range(3):
        assert not torch.equal(a[k], b[k])
    assert (a[0].float() - a[2].float()).abs().mean() > 5  # different identity
    assert (a[0].float() - a[1].float()).abs().mean() > 1  # different image


def test_huge_identity_ids_render_deterministically() -> None:
    gen = SyntheticFaces(seed=2, resolution=32)
    a = gen.render([10**6, 2**61], [0, 0])
    assert torch.equal(a, SyntheticFaces(seed=2, resolution=32).render([10**6, 2**61], [0, 0]))
    assert not torch.equal(a[0], a[1])


# ---- shapes, dtypes, ranges ----

@pytest.mark.parametrize("resolution", [32, 48, 64, 112])
def test_shapes_dtypes_and_float_range(resolution: int) -> None:
    gen = SyntheticFaces(seed=0, resolution=resolution)
    img = gen.render([0, 1], [0, 5])
    assert img.dtype == torch.uint8 and img.shape == (2, 3, resolution, resolution)
    flt = gen.render_float([0, 1], [0, 5])
    assert flt.dtype == torch.float32 and flt.shape == img.shape
    assert float(flt.min()) >= -1.0 and float(flt.max()) <= 1.0
    assert torch.equal(flt, img.float() / 127.5 - 1)
    assert img.float().std() > 10  # not a blank image
    canon = gen.render_canonical([0, 1])
    assert canon.dtype == torch.uint8 and canon.shape == img.shape


def test_empty_input_gives_empty_batch() -> None:
    gen = SyntheticFaces(resolution=32)
    assert gen.render([], []).shape == (0, 3, 32, 32)


# ---- groups ----

def test_group_of_deterministic_in_range_and_balanced() -> None:
    gen = SyntheticFaces(seed=3, resolution=32, groups=4)
    ids = torch.arange(2000)
    g = gen.group_of(ids)
    assert g.dtype == torch.int64 and g.shape == ids.shape
    assert int(g.min()) >= 0 and int(g.max()) < 4
    assert torch.equal(g, SyntheticFaces(seed=3, resolution=32, groups=4).group_of(ids.tolist()))
    counts = torch.bincount(g, minlength=4).numpy()
    assert stats.chisquare(counts).pvalue > 1e-4  # uniform over the groups
    assert torch.equal(SyntheticFaces(groups=1, resolution=32).group_of(ids), torch.zeros(2000, dtype=torch.int64))
    assert not torch.equal(g, SyntheticFaces(seed=4, resolution=32, groups=4).group_of(ids))


def test_groups_visibly_differ_in_skin_colour() -> None:
    gen = SyntheticFaces(seed=0, resolution=32)
    ids = torch.arange(120)
    groups = gen.group_of(ids).numpy()
    faces = gen.render_canonical(ids).float()
    # cheek patches left and right of the nose (frontal canonical faces)
    r = 32
    rows, cols = slice(int(0.53 * r), int(0.60 * r)), slice(int(0.30 * r), int(0.38 * r))
    cols2 = slice(int(0.62 * r), int(0.70 * r))
    skin = (faces[:, :, rows, cols].mean((2, 3)) + faces[:, :, rows, cols2].mean((2, 3))).numpy() / 2
    luminance = skin.mean(1)
    samples = [luminance[groups == k] for k in range(4)]
    assert all(len(s) >= 10 for s in samples)
    means = np.array([s.mean() for s in samples])
    within = np.mean([s.var(ddof=1) for s in samples])
    assert means.var(ddof=1) > within  # groups differ more between than within
    assert stats.f_oneway(*samples).pvalue < 1e-6


# ---- identity vs nuisance ----

def test_identities_differ_more_than_images_of_one_identity() -> None:
    gen = SyntheticFaces(seed=1, resolution=32, difficulty=0.0)
    ids = torch.arange(12)
    per = 4
    faces = gen.render(ids.repeat_interleave(per), torch.arange(per).repeat(12)).reshape(12, per, 3, 32, 32)
    inner = faces[..., 10:26, 8:24].float()  # the inner face (eyes to mouth), not the background
    within = np.mean([_pairwise_mean_l2(inner[i]) for i in range(12)])
    between = _pairwise_mean_l2(inner[:, 0])
    assert between > 2 * within
    # canonical renders: distinct identities are further apart than the expression variants of one
    canon = torch.stack([gen.render_canonical(ids, e) for e in range(len(gen.expressions))], 1).float()
    within_canon = np.mean([_pairwise_mean_l2(canon[i]) for i in range(12)])
    assert _pairwise_mean_l2(canon[:, 0]) > 2 * within_canon


def test_difficulty_shrinks_identity_spread_and_grows_nuisance() -> None:
    ids = torch.arange(16)
    spread = {}
    nuisance = {}
    for d in (0.0, 0.5, 1.0):
        gen = SyntheticFaces(seed=5, resolution=32, difficulty=d)
        # identity spread within one group, measured on canonical (nuisance-free) faces
        members = ids[gen.group_of(ids) == 0]
        spread[d] = _pairwise_mean_l2(gen.render_canonical(members).float())
        imgs = gen.render(torch.zeros(8, dtype=torch.int64), torch.arange(8)).float()
        nuisance[d] = _pairwise_mean_l2(imgs)
    assert spread[0.0] > spread[0.5] > spread[1.0]
    assert nuisance[0.0] < nuisance[0.5] < nuisance[1.0]


def test_difficulty_halves_can_be_overridden() -> None:
    gen = SyntheticFaces(resolution=32, difficulty=0.2, nuisance_scale=0.0, identity_spread=1.5)
    assert gen.nuisance_scale == 0.0 and gen.identity_spread == 1.5
    default = SyntheticFaces(resolution=32, difficulty=0.2)
    assert 0 < default.nuisance_scale and 0 < default.identity_spread <= 1
    assert SyntheticFaces(resolution=32, difficulty=None).difficulty == SyntheticFaces(resolution=32).difficulty


# ---- validation ----

@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "hard"])
def test_difficulty_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="difficulty"):
        SyntheticFaces(difficulty=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"resolution": 15}, "resolution"),
        ({"resolution": 64.0}, "resolution"),
        ({"groups": 0}, "groups"),
        ({"seed": -1}, "seed"),
        ({"nuisance_scale": -0.5}, "nuisance_scale"),
        ({"identity_spread": 3.0}, "identity_spread"),
        ({"canonical_cache_mb": 0}, "canonical_cache_mb"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "not-a-device"}, "device"),
    ],
)
def test_constructor_validation(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SyntheticFaces(**kwargs)


def test_render_input_validation() -> None:
    gen = SyntheticFaces(resolution=32)
    with pytest.raises(ValueError, match="identities"):
        gen.render([-1], [0])
    with pytest.raises(ValueError, match="indices"):
        gen.render([1], [-3])
    with pytest.raises(ValueError, match="same length"):
        gen.render([1, 2], [0])
    with pytest.raises(ValueError, match="identities"):
        gen.render([1.5], [0])
    with pytest.raises(ValueError, match="identities"):
        gen.group_of([-4])
    with pytest.raises(ValueError, match="expression"):
        gen.render_canonical([0], expression=9)
    with pytest.raises(ValueError, match="images_per_identity"):
        gen.make_set([0, 1], 0)
    with pytest.raises(ValueError, match="start_index"):
        gen.make_set([0, 1], 2, start_index=-1)


# ---- sets and caches ----

def test_make_set_layout_matches_render() -> None:
    gen = SyntheticFaces(seed=9, resolution=32)
    ids = torch.tensor([40, 2, 17])
    faces = gen.make_set(ids, 3, start_index=5)
    assert isinstance(faces, FaceSet) and len(faces) == 9 and faces.resolution == 32
    assert torch.equal(faces.labels, torch.tensor([40, 40, 40, 2, 2, 2, 17, 17, 17]))
    assert torch.equal(faces.groups, gen.group_of(faces.labels))
    expected = gen.render(faces.labels, torch.tensor([5, 6, 7] * 3))
    assert torch.equal(faces.images, expected)


def test_make_set_cache_round_trip(tmp_path, monkeypatch) -> None:
    kwargs = dict(seed=2, resolution=32, cache_dir=tmp_path)
    first = SyntheticFaces(**kwargs).make_set([3, 4], 2)
    files = list(tmp_path.glob("synthetic_*.safetensors"))
    assert len(files) == 1
    second_gen = SyntheticFaces(**kwargs)

    def _no_render(*args, **kw):  # the second call must load, not render
        raise AssertionError("rendered although the set is cached")

    monkeypatch.setattr(second_gen, "_render_batch", _no_render)
    second = second_gen.make_set(torch.tensor([3, 4]), 2)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels) and torch.equal(first.groups, second.groups)
    # other arguments or generator parameters are other cache entries
    SyntheticFaces(**kwargs).make_set([3, 4], 2, start_index=1)
    SyntheticFaces(**kwargs, difficulty=0.9).make_set([3, 4], 2)
    assert len(list(tmp_path.glob("synthetic_*.safetensors"))) == 3
    # a corrupted cache file is re-rendered, not trusted, with a warning naming it
    from federated_core.integrity import CachedFileWarning

    files[0].write_bytes(b"garbage")
    with pytest.warns(CachedFileWarning, match=files[0].name):
        again = SyntheticFaces(**kwargs).make_set([3, 4], 2)
    assert torch.equal(again.images, first.images)
    # a valid file whose pixels were altered fails its checksum and is re-rendered too
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(files[0]))
    tensors["images"][0, 0, 0, 0] ^= 1
    save_file(tensors, str(files[0]), metadata={"sha256": "0" * 64})
    with pytest.warns(CachedFileWarning, match="fails it"):
        third = SyntheticFaces(**kwargs).make_set([3, 4], 2)
    assert torch.equal(third.images, first.images)


def test_canonical_lru_cache_is_bounded_and_transparent() -> None:
    tiny = SyntheticFaces(seed=6, resolution=32, canonical_cache_mb=1.0)
    assert tiny._cache_capacity == 2**20 // (4 * 5 * 32 * 32)
    tiny._cache_capacity = 2  # force evictions within one batch
    ids = torch.tensor([1, 2, 3, 1, 4, 2, 5, 1])
    idx = torch.arange(8)
    out = tiny.render(ids, idx)
    assert len(tiny._cache) <= 2
    assert torch.equal(out, SyntheticFaces(seed=6, resolution=32).render(ids, idx))


def test_feature_window_gives_the_same_pixels_as_the_full_canvas() -> None:
    # extreme identities (spread 2) at a coarse and a fine resolution
    for resolution in (24, 40):
        renderer = CanonicalRenderer(resolution, torch.device("cpu"))
        ids = torch.arange(1000, 1060)
        table = ident.group_table(5, 4)
        params = ident.identity_params(5, table, ids, ident.group_of(5, 4, ids), 2.0)
        assert torch.equal(renderer.render(params), renderer.render(params, windowed=False))


# ---- counter-based random numbers ----

def test_hash_uniforms_and_normals_are_well_distributed() -> None:
    key = rh.hash_key(0, rh.STREAM_IMAGE, torch.arange(20000))
    u = rh.uniform(key, 2)
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert stats.kstest(u[:, 0].numpy(), "uniform").pvalue > 1e-3
    z = rh.normal(key, 1)[:, 0].numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(u[:, 0].numpy(), u[:, 1].numpy())[0, 1]) < 0.05
    # the 16-bit split multiplication is exact: compare with Python integers
    x = torch.tensor([0, 1, 0xFFFFFFFF, 0x12345678])
    assert rh._mul32(x, 0x846CA68B).tolist() == [(int(v) * 0x846CA68B) % 2**32 for v in x]
    # both 32-bit halves of a 64-bit id matter
    assert int(rh.hash_key(0, 1, 5)) != int(rh.hash_key(0, 1, 5 + 2**32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_up_to_rounding() -> None:
    ids, idx = torch.arange(20), torch.arange(20) % 3
    cpu = SyntheticFaces(seed=1, resolution=48).render(ids, idx)
    gpu = SyntheticFaces(seed=1, resolution=48, device="cuda").render(ids, idx)
    assert gpu.device.type == "cuda"
    diff = (cpu.int() - gpu.cpu().int()).abs()
    assert float((diff > 2).float().mean()) < 1e-3
    assert torch.equal(gpu, SyntheticFaces(seed=1, resolution=48, device="cuda").render(ids, idx))


def test_identity_params_are_in_their_ranges() -> None:
    params = SyntheticFaces(seed=0, resolution=32, identity_spread=2.0).identity_params(torch.arange(500))
    for spec in ident.PARAMS:
        v = params[spec.name]
        assert float(v.min()) >= spec.lo and float(v.max()) <= spec.hi, spec.name
    for name, _, _ in ident.ACCESSORIES:
        assert set(params[name].unique().tolist()) <= {0.0, 1.0}
    # accessory frequency = the group probability (scaled by min(spread, 1)), within 4 binomial sd
    table = ident.group_table(0, 4)
    groups = ident.group_of(0, 4, torch.arange(500))
    p = table.accessory_prob[groups, 0].mean().item()
    assert abs(float(params["glasses"].mean()) - p) < 4 * math.sqrt(p * (1 - p) / 500)
