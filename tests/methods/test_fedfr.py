"""FedFR: its loss terms on hand-worked values, the hard-negative selection, and 2-round runs
(what leaves a client, the server's averages, the ablation switches, the personalised model)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from federated_core.engine import ClientData, run_federated
from federated_core.engine.config import DpSgdConfig
from federated_core.methods import get_method
from federated_core.methods.fedfr import DFC_BRANCHES, DFC_WEIGHT, LOCAL_BACKBONE, PUBLIC_EMBEDDINGS, PUBLIC_KIND
from federated_core.methods.fedfr_losses import dynamic_range, margin_bce, model_contrastive, select_hard_negatives
from federated_core.models import build_backbone, embed

from methods_helpers import random_faces, tiny_config

PUBLIC_IDS = list(range(100, 106))


@pytest.fixture(scope="module")
def public():
    return random_faces(PUBLIC_IDS, 3, seed=9)


@pytest.fixture(scope="module")
def clients():
    return [ClientData.from_faces(random_faces([k * 10, k * 10 + 1], 3, seed=k)) for k in range(3)]


def _run(clients, public, rounds=2, seed=0, **params):
    method = get_method("fedfr", public_set=public, **params)
    model = _initial_model()
    result = run_federated(tiny_config(method="fedfr", rounds=rounds, seed=seed), clients, method=method, initial_model=model)
    return method, result


def _initial_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return build_backbone("tiny", 16, 16)


# ---------------------------------------------------------------------------------------- losses


def test_dynamic_range_hand_values():
    z = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    # g(z) = 2((z+1)/2)^3 - 1: g(0) = 2/8 - 1, g(0.5) = 2(3/4)^3 - 1 = 27/32 - 1
    assert torch.allclose(dynamic_range(z, 3.0), torch.tensor([-1.0, -0.75, 27 / 32 - 1, 1.0]))
    assert torch.allclose(dynamic_range(z, 1.0), z)  # t' = 1 is the identity
    with pytest.raises(ValueError, match="t"):
        dynamic_range(z, 0.0)


def test_margin_bce_hand_worked():
    cos = torch.tensor([[0.5, 0.0], [0.5, 0.0]], dtype=torch.float64)
    bias = torch.tensor([0.1, -0.2], dtype=torch.float64)
    got = margin_bce(cos, torch.tensor([0, -1]), bias, lam=0.7, s=30.0, m=0.4, t=3.0)
    g_half, g_zero = 27 / 32 - 1, -0.75
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    pos_0 = 0.7 / 30 * softplus(-30 * (g_half - 0.4) - 0.1)  # branch 0 is the target of row 0
    neg_1 = 0.3 / 30 * softplus(30 * (g_zero + 0.4) - 0.2)
    neg_0 = 0.3 / 30 * softplus(30 * (g_half + 0.4) + 0.1)  # row 1 is a public sample: negative everywhere
    assert got[0].item() == pytest.approx(pos_0 + neg_1, rel=1e-12)
    assert got[1].item() == pytest.approx(neg_0 + neg_1, rel=1e-12)
    with pytest.raises(ValueError, match="lam"):
        margin_bce(cos, torch.tensor([0, -1]), bias, lam=1.5)
    with pytest.raises(ValueError, match="bias"):
        margin_bce(cos, torch.tensor([0, -1]), bias[:1])


def test_contrastive_is_eq5():
    gen = torch.Generator().manual_seed(0)
    f, fg, fp = (torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    got = model_contrastive(f, fg, fp, tau=0.5)
    for i in range(4):
        a = float(f[i] @ fg[i] / (f[i].norm() * fg[i].norm())) / 0.5
        b = float(f[i] @ fp[i] / (f[i].norm() * fp[i].norm())) / 0.5
        assert got[i].item() == pytest.approx(-math.log(math.exp(a) / (math.exp(a) + math.exp(b))), rel=1e-10)
    # the global feature as previous model: the constant log 2
    assert torch.allclose(model_contrastive(f, fg, fg, 0.5), torch.full((4,), math.log(2.0), dtype=torch.float64))


def test_hard_negatives_keep_exactly_the_samples_above_the_threshold():
    local = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    angles = [0.2, 0.9, 1.3, 2.0]  # cos to local[0]: 0.98, 0.62, 0.27, -0.42
    public = torch.tensor([[math.cos(a), 0.0, math.sin(a)] for a in angles] + [[0.0, -0.5, 0.2], [0.1, 0.5, 0.0]])
    keep = select_hard_negatives(public * 3.0, local, 0.4)  # scale does not matter: cosines
    assert keep.tolist() == [True, True, False, False, False, True]  # last: cos 0.98 to local[1]
    gen = torch.Generator().manual_seed(1)
    pub, loc = torch.randn(300, 8, generator=gen), torch.randn(7, 8, generator=gen)
    reference = (F.normalize(pub.double(), dim=1) @ F.normalize(loc.double(), dim=1).t()).max(1).values.numpy()
    for t in (-1.0, 0.0, 0.3, 0.55, 1.0):
        assert not np.any(np.abs(reference - t) < 1e-6)
        assert select_hard_negatives(pub, loc, t).numpy().tolist() == (reference > t).tolist()
    with pytest.raises(ValueError, match="t_HN"):
        select_hard_negatives(pub, loc, 1.5)


# ---------------------------------------------------------------------------------------- runs


def test_two_rounds_wire_shows_only_backbone_and_phi(clients, public):
    method, result = _run(clients, public)
    client_kinds = {m.kind for m in result.wire if m.sender != "server"}
    assert client_kinds == {"backbone", PUBLIC_KIND}
    assert {m.kind for m in result.wire if m.sender == "server"} == {"backbone", PUBLIC_KIND}
    for state in result.client_states.values():
        assert DFC_WEIGHT in state.tensors and DFC_BRANCHES in state.tensors and "centers" in state.tensors
        assert [h["round"] for h in state.meta["hn_history"]] == [1, 2]
        assert [h["public_total"] for h in state.meta["hn_history"]] == [len(public)] * 2
    # Eq. 4: Φ_g is the average of the round-2 uploads, weighted by local + selected public images
    uploads = [m for m in result.wire if m.kind == PUBLIC_KIND and m.sender != "server" and m.round == 2]
    weights = []
    for m in uploads:
        state = result.client_states[int(m.sender.split(":")[1])]
        expected = len(clients[int(m.sender.split(":")[1])]) + state.meta["hn_history"][-1]["kept"]
        assert m.meta["num_samples"] == expected
        weights.append(expected)
    phi = sum(w * m.tensors["embeddings"].double() for w, m in zip(weights, uploads)) / sum(weights)
    assert torch.allclose(result.server_state.tensors[PUBLIC_EMBEDDINGS].double(), phi, atol=1e-6)
    # the private state stays home: no uploaded tensor equals W_l, Ω or the DFC transform
    for m in result.wire:
        if m.sender == "server":
            continue
        state = result.client_states[int(m.sender.split(":")[1])]
        for t in m.tensors.values():
            for name in ("centers", DFC_BRANCHES, DFC_WEIGHT):
                assert t.shape != state.tensors[name].shape or not torch.equal(t, state.tensors[name])


def test_hard_negative_count_of_the_first_round_matches_an_independent_selection(clients, public):
    method, result = _run(clients, public, rounds=1, t_hn=0.1)
    model = _initial_model()
    pub = embed(model, public).double().numpy()
    for cid, data in enumerate(clients):
        loc = embed(model, data.faces).double().numpy()
        best = (pub @ loc.T).max(axis=1)
        assert not np.any(np.abs(best - 0.1) < 1e-5)
        assert result.client_states[cid].meta["hn_history"][0]["kept"] == int((best > 0.1).sum())


def test_contrastive_term_starts_in_a_clients_second_round(clients, public):
    _, result = _run(clients, public)
    state = result.client_states[0]
    assert state.meta["last_update"]["contrastive_active"] is True
    assert set(state.meta["last_update"]["loss_terms"]) == {"cos", "con", "dfc"}
    _, first = _run(clients, public, rounds=1)
    assert first.client_states[0].meta["last_update"]["contrastive_active"] is False
    assert set(first.client_states[0].meta["last_update"]["loss_terms"]) == {"cos", "dfc"}


def test_baseline_row_sends_only_the_backbone_and_same_seed_same_numbers(clients, public):
    params = dict(public_data=False, contrastive=False, dfc=False)
    _, a = _run(clients, public, **params)
    _, b = _run(clients, public, **params)
    assert {m.kind for m in a.wire} == {"backbone"}
    assert all(torch.equal(a.server_state.tensors[k], b.server_state.tensors[k]) for k in a.server_state.tensors)
    state = a.client_states[1]
    assert DFC_WEIGHT not in state.tensors and state.meta["hn_history"][0]["kept"] == 0
    assert set(state.meta["last_update"]["loss_terms"]) == {"cos"}
    uploads = [m for m in a.wire if m.sender != "server" and m.round == 2]
    assert [m.meta["num_samples"] for m in uploads] == [len(c) for c in clients]


def test_all_public_data_and_cosface_branch_variant(clients, public):
    method, result = _run(clients, public, rounds=1, hard_negative=False, dfc_loss="cosface", fedavg_weight="local")
    for cid, state in result.client_states.items():
        assert state.meta["hn_history"][0]["kept"] == len(public)
    uploads = [m for m in result.wire if m.sender != "server"]
    assert all(m.meta["num_samples"] == len(clients[int(m.sender.split(":")[1])]) for m in uploads)
    assert method.hyperparameters()["public_set"]["faceset"]["identities"] == len(PUBLIC_IDS)


def test_personalised_models(clients, public):
    method, result = _run(clients, public, rounds=1)
    state = result.client_states[2]
    local = method.personalised_model(state, "local")
    full = method.personalised_model(state, "local+dfc")
    x = clients[2].faces.as_float()
    with torch.no_grad():
        f = local(x)
        expected = f @ state.tensors[DFC_WEIGHT].t() + state.tensors["dfc.transform.bias"]
        assert torch.allclose(full(x), expected, atol=1e-5)
    assert torch.equal(local.state_dict()["embedding.weight"], state.tensors[LOCAL_BACKBONE + "embedding.weight"])
    # Θ_l differs from the aggregated Θ_g (FedAvg over three clients)
    assert not torch.equal(local.state_dict()["embedding.weight"], result.backbone.state_dict()["embedding.weight"])
    fresh = method.client_init(0, clients[0], _global(), tiny_config(), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="has not trained"):
        method.personalised_model(fresh)
    assert torch.equal(fresh.tensors[DFC_WEIGHT], torch.eye(16))
    assert torch.equal(fresh.tensors[DFC_BRANCHES], fresh.tensors["centers"])


def _global():
    from federated_core.methods import GlobalModel

    model = _initial_model()
    return GlobalModel(model, model.build_config)


def test_refusals_and_validation(clients, public):
    method = get_method("fedfr", public_set=random_faces([0, 1], 2, seed=4))  # identity 0 is client 0's
    with pytest.raises(ValueError, match="disjoint"):
        method.client_init(0, clients[0], _global(), tiny_config(), torch.Generator())
    with pytest.raises(ValueError, match="dp_sgd"):
        get_method("fedfr", public_set=public).client_init(
            0, clients[0], _global(), tiny_config(dp_sgd=DpSgdConfig(noise_multiplier=1.0)), torch.Generator())
    for params, match in (({"t_hn": 2.0}, "t_hn"), ({"m": 1.0}, "m \\(CosFace"), ({"tau": 0.0}, "tau"),
                          ({"lam": -0.1}, "lam"), ({"alpha_con": -1.0}, "alpha_con"), ({"dfc_loss": "focal"}, "dfc_loss"),
                          ({"fedavg_weight": "all"}, "fedavg_weight"), ({"public_set": {"identities": [5, 2]}}, "public_set"),
                          ({"contrastive": 1}, "contrastive")):
        with pytest.raises(ValueError, match=match):
            get_method("fedfr", **params)


def test_resume_gives_the_uninterrupted_result(clients, public, tmp_path):
    config = tiny_config(method="fedfr", rounds=2)
    full = run_federated(config, clients, method=get_method("fedfr", public_set=public), initial_model=_initial_model())
    run_federated(config, clients, out_dir=tmp_path, stop_after=1, method=get_method("fedfr", public_set=public),
                  initial_model=_initial_model())
    resumed = run_federated(config, clients, out_dir=tmp_path, resume=True, method=get_method("fedfr", public_set=public),
                            initial_model=_initial_model())
    for key, value in full.server_state.tensors.items():
        assert torch.equal(value, resumed.server_state.tensors[key]), key
    for cid, state in full.client_states.items():
        assert state.meta["hn_history"] == resumed.client_states[cid].meta["hn_history"]
        assert all(torch.equal(t, resumed.client_states[cid].tensors[k]) for k, t in state.tensors.items())


def test_default_public_set_is_complete_and_renders():
    from federated_core.methods.fedfr_public import PublicData, check_public_set

    spec = check_public_set(None)
    assert set(spec) == {"identities", "images_per_identity", "start_index", "generator"}
    faces = PublicData({**spec, "identities": [0, 2], "images_per_identity": 2}).faces(32)
    assert len(faces) == 4 and faces.resolution == 32
