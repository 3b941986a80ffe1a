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
