"""Gradient inversion of logged client updates (`attacks.logged_update`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.gradient import LocalSgd, simulate_local_update
from attacks.logged_update import LoggedUpdateProbeConfig, ProxyHeadModel, invert_logged_update
from attacks.views import observer_view
from federated_core.engine.messages import make_message
from federated_core.engine.wire import WireLog

RES, DIM = 16, 16
SPEC = {"name": "tiny", "embedding_dim": DIM, "resolution": RES, "kwargs": {}}


def _log_with_update(backbone, faces, labels, classes, lr=0.1, weight_decay=0.0) -> WireLog:
    """A wire log holding a broadcast θ_0 and a client's upload θ_0 + Δ, Δ one SGD step of the
    attacker's own model of the client (the case where its model is exact)."""
    x = faces.as_float()
    model = ProxyHeadModel(backbone, classes)
    delta = simulate_local_update(model, x, labels, LocalSgd(steps=1, batch_size=len(x), lr=lr, weight_decay=weight_decay))
    theta0 = {k: v.clone() for k, v in backbone.state_dict().items()}
    theta1 = {k: v.clone() for k, v in theta0.items()}
    for name, d in delta.items():
        theta1[name.removeprefix("backbone.")] += d
    log = WireLog()
    log.append(make_message("backbone", "server", ("client:0",), 1, "train", theta0, meta={"spec": SPEC}))
    log.append(make_message("backbone", "client:0", ("server",), 1, "train", theta1, meta={"num_samples": len(x)}))
    return log


def test_proxy_head_losses(faces_factory, backbone_factory):
    tiny_backbone, toy_faces = backbone_factory, faces_factory
    bb = tiny_backbone(DIM, RES)
    x = toy_faces([1, 2], 2, RES).as_float()
    y = torch.tensor([0, 0, 1, 1])
    per = ProxyHeadModel(bb, 2, margin=0.35, scale=4.0)(x, y)
    # by hand: proxy centers = normalised class means of the normalised features; CosFace logits
    with torch.no_grad():
        f = torch.nn.functional.normalize(bb(x), dim=1)
        centers = torch.nn.functional.normalize(torch.stack([f[y == c].sum(0) for c in (0, 1)]), dim=1)
        logits = 4.0 * (f @ centers.T - 0.35 * torch.nn.functional.one_hot(y, 2))
        by_hand = torch.logsumexp(logits, dim=1) - logits[torch.arange(4), y]
    assert per.shape == (4,) and torch.allclose(per.detach(), by_hand, atol=1e-5)
    # the margin enters: without it the same batch costs more than with CosFace's own-class bonus removed
    plain = ProxyHeadModel(bb, 2, margin=0.0, scale=4.0)(x, y)
    assert (ProxyHeadModel(bb, 2, margin=0.35, scale=4.0)(x, y) > plain).all()
    one = ProxyHeadModel(bb, 1)(x, torch.zeros(4, dtype=torch.int64))  # positive-only: 1 - cos(f, mean)
    assert torch.allclose(one.detach(), 1 - f @ torch.nn.functional.normalize(f.sum(0), dim=0), atol=1e-5)
    with pytest.raises(ValueError, match="loss must be one of"):
        ProxyHeadModel(bb, 2, loss="arcface")
    with pytest.raises(ValueError, match="num_classes"):
        ProxyHeadModel(bb, 0)


def test_exact_model_update_direction_is_matched(faces_factory, backbone_factory):
    """When the update is one step of the attacker's own model of the client (one identity,
    positive-only loss, weight decay), Inverting Gradients matches its direction: the cosine
    between simulated and observed (decay-projected) updates rises far above its random start."""
    tiny_backbone, toy_faces = backbone_factory, faces_factory
    bb = tiny_backbone(DIM, RES, seed=2)
    faces = toy_faces([7], 2, RES, noise=0.02)
    log = _log_with_update(bb, faces, torch.zeros(2, dtype=torch.int64), 1, weight_decay=5e-4)
    view = observer_view(log, "server")
    start = invert_logged_update(view, LoggedUpdateProbeConfig(client="client:0", dummies=2, iterations=1), faces, 1,
                                 local_lr=0.1, weight_decay=5e-4)
    res = invert_logged_update(view, LoggedUpdateProbeConfig(client="client:0", dummies=2, iterations=300), faces, 1,
                               local_lr=0.1, weight_decay=5e-4)
    assert res.update_cosine > 0.5 and res.update_cosine > start.update_cosine + 0.4
    # the decay-like share, by hand: squared cosine of the logged update with the broadcast θ_0
    broadcast, upload = list(log)
    theta0 = {n: broadcast.tensors[n] for n, _ in bb.named_parameters()}
    upd = {n: upload.tensors[n] - theta0[n] for n in theta0}
    dot = sum(float((upd[n].double() * theta0[n].double()).sum()) for n in theta0)
    uu = sum(float(upd[n].double().pow(2).sum()) for n in theta0)
    tt = sum(float(theta0[n].double().pow(2).sum()) for n in theta0)
    assert res.decay_share == pytest.approx(dot * dot / (uu * tt), rel=1e-6) and res.decay_share > 0
    s = res.summary()
    assert s["num_images"] == 2 and s["num_samples"] == 2 and s["granted_classes"] == 1 and s["round"] == 1
    assert res.reconstructions.shape == res.nearest_originals.shape == (2, 3, RES, RES)
    real = faces.images.numpy()
    assert all(any(np.array_equal(o, r) for r in real) for o in res.nearest_originals)  # nearest = a real image
    assert "granted" in res.threat_model and "FedSGD approximation" in res.threat_model


def test_engine_run_updates_and_errors(tmp_path, faces_factory):
    from federated_core.engine import ClientData, FederatedConfig, run_federated

    toy_faces = faces_factory
    clients = [ClientData.from_faces(toy_faces([0, 1], 3, RES)), ClientData.from_faces(toy_faces([2], 3, RES))]
    cfg = FederatedConfig(method="fedpe", rounds=2, batch_size=4, embedding_dim=DIM, resolution=RES, progress=False,
                          eval_initial=False, eval_every=0, seed=1)
    run_federated(cfg, clients, out_dir=tmp_path / "run")
    view = observer_view(tmp_path / "run", "server")
    first = invert_logged_update(view, LoggedUpdateProbeConfig(client="client:0", dummies=8, iterations=3), clients[0].faces,
                                 2, local_lr=cfg.lr, weight_decay=cfg.weight_decay, local_epochs=1, batch_size=4)
    last = invert_logged_update(view, LoggedUpdateProbeConfig(client="client:0", round="last", iterations=3),
                                clients[0].faces, 2, local_lr=cfg.lr)
    assert (first.round, last.round, first.base_round) == (1, 2, 1)
    assert first.psnr.shape == (6,)  # dummies capped at the client's 6 images
    assert any("only 6 images" in n for n in first.notes)
    assert first.local_steps_estimate == 2 and np.isfinite(first.update_cosine)
    with pytest.raises(ValueError, match="sent no backbone update in round 5"):
        invert_logged_update(view, LoggedUpdateProbeConfig(client="client:0", round=5, iterations=1), clients[0].faces, 2,
                             local_lr=0.1)
    with pytest.raises(ValueError, match="observed no backbone update sent by 'client:7'"):
        invert_logged_update(view, LoggedUpdateProbeConfig(client="client:7", iterations=1), clients[0].faces, 2,
                             local_lr=0.1)
    client_view = observer_view(tmp_path / "run", "client:1")
    with pytest.raises(ValueError, match="only the server observes"):
        invert_logged_update(client_view, LoggedUpdateProbeConfig(client="client:0", iterations=1), clients[0].faces, 2,
                             local_lr=0.1)
    with pytest.raises(ValueError, match="granted_classes"):
        invert_logged_update(view, LoggedUpdateProbeConfig(client="client:0", iterations=1), clients[0].faces, 0,
                             local_lr=0.1)


def test_config_validation():
    with pytest.raises(ValueError, match="client must be"):
        LoggedUpdateProbeConfig(client="server")
    with pytest.raises(ValueError, match="round must be"):
        LoggedUpdateProbeConfig(client="client:0", round="middle")
    with pytest.raises(ValueError, match="dummies"):
        LoggedUpdateProbeConfig(client="client:0", dummies=0)
    with pytest.raises(ValueError, match="iterations"):
        LoggedUpdateProbeConfig(client="client:0", iterations=0)
