"""Gradient-inversion probes on a tiny model: DLG, iDLG, Inverting Gradients (single/multi-step),
DP-SGD clients, sweeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.gradient import (
    ClientModel,
    DlgConfig,
    GradientProbeConfig,
    InvertingGradientsConfig,
    LocalSgd,
    dlg,
    inverting_gradients,
    recover_labels_idlg,
    run_gradient_probe,
    simulate_local_update,
    sweep_gradient_probe,
    total_variation,
    unrolled_update,
)


def _model(backbone_factory, n_classes=3, loss="cosface", extra=0, seed=0, d=16):
    g = torch.Generator().manual_seed(seed + 100)
    neg = torch.randn(extra, d, generator=g) if extra else None
    return ClientModel(backbone_factory(d, 16, seed=seed), 0.01 * torch.randn(n_classes, d, generator=g), loss,
                       extra_negatives=neg)


def _start(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_unrolled_update_equals_torch_sgd(faces_factory, backbone_factory):
    faces = faces_factory([0, 1, 2], per_identity=2, resolution=16)
    x, y = faces.as_float(), torch.tensor([0, 0, 1, 1, 2, 2])
    model = _model(backbone_factory)
    sgd = LocalSgd(steps=4, batch_size=2, lr=0.05, momentum=0.9, weight_decay=5e-4)
    reference = simulate_local_update(model, x, y, sgd)  # torch.optim.SGD
    start = {n: t.requires_grad_(True) for n, t in _start(model).items()}
    ours = unrolled_update(model, start, x, y, sgd, create_graph=False)
    for n in reference:  # float32 sums in another order: compare relative to each tensor's scale
        scale = float(reference[n].abs().max())
        torch.testing.assert_close(ours[n], reference[n], rtol=1e-3, atol=1e-4 * scale, msg=n)


@pytest.mark.parametrize("loss", ["softmax", "cosface", "arcface"])
def test_idlg_recovers_label_exactly(loss, faces_factory, backbone_factory):
    faces = faces_factory(range(5), per_identity=3, resolution=16, seed=4)
    for trial in range(4):
        model = _model(backbone_factory, n_classes=5, loss=loss, seed=trial)
        label = (trial * 2 + 1) % 5
        idx = torch.nonzero(faces.labels == label).flatten()
        one = idx[:1]
        delta = simulate_local_update(model, faces.as_float()[one], torch.tensor([label]), LocalSgd(1, 1, 0.1))
        assert recover_labels_idlg(delta["centers"]).tolist() == [label]
        # a one-identity batch of three images, two local steps
        delta = simulate_local_update(model, faces.as_float()[idx], torch.full((3,), label), LocalSgd(2, 3, 0.1))
        assert recover_labels_idlg(delta["centers"]).tolist() == [label]
    with pytest.raises(ValueError, match="C >= 2"):
        recover_labels_idlg(torch.randn(1, 8))


def test_inverting_gradients_reduces_loss_and_image_error(faces_factory, backbone_factory):
    faces = faces_factory([0, 1, 2], per_identity=1, resolution=16, seed=1)
    x, y = faces.as_float()[:1], torch.tensor([0])
    model = _model(backbone_factory, extra=4)
    sgd = LocalSgd(1, 1, 0.1)
    observed = simulate_local_update(model, x, y, sgd)
    backbone_only = {n: v for n, v in observed.items() if n != "centers"}
    cfg = InvertingGradientsConfig(iterations=120, restarts=2, lr=0.1, seed=0)
    out = inverting_gradients(model, _start(model), backbone_only, y, (1, 3, 16, 16), sgd, cfg)
    assert out.losses[-1] < 0.5 * out.losses[0]
    assert len(out.restart_losses) == 2 and min(out.restart_losses) == pytest.approx(
        out.restart_losses[int(np.argmin(out.restart_losses))])
    init = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert (out.images - x).pow(2).mean() < (init - x).pow(2).mean()
    assert out.images.min() >= -1 and out.images.max() <= 1  # boxed
    # same seed, same reconstruction
    again = inverting_gradients(model, _start(model), backbone_only, y, (1, 3, 16, 16), sgd, cfg)
    torch.testing.assert_close(again.images, out.images)


def test_multistep_fedavg_variant_reduces_loss(faces_factory, backbone_factory):
    faces = faces_factory([0], per_identity=2, resolution=16, seed=2)
    x, y = faces.as_float(), torch.zeros(2, dtype=torch.int64)
    model = _model(backbone_factory, n_classes=1, loss="positive")
    sgd = LocalSgd(steps=3, batch_size=1, lr=0.1, momentum=0.5)
    observed = simulate_local_update(model, x, y, sgd)
    out = inverting_gradients(model, _start(model), observed, y, (2, 3, 16, 16), sgd,
                              InvertingGradientsConfig(iterations=60, seed=1))
    assert out.losses[-1] < out.losses[0]


def test_dlg_gradient_matching_decreases(faces_factory, backbone_factory):
    faces = faces_factory([0, 1], per_identity=1, resolution=16, seed=3)
    x, y = faces.as_float()[:1], torch.tensor([1])
    model = _model(backbone_factory, n_classes=2, loss="softmax")
    sgd = LocalSgd(1, 1, 0.1)
    observed = simulate_local_update(model, x, y, sgd)
    out = dlg(model, _start(model), observed, (1, 3, 16, 16), 2, sgd, DlgConfig(iterations=6, inner_iterations=5))
    assert out.losses[-1] < out.losses[0]
    assert out.labels.shape == (1,)
    known = dlg(model, _start(model), observed, (1, 3, 16, 16), 2, sgd, DlgConfig(iterations=3, inner_iterations=5),
                labels=y)
    assert known.labels.tolist() == [1] and known.losses[-1] < known.losses[0]


def test_total_variation_hand_worked():
    x = torch.zeros(1, 1, 2, 3)
    x[..., :, 2] = 1.0  # one vertical edge: |Δ| = 1 on 2 of 4 horizontal pairs, 0 vertically
    assert float(total_variation(x)) == pytest.approx(0.5)


def test_dp_sgd_client_update_is_clipped_and_noisy(faces_factory, backbone_factory):
    faces = faces_factory([0, 1], per_identity=1, resolution=16, seed=5)
    x, y = faces.as_float()[:1], torch.tensor([0])
    model = _model(backbone_factory, n_classes=2)
    sgd = LocalSgd(1, 1, 0.1)
    plain = simulate_local_update(model, x, y, sgd)
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    clip = 1e-3
    small = simulate_local_update(model, x, y, sgd, dp_noise_multiplier=1e-6, dp_max_grad_norm=clip, generator=gen())
    norm = torch.sqrt(sum(v.pow(2).sum() for v in small.values()))
    assert float(norm) <= sgd.lr * clip * 1.001  # the per-sample gradient was clipped to the bound
    flat = lambda d: torch.cat([v.flatten() for v in d.values()])  # noqa: E731
    cos = torch.nn.functional.cosine_similarity(flat(small), flat(plain), dim=0)
    assert float(cos) > 0.999  # clipping rescales, it does not turn the update
    noisy = simulate_local_update(model, x, y, sgd, dp_noise_multiplier=5.0, dp_max_grad_norm=clip, generator=gen())
    again = simulate_local_update(model, x, y, sgd, dp_noise_multiplier=5.0, dp_max_grad_norm=clip, generator=gen())
    for n in noisy:
        torch.testing.assert_close(noisy[n], again[n])  # seeded noise
    assert float(torch.nn.functional.cosine_similarity(flat(noisy), flat(plain), dim=0)) < 0.5
    with pytest.raises(ValueError, match="dp_noise_multiplier"):
        simulate_local_update(model, x, y, sgd, dp_noise_multiplier=0.0, generator=gen())


def test_probe_scores_and_config_errors(faces_factory, backbone_factory):
    from attacks.evaluator import Evaluator, build_reference

    faces = faces_factory([7, 8], per_identity=2, resolution=16, seed=6)
    one = faces.of_identities([7])
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator")
    ref = build_reference(ev, faces, faces_factory(range(7, 30), per_identity=2, resolution=16, seed=6))
    cfg = GradientProbeConfig(embedding_dim=16, num_images=2, batch_size=2, head="cosface", extra_negatives=4,
                              iterations=30, seed=0)
    res = run_gradient_probe(cfg, one, reference=ref)
    assert res.label_accuracy == 1.0 and res.true_identities == [7, 7]
    assert res.psnr.shape == (2,) and res.ssim.shape == (2,) and res.identity_similarity.shape == (2,)
    assert isinstance(res.identity_recovered, bool) and "labels recovered by idlg" in res.threat_model
    assert res.evaluator == "test evaluator"
    assert res.reconstructions.shape == res.originals.shape == (2, 3, 16, 16)
    s = res.summary()
    # rank-1 by hand: the nearest evaluator-gallery image of each reconstruction is identity 7's
    emb = torch.nn.functional.normalize(ref.embed(torch.as_tensor(res.reconstructions)), dim=1)
    nearest = (emb @ torch.nn.functional.normalize(ref.gallery.embeddings, dim=1).T).argmax(dim=1)
    assert s["batch_size"] == 2 and s["rank1"] == pytest.approx(float((ref.gallery.identity_ids[nearest] == 7).float().mean()))
    with pytest.raises(ValueError, match="head_observed"):
        GradientProbeConfig(label_source="idlg", head_observed=False)
    with pytest.raises(ValueError, match="trained_backbone"):
        run_gradient_probe(GradientProbeConfig(model_state="trained"), one)
    with pytest.raises(ValueError, match="single class"):
        run_gradient_probe(GradientProbeConfig(head="cosface", iterations=1), one)
    with pytest.raises(ValueError, match="dp_noise_multiplier"):
        GradientProbeConfig(dp_noise_multiplier=-1.0)


def test_sweep_runs_each_combination(faces_factory):
    faces = faces_factory([3], per_identity=2, resolution=16, seed=7)
    base = GradientProbeConfig(embedding_dim=16, head="positive", label_source="known", iterations=5)
    out = sweep_gradient_probe(base, {"num_images": [1, 2], "dp_noise_multiplier": [None, 1.0]}, faces)
    assert [(r.config["num_images"], r.config["dp_noise_multiplier"]) for r in out] == [
        (1, None), (1, 1.0), (2, None), (2, 1.0)]
    with pytest.raises(ValueError, match="unknown probe settings"):
        sweep_gradient_probe(base, {"nope": [1]}, faces)


# ------------------------------------------------- BatchNorm prior, LLG labels, granted-labels row


class BnBackbone(torch.nn.Module):
    """BatchNorm on the input, a convolution, BatchNorm, tanh, a linear map, BatchNorm1d."""

    def __init__(self, d: int = 8, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.bn_in = torch.nn.BatchNorm2d(3)
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.bn_mid = torch.nn.BatchNorm2d(4)
            self.fc = torch.nn.Linear(4 * 8 * 8, d)
            self.bn_out = torch.nn.BatchNorm1d(d)
        with torch.no_grad():  # running statistics of a "broadcast" model, not the defaults
            self.bn_in.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
            self.bn_in.running_var.copy_(torch.tensor([0.5, 1.5, 2.0]))

    def forward(self, x):
        h = torch.tanh(self.bn_mid(self.conv(self.bn_in(x))))
        return self.bn_out(self.fc(h.flatten(1)))


def _bn_inputs_by_hand(bb: BnBackbone, x):
    """Each BatchNorm layer's input for batch ``x`` with every layer normalising by its running
    statistics (eval mode), written out layer by layer."""
    bb.eval()
    a = x
    b = bb.conv(bb.bn_in(a))
    c = bb.fc(torch.tanh(bb.bn_mid(b)).flatten(1))
    return [(bb.bn_in, a), (bb.bn_mid, b), (bb.bn_out, c)]


def _r_bn_by_hand(bb: BnBackbone, x) -> torch.Tensor:
    """Σ over the layers of ‖batch mean − running mean‖ + ‖batch variance − running variance‖."""
    total = torch.zeros(())
    for layer, h in _bn_inputs_by_hand(bb, x):
        dims = [0] + list(range(2, h.dim()))
        mean = h.mean(dims)
        var = ((h - h.mean(dims, keepdim=True)) ** 2).mean(dims)
        total = total + (mean - layer.running_mean).norm() + (var - layer.running_var).norm()
    return total


def _batch_with_running_stats(bb: BnBackbone, n: int = 5, seed: int = 0):
    """A batch whose input-layer statistics are exactly the running ones; the deeper layers'
    running statistics are then set, layer after layer, to what this batch produces there, so
    R_BN of it is 0."""
    z = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    z = (z - z.mean((0, 2, 3), keepdim=True)) / z.var((0, 2, 3), unbiased=False, keepdim=True).sqrt()
    x = bb.bn_in.running_mean.view(1, 3, 1, 1) + bb.bn_in.running_var.sqrt().view(1, 3, 1, 1) * z
    with torch.no_grad():
        for k in (1, 2):  # a layer's input depends on the statistics of the layers before it
            layer, h = _bn_inputs_by_hand(bb, x)[k]
            dims = [0] + list(range(2, h.dim()))
            layer.running_mean.copy_(h.mean(dims))
            layer.running_var.copy_(h.var(dims, unbiased=False))
    return x


def test_batchnorm_prior_is_zero_at_the_running_statistics_and_matches_a_hand_computation():
    from attacks.gradient import batchnorm_prior

    bb = BnBackbone()
    x = _batch_with_running_stats(bb)
    model = ClientModel(bb, 0.01 * torch.randn(3, 8), "cosface").train()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    assert float(batchnorm_prior(model, x).detach()) == pytest.approx(0.0, abs=1e-4)
    other = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    value = float(batchnorm_prior(model, other, torch.tensor([0, 1, 2, 0, 1])).detach())
    assert all(m.training for m in model.modules())  # training flags restored
    for n, b in model.named_buffers():  # eval mode: the running statistics did not move
        assert torch.equal(b, buffers[n]), n
    assert value > 0.05 and value == pytest.approx(float(_r_bn_by_hand(bb, other).detach()), rel=1e-4)


def test_batchnorm_prior_gradient_moves_the_batch_statistics_toward_the_running_ones():
    from attacks.gradient import batchnorm_prior

    bb = BnBackbone(seed=2)
    _batch_with_running_stats(bb, seed=2)
    model = ClientModel(bb, 0.01 * torch.randn(3, 8), "softmax")
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    (grad,) = torch.autograd.grad(batchnorm_prior(model, x), [x])
    stepped = (x - 1e-2 * grad / grad.norm()).detach()
    with torch.no_grad():
        assert float(_r_bn_by_hand(bb, stepped)) < float(_r_bn_by_hand(bb, x.detach()))

    only_input = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    with torch.no_grad():
        only_input[0].running_mean.copy_(torch.tensor([0.5, 0.0, -0.5]))
        only_input[0].running_var.copy_(torch.tensor([0.2, 1.0, 3.0]))
    single = ClientModel(only_input, 0.01 * torch.randn(3, 4), "cosface")

    def input_distance(v):  # ‖μ(x) − μ‖ + ‖σ²(x) − σ²‖ of the images themselves
        a = v.detach().numpy().transpose(1, 0, 2, 3).reshape(3, -1)
        return float(np.linalg.norm(a.mean(1) - [0.5, 0.0, -0.5]) + np.linalg.norm(a.var(1) - [0.2, 1.0, 3.0]))

    xs = x.detach().clone().requires_grad_(True)
    assert float(batchnorm_prior(single, xs).detach()) == pytest.approx(input_distance(xs), rel=1e-5)
    (grad,) = torch.autograd.grad(batchnorm_prior(single, xs), [xs])
    assert input_distance(xs - 1e-2 * grad / grad.norm()) < input_distance(xs)


def test_batchnorm_prior_enters_the_inverting_gradients_loss(faces_factory):
    from attacks.gradient import batchnorm_prior

    bb = BnBackbone(seed=4)
    faces = faces_factory([0, 1], per_identity=1, resolution=16, seed=4)
    x, y = faces.as_float(), torch.tensor([0, 1])
    _batch_with_running_stats(bb, n=4, seed=4)
    model = ClientModel(bb, 0.01 * torch.randn(2, 8, generator=torch.Generator().manual_seed(4)), "cosface")
    sgd = LocalSgd(1, 2, 0.1)
    observed = simulate_local_update(model, x, y, sgd)
    cfg = InvertingGradientsConfig(iterations=12, restarts=2, seed=0, bn_prior_weight=0.05)
    out = inverting_gradients(model, _start(model), observed, y, (2, 3, 16, 16), sgd, cfg)
    # the kept restart's loss, recomputed: 1 − cos(torch-SGD update, observed) + TV + w·R_BN by hand
    sim = simulate_local_update(model, out.images, y, sgd)
    a = torch.cat([sim[n].flatten() for n in observed])
    b = torch.cat([observed[n].flatten() for n in observed])
    by_hand = 1 - float(a @ b / (a.norm() * b.norm())) + 0.2 * float(total_variation(out.images))
    with torch.no_grad():
        by_hand += 0.05 * float(_r_bn_by_hand(bb, out.images))
        assert by_hand == pytest.approx(min(out.restart_losses), abs=1e-4)
        hooked = float(batchnorm_prior(model, out.images))
        assert hooked == pytest.approx(float(_r_bn_by_hand(bb, out.images)), rel=1e-4)


def test_batchnorm_prior_needs_batchnorm(faces_factory, backbone_factory):
    from attacks.gradient import batchnorm_prior

    model = _model(backbone_factory)  # tiny: GroupNorm only
    with pytest.raises(ValueError, match="needs BatchNorm layers, and this ClientModel has none"):
        batchnorm_prior(model, torch.zeros(2, 3, 16, 16))
    sgd = LocalSgd(1, 1, 0.1)
    faces = faces_factory([0, 1, 2], per_identity=1, resolution=16)
    observed = simulate_local_update(model, faces.as_float()[:1], torch.tensor([0]), sgd)
    with pytest.raises(ValueError, match="bn_prior_weight > 0 needs BatchNorm"):
        inverting_gradients(model, _start(model), observed, torch.tensor([0]), (1, 3, 16, 16), sgd,
                            InvertingGradientsConfig(iterations=1, bn_prior_weight=0.5))
    with pytest.raises(ValueError, match="bn_prior_weight > 0 needs BatchNorm"):
        run_gradient_probe(GradientProbeConfig(embedding_dim=16, num_images=3, batch_size=3, bn_prior_weight=0.1,
                                               iterations=1), faces)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=f"bn_prior_weight must be a finite number >= 0, got {bad!r}"):
            GradientProbeConfig(bn_prior_weight=bad)
        with pytest.raises(ValueError, match="bn_prior_weight must be"):
            DlgConfig(bn_prior_weight=bad)


def _same_result(a, b):
    assert np.array_equal(a.reconstructions, b.reconstructions) and a.loss_history == b.loss_history
    assert np.array_equal(a.psnr, b.psnr) and np.array_equal(a.ssim, b.ssim)
    assert a.summary() == b.summary() and a.threat_model == b.threat_model and a.label_accuracy == b.label_accuracy


def test_new_options_default_to_todays_probe(faces_factory):
    faces = faces_factory([7, 8], per_identity=2, resolution=16, seed=6)
    kw = dict(embedding_dim=16, num_images=4, batch_size=2, local_steps=2, head="cosface", iterations=6, restarts=2)
    plain = run_gradient_probe(GradientProbeConfig(**kw), faces)
    explicit = run_gradient_probe(GradientProbeConfig(**kw, granted_labels_row=False, bn_prior_weight=0.0), faces)
    _same_result(plain, explicit)
    assert plain.granted is None and plain.row == "attack"
    assert "labels_granted" not in plain.summary() and "row" not in plain.summary()
    dlg_kw = dict(embedding_dim=16, num_images=2, batch_size=2, head="softmax", attack="dlg", iterations=2)
    _same_result(run_gradient_probe(GradientProbeConfig(**dlg_kw), faces),
                 run_gradient_probe(GradientProbeConfig(**dlg_kw, bn_prior_weight=0.0), faces))


def test_granted_labels_row_is_attached_and_labelled(faces_factory):
    from attacks.gradient import GRANTED_LABELS_ROW

    faces = faces_factory([4, 5, 6], per_identity=1, resolution=16, seed=8)
    base = dict(embedding_dim=16, num_images=3, batch_size=3, head="cosface", iterations=5, restarts=1)
    res = run_gradient_probe(GradientProbeConfig(**base, label_source="llg", granted_labels_row=True), faces)
    assert res.row == "attack" and "labels recovered by llg" in res.threat_model
    g = res.granted
    assert g is not None and g.row == GRANTED_LABELS_ROW == "labels granted: upper bound on this attacker"
    assert GRANTED_LABELS_ROW in g.threat_model and "recovered" not in g.threat_model
    assert g.label_accuracy == 1.0 and g.config["label_source"] == "known" and g.granted is None
    assert g.true_identities == res.true_identities == [4, 5, 6]
    s = res.summary()
    assert s["labels_granted"]["row"] == GRANTED_LABELS_ROW and s["labels_granted"]["label_accuracy"] == 1.0
    # the granted row is the probe with known labels, run on its own
    alone = run_gradient_probe(GradientProbeConfig(**base, label_source="known"), faces)
    assert np.array_equal(alone.reconstructions, g.reconstructions) and alone.loss_history == g.loss_history
    # known labels are already the bound: no second row; a backbone-only update says why
    known = run_gradient_probe(GradientProbeConfig(**base, label_source="known", head_observed=False,
                                                   granted_labels_row=True), faces)
    assert known.granted is None
    assert f"{GRANTED_LABELS_ROW} (a backbone-only update carries no head gradient" in known.threat_model
    with pytest.raises(ValueError, match="label_source='llg' needs the head's update"):
        GradientProbeConfig(label_source="llg", head_observed=False)
    with pytest.raises(ValueError, match="granted_labels_row must be True or False, got 1"):
        GradientProbeConfig(granted_labels_row=1)


def test_llg_labels_in_a_probe_of_a_one_identity_batch(faces_factory):
    faces = faces_factory([2, 3, 4], per_identity=3, resolution=16, seed=9).of_identities([3])
    cfg = GradientProbeConfig(embedding_dim=16, num_images=3, batch_size=3, head="softmax", extra_negatives=3,
                              label_source="llg", iterations=3, restarts=1)
    res = run_gradient_probe(cfg, faces)
    assert res.label_accuracy == 1.0 and "labels recovered by llg" in res.threat_model
