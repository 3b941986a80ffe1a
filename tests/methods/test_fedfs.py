"""FedFS: adaptive soft labels, the intra-subject loss and the regulariser on hand-worked values,
and 2-round runs (only the global backbone leaves a client; the personalised model stays)."""

import math

import numpy as np
import pytest
import torch

from federated_core.engine import ClientData, run_federated
from federated_core.engine.config import DpSgdConfig
from federated_core.methods import GlobalModel, get_method
from federated_core.methods.fedfs import PERSONAL, PRETRAINED
from federated_core.methods.fedfs_losses import (
    adaptive_soft_labels,
    aggregate_features,
    cosine_regulariser,
    intra_subject_loss,
    top_k_count,
)
from federated_core.models import build_backbone

from methods_helpers import random_faces, tiny_config


@pytest.fixture(scope="module")
def clients():
    return [ClientData.from_faces(random_faces([k], 8, seed=k)) for k in range(3)]


def _initial_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        return build_backbone("tiny", 16, 16)


# ---------------------------------------------------------------------------------------- losses


def test_top_k_is_a_quarter_of_the_batch():
    assert [top_k_count(b) for b in (1, 3, 4, 8, 9, 32)] == [1, 1, 1, 2, 2, 8]
    with pytest.raises(ValueError, match="fraction"):
        top_k_count(8, 0.0)


@pytest.mark.parametrize("weighting", ["softmax", "linear"])
def test_soft_labels_sum_to_one_and_peak_at_the_largest_dot_product(weighting):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 6, generator=gen) + 2.0  # mostly positive dot products
    dots = x @ x.t()
    labels = adaptive_soft_labels(dots, k=3, weighting=weighting)
    assert torch.allclose(labels.sum(1), torch.ones(12))
    assert (labels >= 0).all() and ((labels > 0).sum(1) <= 3).all()
    assert torch.equal(labels.argmax(1), dots.argmax(1))
    for i in range(12):  # the non-zero entries are exactly the row's top 3
        top = set(torch.topk(dots[i], 3).indices.tolist())
        assert set(torch.nonzero(labels[i]).flatten().tolist()) <= top


def test_soft_labels_hand_worked():
    dots = torch.tensor([[4.0, 1.0, 3.0, -2.0], [0.5, 2.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [-1.0, -3.0, -2.0, -0.5]])
    soft = adaptive_soft_labels(dots, k=2, weighting="softmax", temperature=0.5)
    e = math.exp
    assert soft[0].tolist() == pytest.approx([e(8) / (e(8) + e(6)), 0.0, e(6) / (e(8) + e(6)), 0.0])
    assert soft[1].tolist() == pytest.approx([0.0, e(4) / (e(4) + e(2)), 0.0, e(2) / (e(4) + e(2))])
    lin = adaptive_soft_labels(dots, k=2, weighting="linear")
    assert lin[0].tolist() == pytest.approx([4 / 7, 0.0, 3 / 7, 0.0])
    assert lin[3].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])  # no positive entry: all on the largest
    allowed = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    masked = adaptive_soft_labels(dots, k=2, allowed=allowed, weighting="linear")
    assert masked[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])  # 4 and -2 allowed: positive part
    assert masked[1].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="diagonal"):
        adaptive_soft_labels(dots, 2, allowed=~torch.eye(4, dtype=torch.bool))


def test_intra_subject_loss_and_regulariser_hand_worked():
    gen = torch.Generator().manual_seed(2)
    a, p = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(4, 3, generator=gen, dtype=torch.float64)
    y = adaptive_soft_labels(a @ p.t(), k=2).double()
    got = intra_subject_loss(a, p, y, temperature=0.2)
    an, pn = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True), p.numpy() / np.linalg.norm(p.numpy(), axis=1, keepdims=True)
    for i in range(4):
        logits = an[i] @ pn.T / 0.2
        log_p = logits - math.log(sum(math.exp(v) for v in logits))
        assert got[i].item() == pytest.approx(-float((y[i].numpy() * log_p).sum()), rel=1e-10)
    reg = cosine_regulariser(a, p)
    assert reg.numpy() == pytest.approx(1.0 - (an * pn).sum(1))
    assert torch.allclose(cosine_regulariser(a, 3 * a), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(aggregate_features(a, p, "mean"), (a + p) / 2)
    assert torch.allclose(aggregate_features(a, 2 * a, "normalized-mean"), a / a.norm(dim=1, keepdim=True))


# ---------------------------------------------------------------------------------------- runs


def test_two_rounds_only_the_global_backbone_leaves(clients):
    method = get_method("fedfs")
    result = run_federated(tiny_config(method="fedfs", rounds=2, batch_size=8), clients, method=method,
                           initial_model=_initial_model())
    assert {(m.kind, m.sender == "server") for m in result.wire} == {("backbone", True), ("backbone", False)}
    initial = _initial_model().state_dict()
    for cid, state in result.client_states.items():
        personal = state.with_prefix(PERSONAL)
        assert all(torch.equal(state.with_prefix(PRETRAINED)[k], initial[k]) for k in initial)  # φ0 fixed
        assert not torch.equal(personal["embedding.weight"], initial["embedding.weight"])  # trained
        for m in result.wire:  # the personalised model never crosses
            if m.sender == f"client:{cid}":
                assert not torch.equal(m.tensors["embedding.weight"], personal["embedding.weight"])
        assert set(state.meta["last_update"]["loss_terms"]) == {"insub", "reg"}
    # FedAvg of the round-2 uploads (equal image counts: plain mean)
    ups = [m for m in result.wire if m.sender != "server" and m.round == 2]
    mean = sum(m.tensors["embedding.weight"].double() for m in ups) / len(ups)
    assert torch.allclose(result.backbone.state_dict()["embedding.weight"].double(), mean, atol=1e-6)
    agg = method.personalised_model(result.client_states[0], "aggregated", result.backbone)
    own = method.personalised_model(result.client_states[0], "personal")
    x = clients[0].faces.as_float()
    with torch.no_grad():
        assert torch.allclose(agg(x), (result.backbone(x) + own(x)) / 2, atol=1e-6)
    assert torch.equal(method.pretrained_model(result.client_states[0]).state_dict()["embedding.weight"],
                       initial["embedding.weight"])


def test_same_seed_same_numbers_and_several_identities(clients):
    multi = [ClientData.from_faces(random_faces([20, 21], 4, seed=7))] + list(clients[:1])
    runs = [run_federated(tiny_config(method="fedfs", rounds=1, batch_size=8), multi, method=get_method("fedfs"),
                          initial_model=_initial_model()) for _ in range(2)]
    a, b = (r.server_state.tensors for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert math.isfinite(runs[0].client_states[0].meta["last_update"]["loss"])


def test_refusals_and_validation(clients):
    model = _initial_model()
    with pytest.raises(ValueError, match="dp_sgd"):
        get_method("fedfs").client_init(0, clients[0], GlobalModel(model, model.build_config),
                                        tiny_config(dp_sgd=DpSgdConfig(noise_multiplier=1.0)), torch.Generator())
    for params, match in (({"lam": 1.2}, "lam"), ({"top_k_fraction": 0.0}, "top_k_fraction"),
                          ({"aggregate": "max"}, "aggregate"), ({"label_features": "raw"}, "label_features"),
                          ({"label_weighting": "hard"}, "label_weighting"), ({"temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=match):
            get_method("fedfs", **params)
    with pytest.raises(ValueError, match="global_backbone"):
        get_method("fedfs").personalised_model(
            get_method("fedfs").client_init(0, clients[0], GlobalModel(model, model.build_config), tiny_config(),
                                            torch.Generator()), "aggregated")
