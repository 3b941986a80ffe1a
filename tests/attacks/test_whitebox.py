"""White-box embedding inversion by optimisation, and the per-target comparison of attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.inversion import EmbeddingDecoder, feature_cosine, invert
from attacks.whitebox import (
    WhiteBoxConfig,
    compare_attacks,
    total_variation_per_image,
    whitebox_invert,
)


class _Linear(torch.nn.Module):
    """F(x) = W · flatten(x) for x in [-1, 1]."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def test_linear_recogniser_reaches_the_computable_optimum():
    """Known answer. For F(x) = W·u with u = 2x − 1, W ∈ R^{64×48} (rank 48 < d = 64), the best
    cosine to v over all u is |P v| (P: projection onto W's column space, reached at u = W⁺v);
    the box costs nothing because cos is scale-free (u = s·W⁺v with small s lies in [-1, 1]^48)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g)
    v = F.normalize(torch.randn(5, 64, generator=g), dim=1)
    optimum = (w @ torch.linalg.lstsq(w, v.T).solution).norm(dim=0).numpy()
    assert 0.75 < optimum.min() and optimum.max() < 0.95  # a real ceiling below 1
    mean_face = torch.rand(3, 4, 4, generator=g) * 0.6 + 0.2
    res = whitebox_invert(
        _Linear(w), v, WhiteBoxConfig(iterations=200, restarts=1, lr=0.05, tv_weight=0.0), mean_face=mean_face
    )
    assert (res.cosine >= optimum - 0.01).all()  # measured gap <= 0.003
    assert (res.cosine <= optimum + 1e-4).all()  # and never above the optimum
    assert (res.init_cosine < 0.2).all()
    assert res.images.min() >= 0 and res.images.max() <= 1  # box
    # the reported cosine is that of the returned images
    np.testing.assert_allclose(res.cosine, feature_cosine(_Linear(w), res.images, v).detach().numpy(), atol=1e-5)


def _tiny(faces_factory, backbone_factory):
    model = backbone_factory(16, 16, seed=0)
    from federated_core.models import embed

    targets = embed(model, faces_factory(range(6), per_identity=1, resolution=16, seed=1))
    public = faces_factory(range(100, 120), per_identity=2, resolution=16, seed=1)
    return model, targets, public.images.float().mean(0) / 255


def test_tiny_model_reconstructions_beat_the_mean_face_and_restarts_keep_the_best(faces_factory, backbone_factory):
    model, targets, mean_face = _tiny(faces_factory, backbone_factory)
    one = whitebox_invert(
        model, targets, WhiteBoxConfig(iterations=50, restarts=1, tv_weight=0.05), mean_face=mean_face
    )
    three = whitebox_invert(
        model, targets, WhiteBoxConfig(iterations=50, restarts=3, tv_weight=0.05), mean_face=mean_face
    )
    assert (one.cosine > one.init_cosine + 0.3).all() and one.cosine.min() > 0.95  # measured >= 0.996
    # restart 0 is the same run in both; more restarts can only lower the kept objective
    np.testing.assert_allclose(three.restart_objectives[0], one.restart_objectives[0], rtol=1e-6)
    assert (three.objective <= one.objective + 1e-7).all()
    np.testing.assert_allclose(three.objective, three.restart_objectives.min(0))
    assert three.best_restart.tolist() == three.restart_objectives.argmin(0).tolist()
    assert (three.best_restart > 0).any()  # a later restart won somewhere: the keeping was exercised
    # the kept images are the ones whose objective is reported
    recomputed = (
        1
        - feature_cosine(model, three.images, F.normalize(targets, dim=1))
        + 0.05 * total_variation_per_image(three.images)
    )
    np.testing.assert_allclose(three.objective, recomputed.detach().numpy(), atol=1e-5)
    assert three.settings["steps_per_target"] == 150 and three.settings["tv_weight"] == 0.05
    assert "lower bound" in three.settings["bound"]
    # deterministic, and independent of how targets are batched
    again = whitebox_invert(
        model, targets, WhiteBoxConfig(iterations=50, restarts=3, tv_weight=0.05, batch_size=4), mean_face=mean_face
    )
    np.testing.assert_allclose(again.cosine, three.cosine, atol=1e-5)
    assert again.best_restart.tolist() == three.best_restart.tolist()


def test_decoder_init_starts_from_the_decoders_reconstruction(faces_factory, backbone_factory):
    model, targets, _ = _tiny(faces_factory, backbone_factory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        decoder = EmbeddingDecoder(16, 16, 16).eval()
    res = whitebox_invert(model, targets, WhiteBoxConfig(iterations=20, restarts=1, init="decoder"), decoder=decoder)
    start = invert(decoder, targets)
    expect = feature_cosine(model, start, F.normalize(targets, dim=1)).detach().numpy()
    np.testing.assert_allclose(res.init_cosine, expect, atol=1e-6)
    assert (res.cosine > res.init_cosine).all()
    assert res.settings["init"] == "decoder"


def test_total_variation_per_image_known_values():
    x = torch.zeros(2, 1, 2, 2)
    x[1, 0, 0, 0] = 1.0  # one corner: 1 of 2 vertical and 1 of 2 horizontal differences
    torch.testing.assert_close(total_variation_per_image(x), torch.tensor([0.0, 1.0]))


def test_bad_inputs_are_refused_naming_the_value(faces_factory, backbone_factory):
    model, targets, mean_face = _tiny(faces_factory, backbone_factory)
    with pytest.raises(ValueError, match=r"targets have d=8, the model embeds to d=16"):
        whitebox_invert(model, torch.randn(2, 8), WhiteBoxConfig(iterations=1), mean_face=mean_face)
    bad = targets.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        whitebox_invert(model, bad, WhiteBoxConfig(iterations=1), mean_face=mean_face)
    with pytest.raises(ValueError, match="zero norm"):
        whitebox_invert(model, torch.zeros(2, 16), WhiteBoxConfig(iterations=1), mean_face=mean_face)
    for name, value in (("iterations", 0), ("restarts", -1), ("batch_size", 0)):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got {value}"):
            WhiteBoxConfig(**{name: value})
    with pytest.raises(ValueError, match="tv_weight must be a finite number >= 0, got -0.1"):
        WhiteBoxConfig(tv_weight=-0.1)
    with pytest.raises(ValueError, match="init must be one of"):
        WhiteBoxConfig(init="noise")
    with pytest.raises(ValueError, match="needs a decoder"):
        whitebox_invert(model, targets, WhiteBoxConfig(iterations=1, init="decoder"))
    with pytest.raises(ValueError, match="the decoder expects d=8"):
        whitebox_invert(
            model, targets, WhiteBoxConfig(iterations=1, init="decoder"), decoder=EmbeddingDecoder(8, 16, 8)
        )
    with pytest.raises(ValueError, match=r"mean_face must be \[3, R, R\]"):
        whitebox_invert(model, targets, WhiteBoxConfig(iterations=1), mean_face=torch.rand(16, 16))


def test_compare_attacks_pairs_per_target_and_bootstraps_over_units():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(12, 3, 8, 8, generator=g)
    close = (truth + 0.05 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    far = torch.rand(12, 3, 8, 8, generator=g)

    def score(x):  # per target: negative pixel distance to the truth (higher = better)
        return -(x - truth).flatten(1).norm(dim=1)

    cmp = compare_attacks({"decoder": far, "whitebox": close}, score, n_bootstrap=500)
    expect = {"decoder": float(score(far).mean()), "whitebox": float(score(close).mean())}
    assert cmp.means == pytest.approx(expect)
    assert cmp.stronger == "whitebox" and cmp.runner_up == "decoder" and cmp.resolved
    assert cmp.wins == {"decoder": 0, "whitebox": 12} and cmp.ties == 0
    assert cmp.difference == pytest.approx(expect["whitebox"] - expect["decoder"])
    assert 0 < cmp.interval[0] <= cmp.difference <= cmp.interval[1]
    assert cmp.summary()["stronger"] == "whitebox"
    # lower-is-better scorer: the same verdict from distances
    dist = compare_attacks({"decoder": far, "whitebox": close}, lambda x: -score(x), higher_is_better=False)
    assert dist.stronger == "whitebox" and dist.means["whitebox"] < dist.means["decoder"]
    # identical attacks: no stronger one; one unit for everything: a degenerate interval, said so
    same = compare_attacks({"a": close, "b": close.clone()}, score, units=["u"] * 12)
    assert same.stronger is None and not same.resolved and same.ties == 12 and same.num_units == 1
    assert same.notes and same.summary()["stronger"] is None
    # units: targets of one unit are resampled together
    clustered = compare_attacks(
        {"decoder": far, "whitebox": close}, score, units=[i // 4 for i in range(12)], unit_name="client"
    )
    assert clustered.num_units == 3 and clustered.unit_name == "client"


def test_compare_attacks_refuses_mismatched_inputs():
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match="the same targets"):
        compare_attacks({"a": x, "b": x[:3]}, lambda t: t.flatten(1).mean(1))
    with pytest.raises(ValueError, match="at least two attacks"):
        compare_attacks({"a": x}, lambda t: t.flatten(1).mean(1))
    with pytest.raises(ValueError, match=r"shape \(1,\) for attack 'a'"):
        compare_attacks({"a": x, "b": x}, lambda t: np.zeros(1))
    with pytest.raises(ValueError, match="NaN or inf for attack 'a'"):
        compare_attacks({"a": x, "b": x}, lambda t: np.full(4, np.nan))
    with pytest.raises(ValueError, match="units has 3 entries for 4 targets"):
        compare_attacks({"a": x, "b": x}, lambda t: t.flatten(1).mean(1), units=[0, 1, 2])
