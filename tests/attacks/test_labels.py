"""Label recovery from the head update: LLG counts (Wainakh et al. 2022) in the settings where
they are exact, the integer allocation by hand, the two-class symmetry, and input errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attacks.gradient
from attacks.gradient import ClientModel, LocalSgd, simulate_local_update
from attacks.labels import (
    allocate_label_counts,
    labels_from_counts,
    recover_label_counts_llg,
    recover_labels_idlg,
)

SHAPE = (3, 16, 16)


class ConstantFeatures(nn.Module):
    """Every image has the same (non-negative) feature: LLG's impact is exactly one number."""

    def __init__(self, feature: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("feature", feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature.expand(x.shape[0], -1)


class ReluFeatures(nn.Module):
    """A linear layer + ReLU on the flattened image: LLG's setting (non-negative features)."""

    def __init__(self, d: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(3 * 16 * 16, d)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(d, 3 * 16 * 16, generator=g) / 27)
            self.lin.bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.lin(x.flatten(1)))


class Negated(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


def _batch(faces, counts):
    idx = torch.cat([torch.nonzero(faces.labels == c).flatten()[:k] for c, k in enumerate(counts)])
    return faces.as_float()[idx], faces.labels[idx]


def test_idlg_is_reexported_by_gradient():
    assert attacks.gradient.recover_labels_idlg is recover_labels_idlg


def test_allocation_by_hand():
    # present classes 0 and 2 start with one image each; the rest go to the largest gap
    got = allocate_label_counts(torch.tensor([2.6, 0.3, 1.1]), torch.tensor([True, False, True]), 4)
    assert got.tolist() == [3, 0, 1]  # gaps (1.6, -, 0.1) -> class 0; (0.6, -, 0.1) -> class 0
    eligible = torch.tensor([True, True, True])
    got = allocate_label_counts(torch.tensor([2.6, 0.8, 0.6]), torch.tensor([True, False, False]), 3, eligible)
    assert got.tolist() == [2, 1, 0]  # gaps (1.6, 0.8, 0.6) -> 0; (0.6, 0.8, 0.6) -> 1
    assert labels_from_counts(torch.tensor([2, 0, 1])).tolist() == [0, 0, 2]


@pytest.mark.parametrize("direction", ["update", "dummy"])
def test_llg_exact_when_every_image_has_the_same_feature(direction):
    # softmax over zero centers: p = 1/C for every image, so row c of the summed gradient is
    # (N/C − n_c)·f — LLG's model with impact |f| and offset N/C, exactly
    n_classes, lr = 5, 0.1
    f = torch.tensor([0.5, 1.0, 0.25, 2.0])
    model = ClientModel(ConstantFeatures(f), torch.zeros(n_classes, 4), "softmax")
    counts = [4, 0, 2, 0, 0] if direction == "update" else [3, 1, 2, 0, 0]
    y = labels_from_counts(torch.tensor(counts))
    n = len(y)
    sgd = LocalSgd(1, n, lr)
    delta = simulate_local_update(model, torch.zeros(n, *SHAPE), y, sgd)["centers"]
    by_hand = lr * (torch.tensor(counts) / n - 1 / n_classes)[:, None] * f  # −lr·mean gradient
    torch.testing.assert_close(delta, by_hand)
    got = recover_label_counts_llg(model, delta, n, SHAPE, sgd=sgd, direction=direction)
    assert got.counts.tolist() == counts and got.labels().tolist() == y.tolist()
    torch.testing.assert_close(got.estimate, torch.tensor(counts, dtype=torch.float64), atol=1e-4, rtol=0)


def test_llg_dummy_direction_recovers_counts_on_relu_features(faces_factory):
    # LLG*'s own setting: non-negative features, untrained softmax head, a few classes
    for seed in range(3):
        faces = faces_factory(range(4), per_identity=4, resolution=16, seed=seed)
        centers = 0.01 * torch.randn(4, 16, generator=torch.Generator().manual_seed(seed + 100))
        model = ClientModel(ReluFeatures(16, seed), centers, "softmax")
        for counts in ([3, 1, 0, 0], [2, 1, 1, 0], [0, 3, 0, 1], [0, 0, 4, 0]):
            x, y = _batch(faces, counts)
            sgd = LocalSgd(1, len(y), 0.1)
            delta = simulate_local_update(model, x, y, sgd)["centers"]
            got = recover_label_counts_llg(model, delta, len(y), SHAPE, sgd=sgd, direction="dummy", seed=seed)
            assert got.counts.tolist() == counts, (seed, counts, got.estimate.tolist())


@pytest.mark.parametrize("loss", ["cosface", "arcface", "softmax", "positive"])
def test_llg_one_class_batches_are_exact(loss, faces_factory, backbone_factory):
    for seed in range(3):
        faces = faces_factory(range(4), per_identity=4, resolution=16, seed=seed)
        centers = 0.01 * torch.randn(4, 16, generator=torch.Generator().manual_seed(seed + 100))
        model = ClientModel(backbone_factory(16, 16, seed=seed), centers, loss)
        for counts, sgd in (([4, 0, 0, 0], LocalSgd(1, 4, 0.1)), ([0, 0, 3, 0], LocalSgd(2, 2, 0.1, momentum=0.5))):
            x, y = _batch(faces, counts)
            delta = simulate_local_update(model, x, y, sgd)["centers"]
            got = recover_label_counts_llg(model, delta, len(y), SHAPE, seed=seed)
            assert got.counts.tolist() == counts, (seed, counts, got.estimate.tolist())
            assert got.present.tolist() == [c > 0 for c in counts]


def test_llg_positive_loss_finds_the_classes_and_splits_by_norm(faces_factory, backbone_factory):
    # no softmax: an absent class's center does not move at all (weight decay only shrinks it
    # radially, which is removed), so the set of classes is exact
    faces = faces_factory(range(4), per_identity=4, resolution=16, seed=0)
    model = ClientModel(backbone_factory(16, 16, seed=0), 0.01 * torch.randn(4, 16), "positive")
    x, y = _batch(faces, [2, 0, 2, 0])
    delta = simulate_local_update(model, x, y, LocalSgd(1, 4, 0.1, weight_decay=5e-4))["centers"]
    got = recover_label_counts_llg(model, delta, 4, SHAPE)
    assert got.present.tolist() == [True, False, True, False] and got.counts.tolist() == [2, 0, 2, 0]


@pytest.mark.parametrize("loss", ["softmax", "cosface"])
def test_two_classes_are_not_identifiable_from_the_head(loss, faces_factory, backbone_factory):
    # swapping every label and negating every feature leaves the head update unchanged, so any
    # head-only count estimate answers the same for (n0, n1) and (n1, n0)
    faces = faces_factory(range(2), per_identity=4, resolution=16, seed=1)
    backbone = backbone_factory(16, 16, seed=1)
    centers = 0.01 * torch.randn(2, 16, generator=torch.Generator().manual_seed(5))
    x, y = _batch(faces, [3, 1])
    sgd = LocalSgd(1, 4, 0.1)
    model = ClientModel(backbone, centers, loss)
    mirrored = ClientModel(Negated(backbone), centers, loss)
    a = simulate_local_update(model, x, y, sgd)["centers"]
    b = simulate_local_update(mirrored, x, 1 - y, sgd)["centers"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert torch.equal(
        recover_label_counts_llg(model, a, 4, SHAPE).counts, recover_label_counts_llg(model, b, 4, SHAPE).counts
    )


def test_llg_counts_always_sum_to_the_images(backbone_factory):
    gen = torch.Generator().manual_seed(3)
    for loss in ("cosface", "softmax"):
        model = ClientModel(backbone_factory(16, 16, seed=2), 0.01 * torch.randn(6, 16, generator=gen), loss)
        for n in (1, 2, 5, 9):
            for direction in ("update", "dummy"):
                update = torch.randn(6, 16, generator=gen)
                got = recover_label_counts_llg(model, update, n, SHAPE, sgd=LocalSgd(1, n, 0.1), direction=direction)
                assert int(got.counts.sum()) == n and bool((got.counts >= 0).all())
                assert bool((got.counts[got.present] >= 1).all()) and len(got.labels()) == n


def test_llg_rejects_bad_inputs(backbone_factory):
    model = ClientModel(backbone_factory(16, 16, seed=0), 0.01 * torch.randn(3, 16), "cosface")
    update = torch.randn(3, 16)
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match=f"num_images must be an integer >= 1, got {bad!r}"):
            recover_label_counts_llg(model, update, bad, SHAPE)
    with pytest.raises(ValueError, match="'sideways'"):
        recover_label_counts_llg(model, update, 2, SHAPE, direction="sideways")
    with pytest.raises(ValueError, match=r"shape \(4, 16\)"):
        recover_label_counts_llg(model, torch.randn(4, 16), 2, SHAPE)
    with pytest.raises(ValueError, match="non-finite"):
        recover_label_counts_llg(model, torch.full((3, 16), float("nan")), 2, SHAPE)
    with pytest.raises(ValueError, match="all zeros"):
        recover_label_counts_llg(model, torch.zeros(3, 16), 2, SHAPE)
    with pytest.raises(ValueError, match="pass sgd"):
        recover_label_counts_llg(model, update, 2, SHAPE, direction="dummy")
    with pytest.raises(ValueError, match="got Linear"):
        recover_label_counts_llg(nn.Linear(2, 2), update, 2, SHAPE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"image_shape must be .*\(16, 16\)"):
        recover_label_counts_llg(model, update, 2, (16, 16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="present must mark 1..num_images=1 classes, got 2"):
        allocate_label_counts(torch.zeros(3), torch.tensor([True, True, False]), 1)
    with pytest.raises(ValueError, match=r"tensor\(\[ 1, -1\]\)"):
        labels_from_counts(torch.tensor([1, -1]))
