"""FedAvg + local fine-tuning (FedFS's baseline): one-identity clients train on the positive-only
loss against a fixed mean-feature W_k (unlike FedPE, whose one-class softmax trains nothing), only
the backbone leaves, and the personalised model is the final global model fine-tuned locally."""

import pytest
import torch
import torch.nn.functional as F

from federated_core.engine import ClientData, run_federated
from federated_core.engine.config import DpSgdConfig
from federated_core.methods import GlobalModel, get_method
from federated_core.models import build_backbone

from methods_helpers import random_faces, tiny_config


@pytest.fixture(scope="module")
def clients():
    return [ClientData.from_faces(random_faces([k], 8, seed=k)) for k in range(3)]


def _initial_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        return build_backbone("tiny", 16, 16)


def _positive_only_loss(model, data, centers, nu=0.9):
    """FedAwS's positive-only loss max(0, ν − cos(f, w_y))², written out by hand."""
    with torch.no_grad():
        f = model.eval()(data.faces.as_float())
    cos = F.cosine_similarity(f, centers[data.local_labels], dim=1)
    return torch.clamp(nu - cos, min=0).pow(2).mean().item()


@pytest.fixture(scope="module")
def run(clients):
    method = get_method("fedavg-finetune")
    result = run_federated(tiny_config(method="fedavg-finetune", rounds=2, batch_size=8), clients, method=method,
                           initial_model=_initial_model())
    return method, result


def test_one_identity_clients_train_and_only_the_backbone_leaves(run, clients):
    method, result = run
    assert {m.kind for m in result.wire} == {"backbone"}
    initial = _initial_model().state_dict()
    assert not torch.equal(result.backbone.state_dict()["embedding.weight"], initial["embedding.weight"])
    fedpe = run_federated(tiny_config(method="fedpe", rounds=1, batch_size=8), clients, method=get_method("fedpe"),
                          initial_model=_initial_model())
    # FedPE's one-class margin softmax is identically zero (its backbone moves by weight decay only)
    assert all(s.meta["last_update"]["loss"] == 0.0 for s in fedpe.client_states.values())
    assert all(s.meta["last_update"]["loss"] > 0.0 for s in result.client_states.values())
    for cid, state in result.client_states.items():
        assert state.meta["last_update"]["positive_only"]
        with torch.no_grad():  # W_k fixed at the normalised mean feature of φ0
            feats = F.normalize(_initial_model().eval()(clients[cid].faces.as_float()), dim=1)
        mean = F.normalize(feats.mean(0, keepdim=True), dim=1)
        assert torch.allclose(state.tensors["centers"], mean, atol=1e-5)


def test_personalised_model_is_the_global_model_fine_tuned_locally(run, clients):
    _, result = run
    method = get_method("fedavg-finetune", finetune_epochs=5)  # the run's states, five local epochs of tuning
    before = {k: v.clone() for k, v in result.backbone.state_dict().items()}
    tuned = [method.personalised_model(result.client_states[c], clients[c], result.backbone, seed=0) for c in range(3)]
    assert all(torch.equal(v, result.backbone.state_dict()[k]) for k, v in before.items())  # global untouched
    for c, model in enumerate(tuned):
        centers = result.client_states[c].tensors["centers"]
        assert _positive_only_loss(model, clients[c], centers) < _positive_only_loss(result.backbone, clients[c], centers)
    again = method.personalised_model(result.client_states[0], clients[0], result.backbone, seed=0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in tuned[0].state_dict().items())  # seeded
    with pytest.raises(ValueError, match="identities"):
        method.personalised_model(result.client_states[0], clients[1], result.backbone, seed=0)


def test_refusals_and_validation(clients):
    model = _initial_model()
    with pytest.raises(ValueError, match="DP-SGD|dp_sgd"):
        get_method("fedavg-finetune").client_init(0, clients[0], GlobalModel(model, model.build_config),
                                                  tiny_config(dp_sgd=DpSgdConfig(noise_multiplier=1.0)),
                                                  torch.Generator())
    for params, match in (({"positive_margin": 1.5}, "positive_margin"), ({"finetune_epochs": 0}, "finetune_epochs"),
                          ({"finetune_epochs": 1.5}, "finetune_epochs")):
        with pytest.raises(ValueError, match=match):
            get_method("fedavg-finetune", **params)
