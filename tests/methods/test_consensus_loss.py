"""The consensus-aware loss (Eq. 5 of PrivacyFace) against a numpy transcription of the formula,
the plain margin losses, and `heads.margin_loss` with extra negatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from federated_core.methods.consensus_loss import cluster_similarity, consensus_logits, consensus_loss
from federated_core.models.heads import margin_loss


def _numpy_eq5(f, w, y, p, rho, kind, s, m) -> float:
    """Eq. 5 (mean over the batch) with u, v of Eq. 2 / Eq. 3 written out, via arccos."""
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    losses = []
    for i in range(len(f)):
        theta = np.arccos(np.clip(w @ f[i], -1, 1))
        logits = list(s * np.cos(theta))
        if kind == "cosface":
            logits[y[i]] = s * (math.cos(theta[y[i]]) - m)
        else:  # ArcFace: cos(theta + m) (theta + m <= pi in these examples)
            assert theta[y[i]] + m <= math.pi
            logits[y[i]] = s * math.cos(theta[y[i]] + m)
        if p is not None:
            pn = p / np.linalg.norm(p, axis=1, keepdims=True)
            phi = np.arccos(np.clip(pn @ f[i], -1, 1))
            logits += list(s * np.cos(np.maximum(phi - rho, 0.0)))
        logits = np.array(logits)
        losses.append(np.log(np.exp(logits).sum()) - logits[y[i]])
    return float(np.mean(losses))


def _batch(seed: int, b: int = 6, c: int = 5, k: int = 3, d: int = 8):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((b, d)),
        rng.standard_normal((c, d)),
        rng.integers(0, c, size=b),
        rng.standard_normal((k, d)),
    )


@pytest.mark.parametrize("kind,s,m", [("cosface", 30.0, 0.35), ("arcface", 16.0, 0.5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_transcription(kind: str, s: float, m: float, seed: int) -> None:
    f, w, y, p = _batch(seed)
    rho = 0.6
    got = consensus_loss(
        torch.from_numpy(f), torch.from_numpy(w), torch.from_numpy(y), torch.from_numpy(p), rho=rho, kind=kind, s=s, m=m
    )
    assert float(got) == pytest.approx(_numpy_eq5(f, w, y, p, rho, kind, s, m), rel=1e-9)


@pytest.mark.parametrize("kind,s,m", [("cosface", 30.0, 0.35), ("arcface", 64.0, 0.5)])
def test_reduces_to_the_plain_margin_loss_without_clusters(kind: str, s: float, m: float) -> None:
    f, w, y, _ = _batch(3)
    ft, wt, yt = torch.from_numpy(f), torch.from_numpy(w), torch.from_numpy(y)
    plain = margin_loss(ft, wt, yt, kind=kind, s=s, m=m)
    for clusters in (None, torch.zeros(0, f.shape[1], dtype=torch.float64)):
        got = consensus_loss(ft, wt, yt, clusters, rho=1.3, kind=kind, s=s, m=m)
        assert float(got) == pytest.approx(float(plain), rel=1e-12)
    assert float(plain) == pytest.approx(_numpy_eq5(f, w, y, None, 0.0, kind, s, m), rel=1e-9)


def test_agrees_with_heads_extra_negatives() -> None:
    f, w, y, p = _batch(4, k=5)
    t = [torch.from_numpy(a) for a in (f, w, y, p)]
    for rho in (0.0, 0.7, 1.3):
        ours = consensus_loss(*t, rho=rho, kind="cosface", s=30.0, m=0.35)
        theirs = margin_loss(t[0], t[1], t[2], kind="cosface", s=30.0, m=0.35, extra_negatives=t[3], negative_slack=rho)
        assert float(ours) == pytest.approx(float(theirs), rel=1e-6)


def test_loss_increases_with_a_cluster_on_the_feature() -> None:
    f, w, y, _ = _batch(5, b=1)
    ft, wt, yt = torch.from_numpy(f), torch.from_numpy(w), torch.from_numpy(y)
    plain = float(consensus_loss(ft, wt, yt, None, rho=1.3))
    on_feature = float(consensus_loss(ft, wt, yt, ft.clone(), rho=1.3))
    opposite = float(consensus_loss(ft, wt, yt, -ft.clone(), rho=1.3))
    assert on_feature > opposite > plain
    # inside the cap the cluster meets the largest logit s: mu = s exactly
    mu = cluster_similarity(ft, ft + 1e-3, rho=1.3, s=30.0)
    assert float(mu) == pytest.approx(30.0)
    # outside the cap: s * cos(theta - rho) for a feature at angle theta from the cluster
    theta = 2.0
    e = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    pc = torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=torch.float64)
    assert float(cluster_similarity(e, pc, rho=0.5, s=10.0)) == pytest.approx(10 * math.cos(1.5), rel=1e-9)


def test_per_example_losses_and_unlabelled_rows() -> None:
    f, w, y, p = _batch(6)
    t = [torch.from_numpy(a) for a in (f, w, y, p)]
    per = consensus_loss(*t, rho=1.0, reduction="none")
    assert per.shape == (6,)
    assert float(per.mean()) == pytest.approx(float(consensus_loss(*t, rho=1.0)), rel=1e-12)
    y2 = t[2].clone()
    y2[0] = -1
    per2 = consensus_loss(t[0], t[1], y2, t[3], rho=1.0, reduction="none")
    assert float(per2[0]) == 0.0
    assert float(consensus_loss(t[0], t[1], y2, t[3], rho=1.0)) == pytest.approx(float(per2[1:].mean()), rel=1e-12)


def test_gradients_are_finite_at_the_cap_edges() -> None:
    f = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    clusters = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    w = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    loss = consensus_loss(f, w, torch.tensor([0]), clusters, rho=0.3)
    loss.backward()
    assert torch.isfinite(f.grad).all()
    logits = consensus_logits(f, w, torch.tensor([0]), clusters, rho=0.3)
    assert logits.shape == (1, 5)


def test_rejects_bad_arguments() -> None:
    f, w, y, p = (torch.from_numpy(a) for a in _batch(0))
    with pytest.raises(ValueError, match="kind"):
        consensus_loss(f, w, y, p, rho=1.0, kind="softmax")
    with pytest.raises(ValueError, match="rho"):
        consensus_loss(f, w, y, p, rho=-0.1)
    with pytest.raises(ValueError, match="clusters"):
        consensus_loss(f, w, y, p[:, :3], rho=1.0)
    with pytest.raises(ValueError, match="reduction"):
        consensus_loss(f, w, y, p, rho=1.0, reduction="sum")
