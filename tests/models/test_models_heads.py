"""Margin heads: hand-worked logits on 2-d embeddings at known angles, margins, numerics at θ≈0 and
θ≈π, extra negatives, labels = -1, validation, and MarginHead."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from federated_core.models.heads import MarginHead, margin_logits, margin_loss


def unit(degrees: float, norm: float = 1.0) -> list[float]:
    r = math.radians(degrees)
    return [norm * math.cos(r), norm * math.sin(r)]


# centers at 0° (norm 2) and 90° (norm 0.5); embedding at 60° (norm 3)
CENTERS = torch.tensor([unit(0, 2.0), unit(90, 0.5)], dtype=torch.float64)
EMBEDDING = torch.tensor([unit(60, 3.0)], dtype=torch.float64)
LABEL = torch.tensor([0])
COS60, COS30 = 0.5, math.cos(math.radians(30))


def test_cosface_logits_at_known_angles() -> None:
    s, m = 64.0, 0.35
    logits = margin_logits(EMBEDDING, CENTERS, LABEL, kind="cosface", s=s, m=m)
    expected = torch.tensor([[s * (COS60 - m), s * COS30]], dtype=torch.float64)
    torch.testing.assert_close(logits, expected)
    # defaults are CosFace s=64, m=0.35
    torch.testing.assert_close(margin_logits(EMBEDDING, CENTERS, LABEL, kind="cosface"), expected)


def test_arcface_logits_at_known_angles() -> None:
    s, m = 64.0, 0.5
    logits = margin_logits(EMBEDDING, CENTERS, LABEL, kind="arcface", s=s, m=m)
    expected = torch.tensor([[s * math.cos(math.radians(60) + m), s * COS30]], dtype=torch.float64)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(margin_logits(EMBEDDING, CENTERS, LABEL, kind="arcface"), expected)
    # label 1: the 90° center is at 30°
    logits = margin_logits(EMBEDDING, CENTERS, torch.tensor([1]), kind="arcface", s=10.0, m=0.2)
    torch.testing.assert_close(
        logits, torch.tensor([[10.0 * COS60, 10.0 * math.cos(math.radians(30) + 0.2)]], dtype=torch.float64)
    )


def test_arcface_fallback_beyond_pi_minus_m() -> None:
    s, m = 64.0, 0.5
    # embedding at 170° from its center: θ + m > π, so the target is s·(cos θ − (1 − cos m))
    logits = margin_logits(torch.tensor([unit(170)], dtype=torch.float64), CENTERS, LABEL, "arcface", s, m)
    expected = s * (math.cos(math.radians(170)) - (1 - math.cos(m)))
    assert float(logits[0, 0]) == pytest.approx(expected, rel=1e-9)
    # continuous at θ = π − m (both sides → s·cos π = −s) and decreasing in θ on [0°, 180°]
    boundary = math.degrees(math.pi - m)
    near = [float(margin_logits(torch.tensor([unit(a)], dtype=torch.float64), CENTERS, LABEL, "arcface", s, m)[0, 0])
            for a in (boundary - 1e-6, boundary + 1e-6)]
    assert near == pytest.approx([-s, -s], abs=1e-3)
    angles = torch.linspace(0.5, 179.5, 200, dtype=torch.float64)
    embeddings = torch.stack([torch.cos(torch.deg2rad(angles)), torch.sin(torch.deg2rad(angles))], dim=1)
    target = margin_logits(embeddings, CENTERS, torch.zeros(200, dtype=torch.long), "arcface", s, m)[:, 0]
    assert torch.all(torch.diff(target) < 0)
    assert torch.all(target < s * torch.cos(torch.deg2rad(angles)))


def test_softmax_logits_are_inner_products_plus_bias() -> None:
    logits = margin_logits(EMBEDDING, CENTERS, LABEL, kind="softmax", s=5.0, m=0.3)  # s, m ignored
    expected = torch.tensor([[3 * 2 * COS60, 3 * 0.5 * COS30]], dtype=torch.float64)
    torch.testing.assert_close(logits, expected)
    bias = torch.tensor([0.25, -1.0], dtype=torch.float64)
    torch.testing.assert_close(margin_logits(EMBEDDING, CENTERS, None, kind="softmax", bias=bias), expected + bias)


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_no_labels_gives_scaled_cosines(kind: str) -> None:
    logits = margin_logits(EMBEDDING, CENTERS, None, kind=kind, s=7.0)
    torch.testing.assert_close(logits, torch.tensor([[7.0 * COS60, 7.0 * COS30]], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_margin_lowers_only_the_target_logit(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    e, w = torch.randn(50, 8, generator=g), torch.randn(6, 8, generator=g)
    y = torch.randint(0, 6, (50,), generator=g)
    with_margin = margin_logits(e, w, y, kind=kind)
    without = margin_logits(e, w, None, kind=kind)
    rows = torch.arange(50)
    assert torch.all(with_margin[rows, y] < without[rows, y])
    mask = torch.ones_like(without, dtype=torch.bool)
    mask[rows, y] = False
    torch.testing.assert_close(with_margin[mask], without[mask])


@pytest.mark.parametrize("kind", ["softmax", "cosface", "arcface"])
def test_gradients_finite_at_zero_and_pi(kind: str) -> None:
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    # exactly on the target center, exactly opposite, and a hair off each
    e = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [1.0, 1e-7], [-1.0, 1e-7]], requires_grad=True)
    y = torch.tensor([0, 0, 0, 0])
    loss = margin_loss(e, centers, y, kind=kind, extra_negatives=torch.tensor([[0.0, -1.0]]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(e.grad).all() and torch.isfinite(centers.grad).all()
    if kind != "softmax":
        e.grad = None
        margin_loss(e, centers, y, kind=kind, extra_negatives=e.detach()[:1], negative_slack=0.3).backward()
        assert torch.isfinite(e.grad).all()


@pytest.mark.parametrize("kind", ["softmax", "cosface", "arcface"])
def test_margin_loss_is_the_cross_entropy_of_the_logits(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    e, w, extra = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g)
    y = torch.tensor([0, 2, 1, 1, 0])
    logits = margin_logits(e, w, y, kind=kind, s=8.0, m=0.3).double().numpy()
    if kind == "softmax":
        extra_logits = (e @ extra.T).double().numpy()
    else:
        en = e / e.norm(dim=1, keepdim=True)
        xn = extra / extra.norm(dim=1, keepdim=True)
        extra_logits = (8.0 * en @ xn.T).double().numpy()
    rows = np.arange(5)
    plain = np.mean(logsumexp(logits, axis=1) - logits[rows, y.numpy()])
    full = np.concatenate([logits, extra_logits], axis=1)
    with_extra = np.mean(logsumexp(full, axis=1) - full[rows, y.numpy()])
    got_plain = float(margin_loss(e, w, y, kind=kind, s=8.0, m=0.3))
    got_extra = float(margin_loss(e, w, y, kind=kind, s=8.0, m=0.3, extra_negatives=extra))
    assert got_plain == pytest.approx(plain, rel=1e-5)
    assert got_extra == pytest.approx(with_extra, rel=1e-5)
    assert got_extra > got_plain  # extra negatives only add terms to every denominator


def test_negative_slack_is_privacyface_mu() -> None:
    # μ(p, f, ρ) = s·cos(max(θ − ρ, 0)) (PrivacyFace Eq. 5): negatives at 40° and 20° from f, ρ = 30°
    s, rho = 10.0, math.radians(30)
    e = torch.tensor([unit(0)], dtype=torch.float64)
    centers = torch.tensor([unit(0)], dtype=torch.float64)
    extra = torch.tensor([unit(40), unit(-20)], dtype=torch.float64)
    loss = margin_loss(e, centers, torch.tensor([0]), "cosface", s, 0.0, extra_negatives=extra, negative_slack=rho)
    logits = np.array([s * 1.0, s * math.cos(math.radians(10)), s * 1.0])
    assert float(loss) == pytest.approx(logsumexp(logits) - logits[0], rel=1e-9)


def test_label_minus_one_means_no_positive() -> None:
    g = torch.Generator().manual_seed(2)
    e, w = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    y = torch.tensor([1, -1, 4, -1])
    logits = margin_logits(e, w, y, kind="arcface")
    plain = margin_logits(e, w, None, kind="arcface")
    torch.testing.assert_close(logits[[1, 3]], plain[[1, 3]])  # no margin on -1 rows
    loss = margin_loss(e, w, y, kind="arcface")
    only_labelled = margin_loss(e[[0, 2]], w, y[[0, 2]], kind="arcface")
    torch.testing.assert_close(loss, only_labelled)  # -1 rows contribute no term
    torch.testing.assert_close(margin_loss(e, w, y.to(torch.int32), kind="arcface"), loss)  # any integer dtype
    none_labelled = margin_loss(e.requires_grad_(True), w, torch.tensor([-1, -1, -1, -1]), kind="cosface")
    assert float(none_labelled.detach()) == 0.0
    none_labelled.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_bad_inputs_name_the_parameter() -> None:
    e, w, y = torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="kind must be one of"):
        margin_logits(e, w, y, kind="sphereface")
    with pytest.raises(ValueError, match=r"s \(the logit scale\)"):
        margin_logits(e, w, y, kind="cosface", s=0.0)
    with pytest.raises(ValueError, match=r"m \(the arcface margin\)"):
        margin_logits(e, w, y, kind="arcface", m=2.0)
    with pytest.raises(ValueError, match=r"m \(the cosface margin\)"):
        margin_logits(e, w, y, kind="cosface", m=-0.1)
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 4\]"):
        margin_logits(e, w, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"labels must be in \[-1, 4\]"):
        margin_loss(e, w, torch.tensor([0, -2, 1]))
    with pytest.raises(ValueError, match="labels must be a 1-d tensor"):
        margin_logits(e, w, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="centers must be a 2-d tensor"):
        margin_logits(e, torch.randn(5, 3), y)
    with pytest.raises(ValueError, match="extra_negatives must be a 2-d tensor"):
        margin_loss(e, w, y, extra_negatives=torch.randn(2, 3))
    with pytest.raises(ValueError, match="negative_slack"):
        margin_loss(e, w, y, kind="softmax", negative_slack=0.1)
    with pytest.raises(ValueError, match="bias applies only"):
        margin_logits(e, w, y, kind="cosface", bias=torch.zeros(5))


def test_margin_head_holds_centers_and_computes_the_loss() -> None:
    head = MarginHead(7, 16, kind="arcface", generator=torch.Generator().manual_seed(3))
    assert head.weight.shape == (7, 16) and isinstance(head.weight, torch.nn.Parameter)
    assert (head.s, head.m) == (64.0, 0.5)
    assert 0.005 < float(head.weight.detach().std()) < 0.02
    same = MarginHead(7, 16, kind="arcface", generator=torch.Generator().manual_seed(3))
    assert torch.equal(head.weight, same.weight)
    assert (MarginHead(3, 4).s, MarginHead(3, 4).m) == (64.0, 0.35)
    g = torch.Generator().manual_seed(4)
    e, y = torch.randn(6, 16, generator=g), torch.randint(0, 7, (6,), generator=g)
    torch.testing.assert_close(head(e, y), margin_loss(e, head.weight, y, kind="arcface", s=64.0, m=0.5))
    torch.testing.assert_close(head.logits(e, y), margin_logits(e, head.weight, y, kind="arcface", s=64.0, m=0.5))
    softmax = MarginHead(7, 16, kind="softmax", bias=True)
    assert softmax.bias is not None and softmax.bias.shape == (7,)
    with pytest.raises(ValueError, match="bias=True applies only"):
        MarginHead(7, 16, kind="cosface", bias=True)
    with pytest.raises(ValueError, match="num_classes"):
        MarginHead(0, 16)


def test_margin_logits_work_under_vmap_for_per_sample_gradients():
    # opacus / torch.func per-sample gradients vmap the loss over single examples.
    from federated_core.models.heads import margin_logits

    torch.manual_seed(0)
    emb, centers, labels = torch.randn(5, 4), torch.randn(3, 4), torch.tensor([0, 2, 1, 1, 0])
    for kind in ("cosface", "arcface"):
        batched = margin_logits(emb, centers, labels, kind)
        per_row = torch.func.vmap(
            lambda e, y: margin_logits(e[None], centers, y[None], kind, check_labels=False)[0])(emb, labels)
        assert torch.allclose(per_row, batched, atol=1e-6)
