"""Gradient inversion of logged client updates (`attacks.logged_update`)."""

from __future__ import annotations

import copy
from typing import Any, cast

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
    delta = simulate_local_update(  # the engine's model(x, y) -> [B] contract; not a ClientModel
        cast(Any, model), x, labels, LocalSgd(steps=1, batch_size=len(x), lr=lr, weight_decay=weight_decay)
    )
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
    start = invert_logged_update(
        view,
        LoggedUpdateProbeConfig(client="client:0", dummies=2, iterations=1),
        faces,
        1,
        local_lr=0.1,
        weight_decay=5e-4,
    )
    res = invert_logged_update(
        view,
        LoggedUpdateProbeConfig(client="client:0", dummies=2, iterations=300),
        faces,
        1,
        local_lr=0.1,
        weight_decay=5e-4,
    )
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
    cfg = FederatedConfig(
        method="fedpe",
        rounds=2,
        batch_size=4,
        embedding_dim=DIM,
        resolution=RES,
        progress=False,
        eval_initial=False,
        eval_every=0,
        seed=1,
    )
    run_federated(cfg, clients, out_dir=tmp_path / "run")
    view = observer_view(tmp_path / "run", "server")
    first = invert_logged_update(
        view,
        LoggedUpdateProbeConfig(client="client:0", dummies=8, iterations=3),
        clients[0].faces,
        2,
        local_lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        local_epochs=1,
        batch_size=4,
    )
    last = invert_logged_update(
        view,
        LoggedUpdateProbeConfig(client="client:0", round="last", iterations=3),
        clients[0].faces,
        2,
        local_lr=cfg.lr,
    )
    assert (first.round, last.round, first.base_round) == (1, 2, 1)
    assert first.psnr.shape == (6,)  # dummies capped at the client's 6 images
    assert any("only 6 images" in n for n in first.notes)
    assert first.local_steps_estimate == 2 and np.isfinite(first.update_cosine)
    with pytest.raises(ValueError, match="sent no backbone update in round 5"):
        invert_logged_update(
            view, LoggedUpdateProbeConfig(client="client:0", round=5, iterations=1), clients[0].faces, 2, local_lr=0.1
        )
    with pytest.raises(ValueError, match="observed no backbone update sent by 'client:7'"):
        invert_logged_update(
            view, LoggedUpdateProbeConfig(client="client:7", iterations=1), clients[0].faces, 2, local_lr=0.1
        )
    client_view = observer_view(tmp_path / "run", "client:1")
    with pytest.raises(ValueError, match="only the server observes"):
        invert_logged_update(
            client_view, LoggedUpdateProbeConfig(client="client:0", iterations=1), clients[0].faces, 2, local_lr=0.1
        )
    with pytest.raises(ValueError, match="granted_classes"):
        invert_logged_update(
            view, LoggedUpdateProbeConfig(client="client:0", iterations=1), clients[0].faces, 0, local_lr=0.1
        )


def test_config_validation():
    with pytest.raises(ValueError, match="client must be"):
        LoggedUpdateProbeConfig(client="server")
    with pytest.raises(ValueError, match="round must be"):
        LoggedUpdateProbeConfig(client="client:0", round="middle")
    with pytest.raises(ValueError, match="dummies"):
        LoggedUpdateProbeConfig(client="client:0", dummies=0)
    with pytest.raises(ValueError, match="iterations"):
        LoggedUpdateProbeConfig(client="client:0", iterations=0)


def _log_with_epochs(backbone, faces, epochs, batch, lr=0.1, momentum=0.9, weight_decay=5e-4) -> WireLog:
    """A wire log whose upload is ``epochs`` shuffled passes of `torch.optim.SGD` (momentum,
    weight decay) of the attacker's own one-identity proxy model: the order is the only unknown."""
    x = faces.as_float()
    client = ProxyHeadModel(copy.deepcopy(backbone), 1).train()
    opt = torch.optim.SGD(client.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = torch.Generator().manual_seed(11)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=rng)
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            loss = client(x[idx], torch.zeros(len(idx), dtype=torch.int64)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    theta0 = {k: v.clone() for k, v in backbone.state_dict().items()}
    theta1 = {k: v.detach().clone() for k, v in client.backbone.state_dict().items()}
    log = WireLog()
    log.append(make_message("backbone", "server", ("client:0",), 1, "train", theta0, meta={"spec": SPEC}))
    log.append(make_message("backbone", "client:0", ("server",), 1, "train", theta1, meta={"num_samples": len(x)}))
    return log


def test_default_epoch_prior_is_bit_identical(faces_factory, backbone_factory):
    """The defaults (``epoch_prior="none"``, momentum unused) are today's attack: spelling them
    out changes no number, and the summary gains no epoch keys."""
    faces = faces_factory([7], 4, RES, noise=0.02)
    view = observer_view(_log_with_epochs(backbone_factory(DIM, RES, seed=2), faces, 2, 2), "server")
    others = {"client:1": faces_factory([3], 4, RES, noise=0.02)}
    kw = dict(local_lr=0.1, weight_decay=5e-4, local_epochs=2, batch_size=2, null_faces=others)
    a = invert_logged_update(view, LoggedUpdateProbeConfig(client="client:0", dummies=3, iterations=6), faces, 1, **kw)
    explicit = LoggedUpdateProbeConfig(
        client="client:0", dummies=3, iterations=6, epoch_prior="none", epoch_prior_weight=1.0
    )
    b = invert_logged_update(view, explicit, faces, 1, momentum=0.0, **kw)
    for name in ("psnr", "ssim", "reconstructions", "nearest_originals"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.loss_history == b.loss_history and a.update_cosine == b.update_cosine
    assert a.summary() == b.summary() and a.threat_model == b.threat_model and a.notes == b.notes
    assert a.epochs is None and not any(k.startswith("epoch_") for k in a.summary())
    assert a.psnr.shape == (3,) and "FedSGD approximation" in a.threat_model


def test_one_epoch_prior_reduces_to_today(faces_factory, backbone_factory):
    """One epoch in one batch: the epoch priors simulate exactly today's one step."""
    faces = faces_factory([7], 4, RES, noise=0.02)
    view = observer_view(_log_with_epochs(backbone_factory(DIM, RES, seed=2), faces, 1, 4), "server")
    kw = dict(local_lr=0.1, weight_decay=5e-4, local_epochs=1, batch_size=4, momentum=0.9)
    today = invert_logged_update(
        view, LoggedUpdateProbeConfig(client="client:0", dummies=4, iterations=5), faces, 1, **kw
    )
    for prior in ("shared", "dimitrov"):
        cfg = LoggedUpdateProbeConfig(client="client:0", dummies=4, iterations=5, epoch_prior=prior)
        r = invert_logged_update(view, cfg, faces, 1, **kw)
        assert np.array_equal(r.reconstructions, today.reconstructions) and np.array_equal(r.psnr, today.psnr)
        assert r.update_cosine == today.update_cosine and r.epochs is not None and r.epochs["steps"] == 1


def test_epoch_prior_on_logged_update(faces_factory, backbone_factory):
    """Two shuffled epochs of two batches: all the client's images come back (one per image,
    scored against its nearest real image), with the schedule, the null over clients and the
    threat model stated; a missing schedule and bad option values raise, naming them."""
    faces = faces_factory([7], 4, RES, noise=0.02)
    view = observer_view(_log_with_epochs(backbone_factory(DIM, RES, seed=2), faces, 2, 2), "server")
    others = {"client:1": faces_factory([3], 4, RES, noise=0.02)}
    kw = dict(local_lr=0.1, weight_decay=5e-4, local_epochs=2, batch_size=2, momentum=0.9, null_faces=others)
    cfg = LoggedUpdateProbeConfig(client="client:0", dummies=8, iterations=4, restarts=2, epoch_prior="dimitrov")
    r = invert_logged_update(view, cfg, faces, 1, **kw)
    assert r.psnr.shape == (4,) and r.reconstructions.shape == (4, 3, RES, RES)  # N images, not E·N
    s = r.summary()
    assert s["epoch_prior"] == "dimitrov" and s["epoch_prior_weight"] == 1.0 and s["epoch_steps"] == 4
    assert s["epoch_momentum"] == 0.9 and len(s["epoch_restart_losses"]) == 2 and s["null_clients"] == 1
    assert s["permutation_p"] in (0.5, 1.0) and np.isfinite(r.update_cosine)
    assert any("dummies=8 not used" in n for n in r.notes)
    assert "order-invariant prior" in r.threat_model and "lower bound" in r.threat_model
    assert "2 epoch(s) x 2 step(s)" in r.threat_model and "FedSGD" not in r.threat_model
    shared = LoggedUpdateProbeConfig(client="client:0", dummies=4, iterations=2, restarts=1, epoch_prior="shared")
    assert invert_logged_update(view, shared, faces, 1, **kw).summary()["epoch_prior_weight"] is None
    with pytest.raises(ValueError, match="needs local_epochs, batch_size"):
        invert_logged_update(view, shared, faces, 1, local_lr=0.1)
    with pytest.raises(ValueError, match="momentum must be in"):
        invert_logged_update(view, shared, faces, 1, local_lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="'sgd-order'"):
        LoggedUpdateProbeConfig(client="client:0", epoch_prior="sgd-order")
    with pytest.raises(ValueError, match="epoch_prior_weight"):
        LoggedUpdateProbeConfig(client="client:0", epoch_prior="dimitrov", epoch_prior_weight=-1.0)


def _secagg_log(backbone, client_faces, lr=0.1) -> tuple[WireLog, dict[str, torch.Tensor]]:
    """What the server logs under secure aggregation: round 1's broadcast θ_0 to two clients,
    nothing readable from them, then round 2's broadcast θ_0 + the FedAvg mean of their one-step
    updates (weighted by image count). Returns the log and that mean update (backbone names)."""
    updates, counts = [], []
    for faces in client_faces:
        labels = torch.zeros(len(faces), dtype=torch.int64)
        model = ProxyHeadModel(backbone, 1)
        step = LocalSgd(steps=1, batch_size=len(faces), lr=lr)
        updates.append(simulate_local_update(cast(Any, model), faces.as_float(), labels, step))
        counts.append(len(faces))
    mean = {n: sum(c * u[n] for c, u in zip(counts, updates)) / sum(counts) for n in updates[0]}
    theta0 = {k: v.clone() for k, v in backbone.state_dict().items()}
    theta1 = {k: v.clone() for k, v in theta0.items()}
    for name, d in mean.items():
        theta1[name.removeprefix("backbone.")] += d
    log = WireLog()
    for party in ("client:0", "client:1"):
        log.append(make_message("backbone", "server", (party,), 1, "train", theta0, meta={"spec": SPEC}))
    # the clients' replies (SecAgg+'s key shares and masked vectors) hold no backbone: not logged here
    for party in ("client:0", "client:1"):
        log.append(make_message("backbone", "server", (party,), 2, "train", theta1, meta={"spec": SPEC}))
    return log, {n.removeprefix("backbone."): d for n, d in mean.items()}


def test_aggregate_is_the_difference_of_broadcasts_and_is_inverted(faces_factory, backbone_factory):
    """Under secure aggregation the server sees no client's update: the aggregate attack reads
    round 1's aggregate as round 2's broadcast minus round 1's (the FedAvg mean of the two
    clients' updates, bit for bit here), names its participants, matches its direction far above
    the random start (measured: -0.30 at 1 iteration, 0.39 at 300), scores against the union of the participants' images, and ranks the
    participants among groups of non-member identities."""
    from attacks.logged_update import AGGREGATE, participants, pick_update
    from federated_core.data.faceset import FaceSet

    bb = backbone_factory(DIM, RES, seed=2)
    a, b = faces_factory([7], 2, RES, noise=0.02), faces_factory([9], 3, RES, noise=0.02)
    log, mean = _secagg_log(bb, [a, b])
    view = observer_view(log, "server")
    assert view.backbone_updates(required=False) == [u for u in view.backbone_updates() if u.sender == "server"]
    cfg = LoggedUpdateProbeConfig(client=AGGREGATE, dummies=2, iterations=300)
    update = pick_update(view, cfg)
    assert (update.round, update.base_round) == (2, 1) and participants(view, update) == ["client:0", "client:1"]
    for name, d in mean.items():
        assert torch.equal(update.delta[name], (bb.state_dict()[name] + d) - bb.state_dict()[name])
    union = FaceSet.concat([a, b])
    nulls = {f"non-members:{g}": faces_factory([100 + 2 * g, 101 + 2 * g], 2, RES, noise=0.02) for g in range(3)}
    start = invert_logged_update(
        view, LoggedUpdateProbeConfig(client=AGGREGATE, dummies=2, iterations=1), union, 2, local_lr=0.1
    )
    res = invert_logged_update(
        view, cfg, union, 2, local_lr=0.1, null_faces=nulls, num_samples=len(union), local_epochs=1, batch_size=2
    )
    assert res.local_steps_estimate is None  # the participants' own step counts differ: none is stated
    # the attacker's model (one CosFace step on the union, two proxy classes) is not the clients'
    # (each its own positive-only loss): the match is partial, yet far above the random start (-0.30)
    assert res.update_cosine > 0.3 and res.update_cosine > start.update_cosine + 0.5
    s = res.summary()
    assert s["client"] == "aggregate" and s["round"] == 1 and s["num_samples"] == 5 and s["granted_classes"] == 2
    assert s["null_clients"] == 3 and s["units"] == 4 and s["permutation_statistic"] == "psnr"
    assert s["unit_name"].startswith("group of identities") and s["permutation_p"] in (0.25, 0.5, 0.75, 1.0)
    real = union.images.numpy()
    assert all(any(np.array_equal(o, r) for r in real) for o in res.nearest_originals)
    assert "secure aggregation" in res.threat_model and "lower bound" in res.threat_model
    assert any("broadcast of round 2 minus that of round 1" in n for n in res.notes)
    assert any("null over groups" in n for n in res.notes)


def test_aggregate_errors(faces_factory, backbone_factory):
    from attacks.logged_update import AGGREGATE

    faces = faces_factory([7], 2, RES)
    with pytest.raises(ValueError, match="mixes several clients' schedules"):
        LoggedUpdateProbeConfig(client=AGGREGATE, epoch_prior="dimitrov")
    with pytest.raises(ValueError, match="client must be 'client:<id>' or 'aggregate'"):
        LoggedUpdateProbeConfig(client="everyone")
    one_round = _log_with_update(backbone_factory(DIM, RES), faces, torch.zeros(2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="saw no two consecutive broadcasts"):
        invert_logged_update(
            observer_view(one_round, "server"), LoggedUpdateProbeConfig(client=AGGREGATE), faces, 1, local_lr=0.1
        )
    log, _ = _secagg_log(backbone_factory(DIM, RES), [faces, faces_factory([9], 2, RES)])
    with pytest.raises(ValueError, match="the server broadcast no aggregate of round 3; .* from rounds \\[1\\]"):
        invert_logged_update(
            observer_view(log, "server"), LoggedUpdateProbeConfig(client=AGGREGATE, round=3), faces, 1, local_lr=0.1
        )


def test_score_against_groups_by_hand(faces_factory):
    """Reconstructions that copy member images: PSNR at its ceiling against the members and far
    below against every other group; the identity similarity, by hand, from each group's own templates
    under a fixed embedding; the permutation p is 1/K; the attacked group must be scored."""
    from attacks.logged_update import score_against_groups

    members = faces_factory([1, 2], 2, RES)
    groups = {"aggregate": members, **{f"non-members:{g}": faces_factory([10 + g, 20 + g], 2, RES) for g in range(3)}}
    rec = members.images[[0, 2]].float() / 255
    projection = torch.randn(3 * RES * RES, 8, generator=torch.Generator().manual_seed(0))

    def embed(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ projection

    null = score_against_groups(rec, "aggregate", groups, embed)
    assert null.scores["aggregate"]["psnr"] > 100  # exact copies (PSNR's MSE floor keeps it finite)
    assert all(v["psnr"] < 40 for k, v in null.scores.items() if k != "aggregate")
    for name, faces in groups.items():
        emb = torch.nn.functional.normalize(embed(faces.images.float() / 255), dim=1)
        templates = torch.stack(
            [torch.nn.functional.normalize(emb[faces.labels == i].mean(0), dim=0) for i in faces.labels.unique()]
        )
        by_hand = float((torch.nn.functional.normalize(embed(rec), dim=1) @ templates.T).max(1).values.mean())
        assert null.scores[name]["identity_similarity"] == pytest.approx(by_hand, abs=1e-5)
    assert null.statistic == "identity_similarity" and null.permutation_p_psnr == 0.25
    assert null.permutation_p == 0.25 and null.attacked_rank() == 1
    with pytest.raises(ValueError, match="the attacked group 'aggregate' is not among"):
        score_against_groups(rec, "aggregate", {"x": members})
