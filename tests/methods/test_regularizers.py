"""Server-side regularisers against closed forms (FedGC Eqs. 10-12 and the Remark) and
hand-worked examples (Yu et al.'s spreadout regulariser as FedFace uses it)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from federated_core.methods._centers import MarginClientModel
from federated_core.methods.regularizers import (
    cosine_regularizer,
    cross_client_mask,
    merge_shared_identities,
    server_gradient_step,
    softmax_regularizer,
    spreadout_cosine,
    spreadout_distance,
)

OWNERS = torch.tensor([0, 0, 1, 2, 2])


def _w(seed=0):
    return torch.randn(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def test_local_softmax_gradients_are_eqs_10_and_12():
    """The client's softmax loss (Eq. 4): dL/dW_j = p_j X (Eq. 10, j != y), dL/dW_y = (p_y - 1) X (Eq. 12)."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([2])
    model = MarginClientModel(nn.Identity(), w, None, "softmax", 1.0, 0.0)
    model(x, y).sum().backward()
    p = _softmax((w @ x[0]).numpy())
    xs = x[0].numpy()
    for j in range(4):
        expected = (p[j] - 1.0) * xs if j == 2 else p[j] * xs
        np.testing.assert_allclose(model.centers.grad[j].numpy(), expected, atol=1e-12)


def test_softmax_regularizer_gradient_is_eq_11():
    """Eq. 5 with stop-gradient queries: a negative W_zj gets sum_q p_{q->zj} W_q (Eq. 11), the
    positive W_ki gets (p_{ki->ki} - 1) W_ki; only other clients' rows are negatives."""
    w = _w().requires_grad_(True)
    negatives = cross_client_mask(OWNERS)
    value = softmax_regularizer(w, negatives, form="dot")
    (grad,) = torch.autograd.grad(value, w)
    wn = w.detach().numpy()
    expected = np.zeros_like(wn)
    expected_value = 0.0
    for q in range(5):
        columns = [q] + [c for c in range(5) if OWNERS[c] != OWNERS[q]]
        p = _softmax(np.array([wn[c] @ wn[q] for c in columns]))
        expected_value += -math.log(p[0])
        for pc, c in zip(p, columns):
            expected[c] += (pc - (1.0 if c == q else 0.0)) * wn[q]
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-10)
    assert float(value.detach()) == pytest.approx(expected_value, rel=1e-10)


def test_scaled_cosine_softmax_regularizer_gradient():
    s, m = 8.0, 0.35
    w = _w(1).requires_grad_(True)
    value = softmax_regularizer(w, cross_client_mask(OWNERS), form="scaled-cosine", s=s, kind="cosface", m=m)
    (grad,) = torch.autograd.grad(value, w)
    wn = w.detach().numpy()
    unit = wn / np.linalg.norm(wn, axis=1, keepdims=True)
    expected = np.zeros_like(wn)
    for q in range(5):
        columns = [q] + [c for c in range(5) if OWNERS[c] != OWNERS[q]]
        logits = np.array([s * unit[c] @ unit[q] for c in columns])
        logits[0] -= s * m  # the CosFace margin on the positive (angle 0)
        p = _softmax(logits)
        for pc, c in zip(p, columns):
            cos = unit[c] @ unit[q]
            dcos = (unit[q] - cos * unit[c]) / np.linalg.norm(wn[c])  # d cos(q, w_c) / d w_c
            expected[c] += (pc - (1.0 if c == q else 0.0)) * s * dcos
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-10)


def test_cosine_regularizer_gradient_is_the_remarks_closed_form():
    w = _w(2).requires_grad_(True)
    negatives = cross_client_mask(OWNERS)
    (grad,) = torch.autograd.grad(cosine_regularizer(w, negatives), w)
    wn = w.detach().numpy()
    for c in range(5):
        expected = sum(wn[q] for q in range(5) if OWNERS[q] != OWNERS[c])
        np.testing.assert_allclose(grad[c].numpy(), expected, atol=1e-12)


def test_server_step_is_w_minus_lambda_eta_gradient():
    w = _w(4)
    negatives = cross_client_mask(OWNERS)
    new, values = server_gradient_step(w, lambda v: softmax_regularizer(v, negatives), lr=20 * 0.1)
    var = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(softmax_regularizer(var, negatives), var)
    assert torch.allclose(new, w - 2.0 * grad)
    assert values[0] == pytest.approx(float(softmax_regularizer(w, negatives)))
    with pytest.raises(ValueError, match="lr"):
        server_gradient_step(w, lambda v: v.sum(), lr=0.0)


def test_spreadout_distance_hand_worked():
    """a=(1,0) at client 0; b=(0.8,0.6), c=(0,1) at client 1; nu=0.9.
    |a-b| = sqrt(0.04+0.36) = sqrt(0.4) < 0.9; |a-c| = sqrt(2) > 0.9 (no penalty); (b,c) same client.
    Reg = 2 (ordered pairs (a,b),(b,a)) * (0.9 - sqrt(0.4))^2."""
    w = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    pairs = cross_client_mask(torch.tensor([0, 1, 1]))
    value = spreadout_distance(w, pairs, margin=0.9)
    d = math.sqrt(0.4)
    assert float(value.detach()) == pytest.approx(2 * (0.9 - d) ** 2, rel=1e-12)
    (grad,) = torch.autograd.grad(value, w)
    # d/da of 2 (nu - |a - b|)^2 through the normalisation at the unit vector a:
    # -4 (nu - d) (I - a a^T)(a - b) / d with (I - a a^T)(a - b) = (0, -0.6).
    np.testing.assert_allclose(grad[0].numpy(), [0.0, 4 * (0.9 - d) * 0.6 / d], atol=1e-12)
    # for b = (0.8, 0.6): -4 (nu - d) (I - b b^T)(b - a) / d
    b, a = np.array([0.8, 0.6]), np.array([1.0, 0.0])
    proj = (np.eye(2) - np.outer(b, b)) @ (b - a)
    np.testing.assert_allclose(grad[1].numpy(), -4 * (0.9 - d) * proj / d, atol=1e-12)
    np.testing.assert_allclose(grad[2].numpy(), [0.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="margin"):
        spreadout_distance(w, pairs, margin=0.0)


def test_spreadout_cosine_hand_worked():
    """Same vectors, tau = 0.3: cos(a,b) = 0.8 -> (0.5)^2 for (a,b) and (b,a); cos(a,c) = 0;
    mean over the 4 ordered cross-client pairs = 0.5 / 4."""
    w = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=torch.float64)
    pairs = cross_client_mask(torch.tensor([0, 1, 1]))
    assert float(spreadout_cosine(w, pairs, threshold=0.3)) == pytest.approx(0.125, rel=1e-12)


def test_merge_shared_identities():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 4.0], [3.0, 3.0], [5.0, 5.0]])
    owners = torch.tensor([0, 0, 1, 1, 2])
    keys = torch.tensor([1, 2, 2, 3, 4])  # identity 2 lives on clients 0 and 1
    classes, negatives, assignment = merge_shared_identities(w, owners, keys)
    assert torch.equal(classes, torch.tensor([[1.0, 0.0], [0.0, 3.0], [3.0, 3.0], [5.0, 5.0]]))
    assert assignment.tolist() == [0, 1, 1, 2, 3]
    expected = torch.tensor([
        [False, True, True, True],    # class 1 (client 0): 2 is also at client 1, 3 at client 1, 4
        [False, False, False, True],  # class 2 (clients 0, 1): only client 2's class 4 is exclusive
        [True, True, False, True],    # class 3 (client 1)
        [True, True, True, False],    # class 4 (client 2)
    ])
    assert torch.equal(negatives, expected)
    # all keys distinct: exactly Eq. 5's cross-client mask
    _, plain, _ = merge_shared_identities(w, owners, torch.arange(5))
    assert torch.equal(plain, cross_client_mask(owners))
