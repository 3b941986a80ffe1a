"""Embedding-inversion decoder (PrivacyFace Table 5), its training and checkpoints, and scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.evaluator import Evaluator, build_reference
from attacks.inversion import (
    DecoderConfig,
    EmbeddingDecoder,
    decoder_layout,
    invert,
    invert_and_score,
    load_decoder,
    save_image_grid,
    train_decoder,
)


@pytest.mark.parametrize(
    "res,layout", [(16, (4, 2)), (32, (4, 3)), (64, (4, 4)), (112, (7, 4)), (128, (4, 5)), (24, (6, 2))]
)
def test_decoder_layout_and_output_shape(res, layout):
    assert decoder_layout(res) == layout
    dec = EmbeddingDecoder(embedding_dim=8, resolution=res, base_channels=16).eval()
    with torch.no_grad():
        out = dec(F.normalize(torch.randn(2, 8), dim=1))
    assert out.shape == (2, 3, res, res)
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # sigmoid image


def test_paper_layout_matches_table5():
    dec = EmbeddingDecoder(512, 128, 512)
    assert dec.fc[0].out_features == 8192  # fc + BN: 512 -> 8192 = 512·4·4
    convs = [m for m in dec.up if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(512, 256), (256, 128), (128, 64), (64, 32), (32, 3)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)


def test_decoder_config_validation():
    with pytest.raises(ValueError, match="resolution"):
        DecoderConfig(resolution=100)
    with pytest.raises(ValueError, match="lr must be"):
        DecoderConfig(resolution=16, lr=0)
    with pytest.raises(ValueError, match="lr_gamma"):
        DecoderConfig(resolution=16, lr_gamma=2.0)


def _setup(faces_factory, backbone_factory):
    public = faces_factory(range(1000, 1012), per_identity=6, resolution=16, seed=1)
    encoder = backbone_factory(16, 16, seed=0)
    cfg = DecoderConfig(
        embedding_dim=16, resolution=16, base_channels=32, epochs=4, batch_size=24, lr=3e-3, lr_step_epochs=3, seed=0
    )
    return public, encoder, cfg


def test_training_reduces_l1_and_resume_is_exact(tmp_path, faces_factory, backbone_factory):
    public, encoder, cfg = _setup(faces_factory, backbone_factory)
    full = train_decoder(encoder, public, cfg, checkpoint=tmp_path / "full.safetensors", progress=False)
    assert full.losses[-1] < full.losses[0]
    # Two epochs, then a longer schedule continues from that checkpoint: identical weights and losses.
    ck = tmp_path / "resume.safetensors"
    train_decoder(encoder, public, DecoderConfig(**{**cfg.to_dict(), "epochs": 2}), checkpoint=ck, progress=False)
    assert load_decoder(ck)[2] == 2
    resumed = train_decoder(encoder, public, cfg, checkpoint=ck, progress=False)
    assert resumed.resumed_from_epoch == 2
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-5)
    for (k, a), b in zip(full.decoder.state_dict().items(), resumed.decoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    # A complete checkpoint returns without training; another config is refused.
    again = train_decoder(encoder, public, cfg, checkpoint=tmp_path / "full.safetensors", progress=False)
    assert again.resumed_from_epoch == cfg.epochs and again.losses == full.losses
    with pytest.raises(ValueError, match="different config"):  # a shorter schedule cannot continue it
        train_decoder(
            encoder,
            public,
            DecoderConfig(**{**cfg.to_dict(), "epochs": 1}),
            checkpoint=tmp_path / "full.safetensors",
            progress=False,
        )
    with pytest.raises(ValueError, match="different config"):
        train_decoder(
            encoder,
            public,
            DecoderConfig(**{**cfg.to_dict(), "lr": 1e-2}),
            checkpoint=tmp_path / "full.safetensors",
            progress=False,
        )


def test_invert_validates_and_normalises(faces_factory, backbone_factory):
    dec = EmbeddingDecoder(16, 16, 16).eval()
    v = torch.randn(3, 16)
    torch.testing.assert_close(invert(dec, v), invert(dec, 5 * v))  # scale-free: unit vectors
    with pytest.raises(ValueError, match=r"\[N, 16\]"):
        invert(dec, torch.randn(3, 8))
    with pytest.raises(ValueError, match="NaN"):
        invert(dec, torch.full((1, 16), float("nan")))


def test_reference_scores_against_independent_computation(faces_factory, backbone_factory):
    from federated_core.models import embed

    attacked = faces_factory(range(10), per_identity=4, resolution=16, seed=2)
    distract = faces_factory(range(500, 520), per_identity=2, resolution=16, seed=2)
    gallery_faces = type(attacked).concat([attacked, distract])
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator")
    ref = build_reference(ev, attacked, gallery_faces)
    # "Reconstructions" = each identity's real mean face: SSIM 1 against itself.
    ids = [frozenset({i}) for i in range(10)]
    faces = torch.stack([ref.mean_face(s) for s in ids])
    sc = ref.score(faces, ids)
    np.testing.assert_allclose(sc.ssim, 1.0, atol=1e-9)
    assert np.isinf(sc.psnr).all()
    # identity similarity recomputed from scratch
    e_rec = embed(ev.model, faces * 2 - 1)
    e_ref = embed(ev.model, attacked)
    for i in range(10):
        t = F.normalize(e_ref[attacked.labels == i].mean(0), dim=0)
        assert sc.identity_similarity[i] == pytest.approx(float(e_rec[i] @ t), abs=1e-5)
    # rank-1 recomputed from a dense similarity matrix
    e_gal = embed(ev.model, gallery_faces)
    nearest = gallery_faces.labels[(e_rec @ e_gal.T).argmax(1)]
    assert sc.rank1.tolist() == (nearest == torch.arange(10)).tolist()
    # a cluster covering identities {0, 1}: mean face pools their images
    pooled = attacked.images[attacked.labels <= 1].float().mean(0) / 255
    torch.testing.assert_close(ref.mean_face(frozenset({0, 1})), pooled)
    # impostor baseline: other identities, as many as the vector stands for
    assert ref.impostors(frozenset({0, 1})) == frozenset({5, 6})
    assert not ref.impostors(frozenset(range(6)))  # more than half of the identities: none left
    scattered = frozenset({0, 1, 2, 7})  # every shift of these positions (mod 10) hits one of them
    assert all({(p + k) % 10 for p in scattered} & scattered for k in range(1, 10))
    assert ref.impostors(scattered) == frozenset({6, 8, 9, 3})  # others [3,4,5,6,8,9] from the middle, wrapping
    assert (sc.impostor_ssim < 1).all() and np.isfinite(sc.impostor_identity_similarity).all()
    for i in range(10):
        (j,) = ref.impostors(frozenset({i}))
        t = F.normalize(e_ref[attacked.labels == j].mean(0), dim=0)
        assert j != i and sc.impostor_identity_similarity[i] == pytest.approx(float(e_rec[i] @ t), abs=1e-5)
    with pytest.raises(ValueError, match="no reference images"):
        ref.score(faces[:1], [frozenset({99})])


def test_invert_and_score_end_to_end(tmp_path, faces_factory, backbone_factory):
    """Train the decoder on public identities, invert the attacked identities' class centers and
    check the reconstructions beat a random-vector baseline on pixel similarity to the true
    mean faces (the inversion carries identity information)."""
    public = faces_factory(range(1000, 1040), per_identity=5, resolution=16, seed=3)
    attacked = faces_factory(range(8), per_identity=5, resolution=16, seed=3)
    encoder = backbone_factory(16, 16, seed=0)
    cfg = DecoderConfig(
        embedding_dim=16, resolution=16, base_channels=32, epochs=15, batch_size=50, lr=3e-3, lr_step_epochs=10, seed=0
    )
    dec = train_decoder(encoder, public, cfg, progress=False).decoder
    from federated_core.models import embed

    e = embed(encoder, attacked)
    centers = torch.stack([F.normalize(e[attacked.labels == i].mean(0), dim=0) for i in range(8)])
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator")
    ref = build_reference(ev, attacked)
    ids = [frozenset({i}) for i in range(8)]
    res = invert_and_score(
        dec, centers, ids, ref, observer="server", kind="class_centers", grid_path=tmp_path / "grid.png"
    )
    assert (tmp_path / "grid.png").is_file()
    assert res.reconstructions.shape == (8, 3, 16, 16) and res.num_observations == 8
    g = torch.Generator().manual_seed(0)
    rand = invert_and_score(dec, torch.randn(8, 16, generator=g), ids, ref)
    assert res.means["psnr"] > rand.means["psnr"]
    with pytest.raises(ValueError, match="observer 'client:1', kind 'noisy_cluster_centers'"):
        invert_and_score(dec, torch.randn(2, 8), ids[:2], ref, observer="client:1", kind="noisy_cluster_centers")


def test_save_image_grid(tmp_path):
    from PIL import Image

    from attacks import tiles

    real, rec = torch.zeros(5, 3, 8, 8), torch.ones(5, 3, 8, 8) * 0.5
    p = save_image_grid(real, rec, tmp_path / "g.png", pairs_per_row=2, tile=16)
    img = np.asarray(Image.open(p).convert("L"))
    cell_w = 16 + 2 * tiles._BORDER + tiles._GAP
    cell_h = 16 + 2 * tiles._BORDER + tiles._CAPTION_HEIGHT + tiles._GAP
    # 2 columns x (3 real rows + 3 reconstruction rows), tiles upscaled to 16 px
    assert img.shape == (tiles._GAP + 6 * cell_h, tiles._LABEL_WIDTH + 2 * cell_w + tiles._GAP)

    def centre(row: int, col: int) -> int:
        y = tiles._GAP + row * cell_h + tiles._BORDER + 8
        x = tiles._LABEL_WIDTH + col * cell_w + tiles._BORDER + 8
        return int(img[y, x])

    assert centre(0, 0) == 0 and centre(1, 0) in (127, 128)  # real row above its reconstruction row
    assert centre(4, 1) == 255  # the short last pair of rows has no second tile: blank canvas


# --- objective "gan" (L1 + feature loss through the recogniser + DCGAN discriminator), curve, convergence stop ---


class _LinearRecogniser(torch.nn.Module):
    """A fixed random linear map of the pixels (input in [-1, 1]); `embed` normalises its output."""

    def __init__(self, d: int, resolution: int, seed: int) -> None:
        super().__init__()
        w = torch.randn(d, 3 * resolution * resolution, generator=torch.Generator().manual_seed(seed))
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def _pattern_set(k=4, per=6, res=16, seed=0):
    """``k`` distinct smooth colour patterns (the known answers) and ``per`` noisy copies of each."""
    from federated_core.data.faceset import FaceSet

    g = torch.Generator().manual_seed(seed)
    patterns = F.interpolate(torch.rand(k, 3, 4, 4, generator=g), size=(res, res), mode="bilinear", align_corners=False)
    imgs = (patterns.repeat_interleave(per, 0) + 0.03 * torch.randn(k * per, 3, res, res, generator=g)).clamp(0, 1)
    labels = torch.arange(k).repeat_interleave(per)
    return patterns, FaceSet((imgs * 255).round().to(torch.uint8), labels, torch.zeros_like(labels))


def _toy_cfg(**kw):
    base = dict(
        embedding_dim=8,
        resolution=16,
        base_channels=16,
        epochs=60,
        batch_size=8,
        lr=3e-3,
        lr_step_epochs=1000,
        seed=0,
        disc_channels=8,
    )
    return DecoderConfig(**{**base, **kw})


@pytest.mark.parametrize("objective", ["l1", "gan"])
def test_decoder_recovers_each_pattern_on_a_separable_toy_set(objective):
    """Known answer: decoding the recogniser's embedding of each pattern gives an image nearer (in
    pixels) to that pattern than to any other, for every pattern, under both objectives."""
    from attacks.inversion import feature_cosine

    patterns, faces = _pattern_set()
    rec = _LinearRecogniser(8, 16, seed=5)
    res = train_decoder(rec, faces, _toy_cfg(objective=objective), progress=False)
    v = F.normalize(rec(patterns * 2 - 1), dim=1).detach()
    out = invert(res.decoder, v)
    dist = torch.cdist(out.flatten(1), patterns.flatten(1))
    assert dist.argmin(1).tolist() == [0, 1, 2, 3]
    margin = (dist + 1e9 * torch.eye(4)).min(1).values - dist.diag()
    assert float(margin.min()) > 3.0  # measured 5.8 (l1) and 5.7 (gan): far from a coin toss
    assert len(res.curve) == 60 and res.curve[-1]["epoch"] == 60
    assert res.curve[-1]["l1"] < 0.5 * res.curve[0]["l1"]
    cos = feature_cosine(rec, out, v).detach()
    if objective == "gan":
        first, last = res.curve[0], res.curve[-1]
        assert last["feature_loss"] < 0.1 * first["feature_loss"]  # the identity term converges
        assert all(row[k] is not None and np.isfinite(row[k]) for row in res.curve for k in ("d_loss", "g_adv_loss"))
        assert float(cos.min()) > 0.99  # measured >= 0.996
    else:
        assert res.curve[0]["feature_loss"] is None and res.curve[0]["d_loss"] is None  # L1 only, as before
        assert float(cos.min()) > 0.9  # measured >= 0.97


def test_feature_loss_is_one_minus_cosine_through_the_recogniser():
    """The feature term against an independent computation: mean of 1 − cos(F(2G(v) − 1), v)."""
    from attacks.inversion import feature_cosine

    rec = _LinearRecogniser(8, 16, seed=5)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    v = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    y = (x * 2 - 1).flatten(1) @ rec.w.detach().T
    expect = (y * v).sum(1) / y.norm(dim=1)
    torch.testing.assert_close(feature_cosine(rec, x, v), expect, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"d=8"):
        feature_cosine(rec, x, torch.randn(3, 5))


def test_gan_resume_is_exact_and_the_checkpoint_records_objective_and_curve(tmp_path):
    from attacks.inversion import decoder_record

    _, faces = _pattern_set()
    rec = _LinearRecogniser(8, 16, seed=5)
    cfg = _toy_cfg(objective="gan", epochs=4, adversarial_loss="hinge")
    full = train_decoder(rec, faces, cfg, checkpoint=tmp_path / "full.safetensors", progress=False)
    ck = tmp_path / "part.safetensors"
    train_decoder(
        rec, faces, _toy_cfg(objective="gan", epochs=2, adversarial_loss="hinge"), checkpoint=ck, progress=False
    )
    resumed = train_decoder(rec, faces, cfg, checkpoint=ck, progress=False)  # discriminator and its Adam restored
    assert resumed.resumed_from_epoch == 2
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-5)
    for a, b in zip(full.decoder.state_dict().values(), resumed.decoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    record = decoder_record(tmp_path / "full.safetensors")
    assert record["config"]["objective"] == "gan" and record["config"]["adversarial_loss"] == "hinge"
    assert record["epochs_done"] == 4 and [r["epoch"] for r in record["curve"]] == [1, 2, 3, 4]
    assert record["curve"][-1]["d_loss"] == pytest.approx(full.curve[-1]["d_loss"])
    assert record["stopped_early"] is False and record["best_epoch"] is None
    for a, b in zip(full.curve, resumed.curve, strict=True):
        assert a.keys() == b.keys() and all((a[k] is None) == (b[k] is None) for k in a)
        assert all(a[k] == pytest.approx(b[k], rel=1e-5) for k in a if a[k] is not None)


def test_convergence_stop_on_heldout_feature_cosine_returns_the_best_epoch(tmp_path):
    """Patience 2 with a min_delta no epoch can beat: epoch 1 is the best, epochs 2 and 3 do not
    improve, training stops after 3 of the 50-epoch budget and returns epoch 1's weights."""
    from attacks.inversion import decoder_record, feature_cosine

    _, faces = _pattern_set()
    rec = _LinearRecogniser(8, 16, seed=5)
    cfg = _toy_cfg(objective="gan", epochs=50, holdout_fraction=0.25, patience=2, min_delta=1.0)
    res = train_decoder(rec, faces, cfg, checkpoint=tmp_path / "d.safetensors", progress=False)
    assert res.stopped_early and len(res.curve) == 3 and res.best_epoch == 1
    assert len(res.heldout_identity_ids) == 1  # round(0.25 · 4 identities)
    assert all(r["heldout_feature_cosine"] is not None and r["heldout_l1"] is not None for r in res.curve)
    # the returned decoder is epoch 1's: its held-out feature cosine, recomputed, is the curve's first value
    from federated_core.models import embed

    rows = torch.isin(faces.labels, torch.tensor(res.heldout_identity_ids))
    z = embed(rec, faces)[rows]
    with torch.no_grad():
        cos = feature_cosine(rec, invert(res.decoder, z), z)
    assert float(cos.mean()) == pytest.approx(res.curve[0]["heldout_feature_cosine"], abs=1e-5)
    assert float(cos.mean()) != pytest.approx(res.curve[2]["heldout_feature_cosine"], abs=1e-5)
    # resuming a stopped run returns at once with the same (best) weights; load_decoder gives them too
    again = train_decoder(rec, faces, cfg, checkpoint=tmp_path / "d.safetensors", progress=False)
    assert again.resumed_from_epoch == 3 and len(again.curve) == 3
    loaded = load_decoder(tmp_path / "d.safetensors")[0]
    for a, b in zip(res.decoder.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert decoder_record(tmp_path / "d.safetensors")["stopped_early"] is True


def test_new_decoder_options_are_validated():
    with pytest.raises(ValueError, match="objective must be one of"):
        DecoderConfig(resolution=16, objective="perceptual")
    with pytest.raises(ValueError, match="patience=3 needs held-out identities"):
        DecoderConfig(resolution=16, patience=3)
    with pytest.raises(ValueError, match="feature_weight must be a finite number >= 0"):
        DecoderConfig(resolution=16, objective="gan", feature_weight=-1.0)
    with pytest.raises(ValueError, match="adversarial_loss"):
        DecoderConfig(resolution=16, adversarial_loss="wgan")
    with pytest.raises(ValueError, match="holdout_fraction"):
        DecoderConfig(resolution=16, holdout_fraction=1.0)
    _, faces = _pattern_set()
    with pytest.raises(ValueError, match="needs the recogniser"):
        train_decoder(None, faces, _toy_cfg(objective="gan"), embeddings=torch.randn(24, 8), progress=False)
