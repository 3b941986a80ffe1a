"""Gradient inversion with known answers: breaching's recipe as the default, a linear model whose
update reveals its input exactly, and the permutation null over clients of logged-update
inversions (exact p-values derived by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.gradient import (
    GradientProbeConfig,
    InvertingGradientsConfig,
    LocalSgd,
    inverting_gradients,
    simulate_local_update,
)
from attacks.logged_update import (
    LoggedUpdateProbeConfig,
    ProxyHeadModel,
    invert_logged_update,
    permutation_p_value,
    score_against_clients,
)
from attacks.views import observer_view
from federated_core.engine.messages import make_message
from federated_core.engine.wire import WireLog

RES, DIM = 8, 16


class LinearClassifier(nn.Module):
    """Softmax regression on the flattened image, the engine's ``model(x, y) -> [B]`` contract.
    For one image its gradient is ``(g ⊗ x, g)`` with ``g = softmax(Wx + b) − onehot(y)``: the bias
    gradient fixes the scale, so a weight row divided by its bias entry *is* the image (Phong et
    al. 2018), and the cosine objective's only minimiser is the true image."""

    def __init__(self, pixels: int, classes: int, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.linear = nn.Linear(pixels, classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.linear(x.flatten(1)), y, reduction="none")


def _psnr_unit(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two images in [0, 1] (peak 1), written out here rather than taken from the code."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _linear_case(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, RES, RES, generator=gen) * 1.6 - 0.8  # inside the box [-1, 1]
    y = torch.tensor([2])
    model = LinearClassifier(3 * RES * RES, 5, seed=seed)
    sgd = LocalSgd(steps=1, batch_size=1, lr=0.1)
    observed = simulate_local_update(model, x, y, sgd)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    return model, x, y, sgd, observed, start


def test_defaults_follow_breachings_inverting_gradients():
    ig = InvertingGradientsConfig()
    assert ig.tv_weight == 0.2 and ig.restarts >= 4 and ig.lr == 0.1 and ig.signed and ig.boxed
    probe = GradientProbeConfig()
    assert probe.tv_weight == 0.2 and probe.restarts >= 4
    # the BatchNorm prior and the granted-labels row are opt-in: today's probe is unchanged
    assert ig.bn_prior_weight == 0.0 and probe.bn_prior_weight == 0.0 and probe.granted_labels_row is False
    logged = LoggedUpdateProbeConfig(client="client:0")
    assert logged.tv_weight == 0.2 and logged.restarts >= 4


def test_linear_model_update_reveals_the_image_exactly():
    model, x, y, sgd, observed, start = _linear_case()
    # the analytic answer, independent of the attack: weight row / bias entry of the true class
    dw, db = observed["linear.weight"], observed["linear.bias"]
    analytic = (dw[2] / db[2]).reshape(1, 3, RES, RES)
    assert torch.allclose(analytic, x, atol=1e-4)
    out = inverting_gradients(
        model, start, observed, y, (1, 3, RES, RES), sgd, InvertingGradientsConfig(iterations=150, restarts=1, tv_weight=0.0)
    )
    got = ((out.images + 1) / 2).numpy()
    assert _psnr_unit(got, ((x + 1) / 2).numpy()) > 40  # ~ exact (a random start scores ~ 8 dB)
    assert _psnr_unit(got, ((analytic + 1) / 2).numpy()) > 40


def test_restarts_keep_the_best_loss():
    model, x, y, sgd, observed, start = _linear_case(seed=1)
    out = inverting_gradients(
        model, start, observed, y, (1, 3, RES, RES), sgd, InvertingGradientsConfig(iterations=4, restarts=3, tv_weight=0.0)
    )
    assert len(out.restart_losses) == 3 and out.iterations == 12
    # the kept images' loss, recomputed by hand: 1 - cos(simulated update, observed update)
    sim = simulate_local_update(model, out.images, y, sgd)
    a = torch.cat([sim[n].flatten() for n in observed])
    b = torch.cat([observed[n].flatten() for n in observed])
    loss = 1 - float(a @ b / (a.norm() * b.norm()))
    assert loss == pytest.approx(min(out.restart_losses), abs=1e-5)


# ------------------------------------------------------------------ the null over clients


def _clients(faces_factory, k: int, per: int = 3):
    """``k`` clients of two identities each (disjoint), ``per`` images per identity."""
    return {f"client:{c}": faces_factory([10 * c, 10 * c + 1], per, RES, seed=c) for c in range(k)}


def test_permutation_p_value_by_hand():
    stats = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.3}
    assert permutation_p_value(stats, "a") == 0.25  # the largest of 4: 1/4
    assert permutation_p_value(stats, "c") == 0.5  # a and c are >= 0.5
    assert permutation_p_value(stats, "b") == 1.0
    assert permutation_p_value({"a": 0.5, "b": 0.5}, "a") == 1.0  # ties count against the attack
    with pytest.raises(ValueError, match="no statistic"):
        permutation_p_value(stats, "e")
    with pytest.raises(ValueError, match="NaN"):
        permutation_p_value({"a": float("nan"), "b": 0.0}, "a")


def test_planted_reconstruction_of_the_attacked_client_is_singled_out(faces_factory):
    k = 8
    faces = _clients(faces_factory, k)
    attacked = "client:5"
    rec = (faces[attacked].as_float()[:2] + 1) / 2  # the attacked client's own images
    null = score_against_clients(rec, attacked, faces)
    # only the attacked client holds these images: its statistic is the unique maximum, p = 1/K
    assert null.statistic == "psnr" and null.units == k
    assert null.permutation_p == pytest.approx(1 / k) and null.permutation_p_psnr == pytest.approx(1 / k)
    assert null.attacked_rank() == 1
    s = null.summary()
    assert s["units"] == k and s["null_clients"] == k - 1 and s["unit_name"].startswith("client")
    assert s["null_psnr"] < null.scores[attacked]["psnr"] and len(s["null_by_client"]) == k - 1


def test_random_reconstruction_p_value_is_uniform_and_matches_a_hand_computation(faces_factory):
    k = 6
    faces = _clients(faces_factory, k)
    rec = torch.rand(4, 3, RES, RES, generator=torch.Generator().manual_seed(11))
    # the statistic by hand: per client, the mean over reconstructions of the PSNR to its nearest image
    stat = {}
    for c, f in faces.items():
        real = ((f.as_float() + 1) / 2).numpy()
        stat[c] = float(np.mean([max(_psnr_unit(r, im) for im in real) for r in rec.numpy()]))
    ps = []
    for attacked in faces:
        null = score_against_clients(rec, attacked, faces)
        by_hand = sum(v >= stat[attacked] for v in stat.values()) / k
        assert null.permutation_p == pytest.approx(by_hand)
        assert null.scores[attacked]["psnr"] == pytest.approx(stat[attacked], abs=1e-3)
        ps.append(null.permutation_p)
    # a valid null: over the K possible attacked clients p takes each of 1/K, ..., K/K once
    assert sorted(ps) == pytest.approx([j / k for j in range(1, k + 1)])
    assert np.mean(ps) == pytest.approx((k + 1) / (2 * k))  # not small on average: 0.58


class _PlantedReference:
    """A stand-in evaluator reference: a reconstruction "is" identity 51 (client:5's first)."""

    class _Scores:
        def __init__(self, hit: np.ndarray) -> None:
            self.identity_similarity = np.where(hit, 0.9, 0.1)
            self.rank1 = hit

    def score(self, rec: torch.Tensor, truth):
        return self._Scores(np.array([51 in t for t in truth]))


def test_identity_statistic_under_an_evaluator(faces_factory):
    k = 5
    faces = {f"client:{c}": faces_factory([10 * c + 1], 2, RES, seed=c) for c in range(k)}
    ids = {f"client:{c}": [10 * c + 1] for c in range(k)}
    rec = torch.rand(3, 3, RES, RES, generator=torch.Generator().manual_seed(0))
    null = score_against_clients(rec, "client:4", faces, ids, _PlantedReference())
    assert null.statistic == "identity_similarity"
    # client:4 holds identity 41, not 51: every client scores 0.1, all tie, p = 1
    assert null.permutation_p == 1.0 and null.summary()["null_rank1"] == 0.0
    faces["client:5"], ids["client:5"] = faces_factory([51], 2, RES, seed=5), [51]
    null = score_against_clients(rec, "client:5", faces, ids, _PlantedReference())
    assert null.permutation_p == pytest.approx(1 / 6) and null.scores["client:5"]["rank1"] == 1.0
    assert null.summary()["null_identity_similarity"] == pytest.approx(0.1)


def _log_with_update(backbone, faces, classes: int, lr: float = 0.1) -> WireLog:
    x = faces.as_float()
    labels = torch.arange(len(x)) % classes
    delta = simulate_local_update(ProxyHeadModel(backbone, classes), x, labels, LocalSgd(1, len(x), lr))
    theta0 = {k: v.clone() for k, v in backbone.state_dict().items()}
    theta1 = {k: v.clone() for k, v in theta0.items()}
    for name, d in delta.items():
        theta1[name.removeprefix("backbone.")] += d
    spec = {"name": "tiny", "embedding_dim": DIM, "resolution": 16, "kwargs": {}}
    log = WireLog()
    log.append(make_message("backbone", "server", ("client:0",), 1, "train", theta0, meta={"spec": spec}))
    log.append(make_message("backbone", "client:0", ("server",), 1, "train", theta1, meta={"num_samples": len(x)}))
    return log


def test_logged_update_result_carries_the_null(faces_factory, backbone_factory):
    from attacks.run import AttackReport

    faces = {f"client:{c}": faces_factory([10 * c, 10 * c + 1], 2, 16, seed=c) for c in range(4)}
    view = observer_view(_log_with_update(backbone_factory(DIM, 16, seed=3), faces["client:0"], 2), "server")
    others = {c: f for c, f in faces.items() if c != "client:0"}
    cfg = LoggedUpdateProbeConfig(client="client:0", dummies=4, iterations=3, restarts=2)
    r = invert_logged_update(view, cfg, faces["client:0"], 2, local_lr=0.1, null_faces=others)
    s = r.summary()
    assert s["units"] == 4 and s["null_clients"] == 3 and s["permutation_statistic"] == "psnr"
    assert s["permutation_p"] in (0.25, 0.5, 0.75, 1.0) and s["null_psnr"] is not None
    assert s["null_identity_similarity"] is None and s["null_rank1"] is None  # no evaluator here
    assert (s["restarts"], s["tv_weight"]) == (2, 0.2)
    assert "lower bound" in r.threat_model and "upper bound" not in r.threat_model
    assert any("permutation p over 4 clients" in n for n in r.notes)
    report = AttackReport("run", "server", {}, gradient_logged=[r])
    row = report.to_dict()["gradient_logged"][0]
    for key in ("null_rank1", "null_identity_similarity", "null_psnr", "permutation_p", "units", "unit_name"):
        assert key in row
    assert "null id" in report.table()
    with pytest.raises(ValueError, match="clients that were not attacked"):
        invert_logged_update(view, cfg, faces["client:0"], 2, local_lr=0.1, null_faces=faces)
    without = invert_logged_update(view, cfg, faces["client:0"], 2, local_lr=0.1).summary()
    assert without["units"] == 1 and without["permutation_p"] is None and without["null_clients"] == 0


def test_scenario_budgets_reach_the_attack_config():
    from privaudit.attack_stage import attack_config
    from privaudit.scenario import AttackSpec, Scenario

    demo = Scenario.demo().attacks
    assert demo.gradient_restarts >= 4 and demo.gradient_logged_restarts >= 4 and demo.gradient_tv_weight == 0.2
    assert demo.gradient_iterations >= 1000  # the plateau of bench/bench_gradient_budget.py
    tiny = Scenario.tiny()
    assert tiny.attacks.gradient_iterations * tiny.attacks.gradient_restarts <= 50  # tests stay fast
    cfg = attack_config(Scenario.demo(), ("gradient",))
    assert (cfg.gradient_iterations, cfg.gradient_restarts, cfg.gradient_tv_weight) == (
        demo.gradient_iterations,
        demo.gradient_restarts,
        0.2,
    )
    assert (cfg.gradient_logged_iterations, cfg.gradient_logged_restarts) == (
        demo.gradient_logged_iterations,
        demo.gradient_logged_restarts,
    )
    with pytest.raises(ValueError, match="gradient_tv_weight"):
        AttackSpec(gradient_tv_weight=-1.0)
    with pytest.raises(ValueError, match="gradient_restarts"):
        AttackSpec(gradient_restarts=0)
