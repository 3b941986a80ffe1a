"""Attack metrics against independent references (scipy, scikit-learn, hand-worked cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.metrics import (
    clopper_pearson,
    identity_similarity,
    match_reconstructions,
    psnr,
    rank1_match,
    roc_auc,
    ssim,
    tpr_at_fpr,
)


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of one [C, H, W] pair with scipy's Gaussian filter (σ = 1.5, radius 5 → 11×11 window),
    cropping the 5-pixel border where the window would leave the image."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        f = lambda t: gaussian_filter(t, sigma=1.5, truncate=3.5, mode="reflect")[5:-5, 5:-5]  # noqa: E731
        mx, my = f(a), f(b)
        sxx, syy, sxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        out.append(m.mean())
    return float(np.mean(out))


def test_ssim_matches_scipy_gaussian_filter_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 24, generator=g)
    y = (x + 0.2 * torch.randn(3, 3, 24, 24, generator=g)).clamp(0, 1)
    got = ssim(x, y)
    ref = [_ssim_reference(x[i].numpy(), y[i].numpy()) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_ssim_hand_worked_cases():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 16, 16, generator=g)
    np.testing.assert_allclose(ssim(x, x).numpy(), 1.0, atol=1e-12)
    # Constant images a and b: all variances vanish, SSIM = (2ab + C1) / (a² + b² + C1).
    a, b = 0.3, 0.7
    c1 = 0.01**2
    val = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b))
    assert val.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)
    # Symmetric, and lower for a noisier copy.
    y1 = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y2 = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    np.testing.assert_allclose(ssim(x, y1).numpy(), ssim(y1, x).numpy(), rtol=1e-12)
    assert (ssim(x, y1) > ssim(x, y2)).all()


def test_psnr_hand_worked():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.full((2, 3, 8, 8), 0.1, dtype=torch.float64)
    np.testing.assert_allclose(psnr(x, y).numpy(), 20.0, rtol=1e-9)  # MSE = 0.01
    assert psnr(x, y, data_range=2.0)[0].item() == pytest.approx(20 + 20 * math.log10(2), rel=1e-9)
    assert math.isinf(psnr(x, x)[0].item())


def test_image_metric_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 9, 9))
    with pytest.raises(ValueError, match="data_range"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), data_range=0)


def test_identity_similarity_hand_worked():
    # Identity 7 has two reference embeddings along e0 and e1: template (e0 + e1)/√2.
    ref = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])
    ref_ids = torch.tensor([7, 7, 9])
    rec = torch.tensor([[1.0, 0, 0], [0, 0, 5.0], [0, 1.0, 0]])
    got = identity_similarity(rec, torch.tensor([7, 9, 9]), ref, ref_ids)
    np.testing.assert_allclose(got.numpy(), [1 / math.sqrt(2), 1.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="no reference"):
        identity_similarity(rec, torch.tensor([7, 9, 11]), ref, ref_ids)


def test_rank1_match_with_ids_and_sets():
    gallery = torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0]])
    gids = torch.tensor([3, 4, 5])
    q = torch.tensor([[0.9, 0.1], [0.1, 0.9], [-1, 0.2]])
    assert rank1_match(q, torch.tensor([3, 3, 5]), gallery, gids).tolist() == [True, False, True]
    assert rank1_match(q, [{3, 4}, {4}, {1}], gallery, gids).tolist() == [True, True, False]


def test_match_reconstructions_recovers_permutation():
    g = torch.Generator().manual_seed(2)
    orig = torch.rand(5, 3, 8, 8, generator=g)
    perm = torch.tensor([3, 0, 4, 1, 2])
    rec = orig[perm] + 0.01 * torch.randn(5, 3, 8, 8, generator=g)
    order = match_reconstructions(rec, orig)
    assert torch.equal(perm[order], torch.arange(5))


def _sklearn_tpr_at_fpr(scores, labels, target):
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= target + 1e-12].max())


@settings(max_examples=40, deadline=None)
@given(
    n_pos=st.integers(1, 40),
    n_neg=st.integers(1, 300),
    target=st.sampled_from([1e-3, 1e-2, 0.05, 0.2, 0.5]),
    seed=st.integers(0, 10_000),
    ties=st.booleans(),
)
def test_tpr_at_fpr_point_matches_sklearn_roc(n_pos, n_neg, target, seed, ties):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(1, 1, n_pos), rng.normal(0, 1, n_neg)])
    if ties:
        scores = np.round(scores, 1)
    labels = np.concatenate([np.ones(n_pos), np.zeros(n_neg)]).astype(bool)
    res = tpr_at_fpr(scores, labels, target, method="clopper-pearson")
    assert res.tpr == pytest.approx(_sklearn_tpr_at_fpr(scores, labels, target), abs=1e-12)
    assert res.achieved_fpr <= target + 1e-12
    assert res.ci_low <= res.tpr <= res.ci_high
    assert res.supported == (n_neg * target >= 1)


def test_tpr_at_fpr_bootstrap_interval_is_seeded_and_brackets():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(2, 1, 300), rng.normal(0, 1, 3000)])
    labels = np.r_[np.ones(300), np.zeros(3000)]
    a = tpr_at_fpr(scores, labels, 1e-2, n_bootstrap=100, seed=5)
    b = tpr_at_fpr(scores, labels, 1e-2, n_bootstrap=100, seed=5)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low <= a.tpr <= a.ci_high and a.ci_high > a.ci_low
    assert a.supported


def test_clopper_pearson_matches_scipy_binomtest():
    for k, n in [(0, 10), (3, 10), (10, 10), (57, 200)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-10)
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(11, 10)


def test_roc_auc_and_errors():
    rng = np.random.default_rng(3)
    scores, labels = rng.normal(size=50), rng.integers(0, 2, 50)
    labels[:2] = [0, 1]
    assert roc_auc(scores, labels)[3] == pytest.approx(roc_auc_score(labels, scores))
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(scores, np.ones(50))
    with pytest.raises(ValueError, match="fpr must be in"):
        tpr_at_fpr(scores, labels, 0.0)


def test_auc_bootstrap_interval_brackets_sklearn_auc():
    from attacks.metrics import auc_bootstrap_ci

    rng = np.random.default_rng(4)
    scores = np.concatenate([rng.normal(1, 1, 80), rng.normal(0, 1, 120)])
    labels = np.r_[np.ones(80), np.zeros(120)]
    low, high = auc_bootstrap_ci(scores, labels, n_bootstrap=200, seed=1)
    assert low < roc_auc_score(labels, scores) < high
    assert (low, high) == auc_bootstrap_ci(scores, labels, n_bootstrap=200, seed=1)
