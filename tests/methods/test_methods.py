"""The method registry, FedAvg, the client loss and each method's server step on hand-built state."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from federated_core.engine import ClientData, run_federated
from federated_core.engine.messages import make_message
from federated_core.engine.state import ClientState, ServerState
from federated_core.methods import FedAvg, available_methods, get_method, register_method
from federated_core.methods._centers import CENTERS_PREFIX, MarginClientModel
from federated_core.methods.regularizers import cross_client_mask, spreadout_distance
from federated_core.models.heads import margin_loss

from methods_helpers import random_faces, tiny_config

OURS = ["fedface", "fedgc", "fedgc-cos", "fedpe", "fedpe-fixed", "shared-centers"]


def test_registry():
    assert set(OURS) <= set(available_methods())
    assert get_method("fedgc-cos").regularizer == "cosine"
    assert get_method("fedgc").regularizer == "softmax" and get_method("fedgc").lam == 20.0
    assert get_method("fedgc").reg_form == "dot"  # Eq. 5 as written, whatever the loss
    assert get_method("fedgc", reg_form="scaled-cosine").reg_form == "scaled-cosine"
    assert get_method("fedface").form == "distance" and get_method("fedface").lam == 10.0
    assert get_method("fedpe").name == "fedpe" and get_method("fedpe", s=16.0).hyperparameters() == {"s": 16.0}
    with pytest.raises(ValueError, match="method must be one of"):
        get_method("fedsgd")
    with pytest.raises(ValueError, match="takes no hyper-parameter"):
        get_method("fedface", nu=0.3)
    with pytest.raises(ValueError, match="already registered"):
        register_method("fedpe")(type("Other", (), {}))


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("fedpe", {"loss": "triplet"}, "loss"),
        ("fedpe", {"center_init": "zeros"}, "center_init"),
        ("fedpe", {"m": 2.0}, "margin"),
        ("fedpe", {"s": -1.0}, "scale"),
        ("fedpe-fixed", {"center_init": "mean-feature"}, "random"),
        ("fedgc", {"lam": -1.0}, "lam"),
        ("fedgc", {"reg_form": "euclid"}, "reg_form"),
        ("fedgc", {"regularizer": "l2"}, "regularizer"),
        ("fedface", {"margin": 3.0}, "margin"),
        ("fedface", {"form": "angle"}, "form"),
        ("fedface", {"server_steps": 0}, "server_steps"),
        ("fedface", {"cos_threshold": 1.0}, "cos_threshold"),
        ("fedface", {"positive_margin": 1.5}, "positive_margin"),
    ],
)
def test_hyperparameter_validation(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_method(name, **params)


def test_fedavg_weighted_mean_merge_and_integers():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    c = {"w": torch.tensor([0.0, 0.0]), "n": torch.tensor(1)}
    avg = FedAvg()
    for t, weight in ((a, 1), (b, 3), (c, 4)):
        avg.accumulate(t, weight)
    out = avg.finalize()
    assert torch.allclose(out["w"], torch.tensor([(1 + 9 + 0) / 8, (2 + 18 + 0) / 8]))
    assert out["w"].dtype == torch.float32 and out["n"].item() == 5
    shard1, shard2 = FedAvg(), FedAvg()
    shard1.accumulate(a, 1)
    shard2.accumulate(b, 3)
    shard2.accumulate(c, 4)
    shard1.merge(shard2)
    assert torch.equal(shard1.finalize()["w"], out["w"])
    with pytest.raises(ValueError, match="same tensors"):
        avg.accumulate({"v": torch.zeros(2)}, 1)
    with pytest.raises(ValueError, match="weight"):
        avg.accumulate(a, 0)
    with pytest.raises(ValueError, match="nothing accumulated"):
        FedAvg().finalize()


def test_client_model_loss_is_the_heads_margin_loss():
    gen = torch.Generator().manual_seed(0)
    feats, w, extra = torch.randn(6, 5, generator=gen), torch.randn(3, 5, generator=gen), torch.randn(4, 5, generator=gen)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    for kind, s, m in (("cosface", 30.0, 0.35), ("arcface", 64.0, 0.5), ("softmax", 1.0, 0.0)):
        model = MarginClientModel(nn.Identity(), w, extra, kind, s, m)
        ours = model(feats, y)
        assert ours.shape == (6,)
        ref = margin_loss(feats, w, y, kind, s if kind != "softmax" else None, m if kind != "softmax" else None,
                          extra_negatives=extra)
        assert torch.allclose(ours.mean(), ref, atol=1e-5)
    fixed = MarginClientModel(nn.Identity(), w, None, "cosface", 30.0, 0.35, train_centers=False)
    assert not fixed.centers.requires_grad


def _server_with_centers(method, blocks, lr=0.1):
    tensors = {CENTERS_PREFIX + f"client:{k}": b.clone() for k, b in blocks.items()}
    return ServerState(tensors, {"lr": lr, "device": "cpu", "spec": {}})


def test_fedgc_server_correction_is_one_lambda_eta_step():
    method = get_method("fedgc", loss="softmax", lam=20.0)  # raw dot products, Eq. 5 as written
    gen = torch.Generator().manual_seed(1)
    blocks = {0: torch.randn(2, 4, generator=gen), 1: torch.randn(3, 4, generator=gen), 4: torch.randn(1, 4, generator=gen)}
    state = method.process_centers(_server_with_centers(method, blocks))
    w = torch.cat([blocks[0], blocks[1], blocks[4]]).requires_grad_(True)
    owners = torch.tensor([0, 0, 1, 1, 1, 4])
    queries = w.detach()
    logits = queries @ w.t()
    allowed = cross_client_mask(owners) | torch.eye(6, dtype=torch.bool)
    reg = (torch.logsumexp(logits.masked_fill(~allowed, float("-inf")), 1) - logits.diagonal()).sum()
    (grad,) = torch.autograd.grad(reg, w)
    expected = (w - 20.0 * 0.1 * grad).detach()
    got = torch.cat([state.tensors[CENTERS_PREFIX + f"client:{k}"] for k in (0, 1, 4)])
    assert torch.allclose(got, expected, atol=1e-6)
    assert state.meta["reg_form"] == "dot" and state.meta["regularizer"] == "softmax"
    single = method.process_centers(_server_with_centers(method, {3: blocks[1]}))
    assert torch.equal(single.tensors[CENTERS_PREFIX + "client:3"], blocks[1])  # no other client: nothing to correct


def test_fedface_server_step_is_the_spreadout_step():
    method = get_method("fedface", lam=10.0, margin=0.9)
    gen = torch.Generator().manual_seed(2)
    base = F.normalize(torch.randn(1, 4, generator=gen), dim=1)
    blocks = {0: base + 0.1 * torch.randn(2, 4, generator=gen), 1: base + 0.1 * torch.randn(2, 4, generator=gen)}
    state = method.process_centers(_server_with_centers(method, blocks, lr=0.05))
    w = torch.cat([blocks[0], blocks[1]]).requires_grad_(True)
    reg = spreadout_distance(w, cross_client_mask(torch.tensor([0, 0, 1, 1])), 0.9)
    assert reg > 0  # the rows are close: the hinge is active
    (grad,) = torch.autograd.grad(10.0 * reg, w)
    expected = (w - 0.05 * grad).detach()
    got = torch.cat([state.tensors[CENTERS_PREFIX + "client:0"], state.tensors[CENTERS_PREFIX + "client:1"]])
    assert torch.allclose(got, expected, atol=1e-6)
    assert state.meta["last_regularizer"] == pytest.approx(float(reg.detach()))


def test_shared_centers_uses_other_clients_rows_as_negatives():
    method = get_method("shared-centers")
    state = _server_with_centers(method, {0: torch.ones(2, 3), 1: torch.zeros(1, 3), 2: torch.full((2, 3), 2.0)})
    (message,) = method.extra_broadcast(state, 3, "train", ["client:1", "client:2"])
    assert message.kind == "global_class_embeddings" and message.receivers == ("client:1", "client:2")
    assert message.tensors["owners"].tolist() == [0, 0, 1, 2, 2]
    client = ClientState({"centers": torch.zeros(1, 3)}, {"client_id": 1})
    negatives = method.negatives_for(client, [message])
    assert torch.equal(negatives, torch.cat([torch.ones(2, 3), torch.full((2, 3), 2.0)]))


def test_fedgc_shared_identities_end_to_end():
    """Identity 7 is held by clients 0 and 1: after the server step both hold the same, corrected row."""
    faces = [random_faces([5, 7], 3, seed=0), random_faces([7, 9], 3, seed=1), random_faces([11], 3, seed=2)]
    clients = [ClientData.from_faces(f) for f in faces]
    result = run_federated(tiny_config(method="fedgc", method_params={"shared_identities": True}), clients)
    server = result.server_state.tensors
    assert torch.equal(server[CENTERS_PREFIX + "client:0"][1], server[CENTERS_PREFIX + "client:1"][0])
    assert not torch.equal(server[CENTERS_PREFIX + "client:0"][0], server[CENTERS_PREFIX + "client:1"][1])
    uploads = [m for m in result.wire if m.kind == "class_centers" and m.sender != "server"]
    assert [m.tensors["identities"].tolist() for m in uploads] == [[5, 7], [7, 9], [11]]


def test_fedpe_fixed_never_changes_w_and_fedpe_does():
    clients = [ClientData.from_faces(random_faces([k * 10, k * 10 + 1], 3, seed=k)) for k in range(2)]
    fixed = run_federated(tiny_config(method="fedpe-fixed", rounds=2), clients)
    trained = run_federated(tiny_config(method="fedpe", rounds=2), clients)
    from federated_core.engine.simulation import generator
    from federated_core.methods import GlobalModel
    from federated_core.models import build_backbone

    model = build_backbone("tiny", 16, 16)
    config = tiny_config(method="fedpe-fixed")
    init = get_method("fedpe-fixed").client_init(0, clients[0], GlobalModel(model, model.build_config), config,
                                                 generator(config.seed, "client_init", 0))
    assert torch.equal(fixed.client_states[0].tensors["centers"], init.tensors["centers"])
    assert not torch.equal(trained.client_states[0].tensors["centers"], init.tensors["centers"])
    assert all(m.kind == "backbone" for m in fixed.wire)


def test_mean_feature_initialisation():
    from federated_core.engine.simulation import generator
    from federated_core.methods import GlobalModel
    from federated_core.models import build_backbone, embed

    model = build_backbone("tiny", 16, 16)
    data = ClientData.from_faces(random_faces([3, 8], 4, seed=5))
    state = get_method("fedpe", center_init="mean-feature").client_init(
        0, data, GlobalModel(model, model.build_config), tiny_config(), generator(0, "client_init", 0))
    emb = embed(model, data.faces)
    expected = F.normalize(torch.stack([emb[data.local_labels == c].mean(0) for c in range(2)]), dim=1)
    assert torch.allclose(state.tensors["centers"], expected, atol=1e-6)
    assert state.meta["center_init"] == "mean-feature" and state.meta["row_identities"] == [3, 8]


def test_message_uploads_are_addressed_to_the_server_only():
    method = get_method("fedpe")
    with pytest.raises(ValueError, match="receiver"):
        make_message("backbone", "client:0", ("client:*",), 1, "train", {})
    assert method.find([], "backbone", required=False) is None


def test_one_identity_clients_fedface_trains_positive_only_fedpe_learns_nothing():
    """FedFace's own setting (one identity per client): its clients train on FedAwS's positive-only
    loss; FedPE's one-class margin softmax is identically zero, so its update is weight decay only."""
    clients = [ClientData.from_faces(random_faces([10 + k], 4, seed=k)) for k in range(3)]
    cfg = dict(rounds=1, weight_decay=0.0, momentum=0.0, seed=2)
    face = run_federated(tiny_config(method="fedface", **cfg), clients)
    pe = run_federated(tiny_config(method="fedpe", **cfg), clients)
    for k in range(3):
        fu = face.client_states[k].meta["last_update"]
        pu = pe.client_states[k].meta["last_update"]
        assert fu["positive_only"] and fu["loss"] > 0
        assert not pu["positive_only"] and pu["loss"] == 0.0
    # without weight decay FedPE's clients upload the broadcast backbone unchanged; FedFace's move
    start = [m for m in pe.wire if m.kind == "backbone" and m.sender == "server"][0]
    pe_up = [m for m in pe.wire if m.kind == "backbone" and m.sender == "client:0"][0]
    face_up = [m for m in face.wire if m.kind == "backbone" and m.sender == "client:0"][0]
    same = all(torch.equal(pe_up.tensors[n], start.tensors[n]) for n in start.tensors)
    moved = any(not torch.equal(face_up.tensors[n], start.tensors[n]) for n in start.tensors)
    assert same and moved
    # the positive-only loss by hand: max(0, ν − cos(f, w))²
    bb = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    w = torch.randn(1, 4)
    model = MarginClientModel(bb, w, None, "cosface", 30.0, 0.35, positive_margin=0.9)
    x, y = torch.randn(5, 3, 2, 2), torch.zeros(5, dtype=torch.int64)
    expected = torch.clamp(0.9 - F.cosine_similarity(bb(x), w.expand(5, -1), dim=1), min=0).pow(2)
    torch.testing.assert_close(model(x, y), expected)
    # two classes: the margin softmax, whatever positive_margin says
    assert not MarginClientModel(bb, torch.randn(2, 4), None, "cosface", 30.0, 0.35, positive_margin=0.9).positive_only
