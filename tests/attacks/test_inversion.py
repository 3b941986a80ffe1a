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
from attacks.metrics import psnr, ssim


@pytest.mark.parametrize("res,layout", [(16, (4, 2)), (32, (4, 3)), (64, (4, 4)), (112, (7, 4)), (128, (4, 5)), (24, (6, 2))])
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
    cfg = DecoderConfig(embedding_dim=16, resolution=16, base_channels=32, epochs=4, batch_size=24,
                        lr=3e-3, lr_step_epochs=3, seed=0)
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
        train_decoder(encoder, public, DecoderConfig(**{**cfg.to_dict(), "epochs": 1}),
                      checkpoint=tmp_path / "full.safetensors", progress=False)
    with pytest.raises(ValueError, match="different config"):
        train_decoder(encoder, public, DecoderConfig(**{**cfg.to_dict(), "lr": 1e-2}),
                      checkpoint=tmp_path / "full.safetensors", progress=False)


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
    cfg = DecoderConfig(embedding_dim=16, resolution=16, base_channels=32, epochs=15, batch_size=50, lr=3e-3,
                        lr_step_epochs=10, seed=0)
    dec = train_decoder(encoder, public, cfg, progress=False).decoder
    from federated_core.models import embed

    e = embed(encoder, attacked)
    centers = torch.stack([F.normalize(e[attacked.labels == i].mean(0), dim=0) for i in range(8)])
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator")
    ref = build_reference(ev, attacked)
    ids = [frozenset({i}) for i in range(8)]
    res = invert_and_score(dec, centers, ids, ref, observer="server", kind="class_centers",
                           grid_path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").is_file()
    assert res.reconstructions.shape == (8, 3, 16, 16) and res.num_observations == 8
    g = torch.Generator().manual_seed(0)
    rand = invert_and_score(dec, torch.randn(8, 16, generator=g), ids, ref)
    assert res.means["psnr"] > rand.means["psnr"]
    with pytest.raises(ValueError, match="observer 'client:1', kind 'noisy_cluster_centers'"):
        invert_and_score(dec, torch.randn(2, 8), ids[:2], ref, observer="client:1", kind="noisy_cluster_centers")


def test_save_image_grid(tmp_path):
    from PIL import Image

    real, rec = torch.zeros(5, 3, 8, 8), torch.ones(5, 3, 8, 8) * 0.5
    p = save_image_grid(real, rec, tmp_path / "g.png", pairs_per_row=2)
    img = Image.open(p)
    assert img.size == (2 + 2 * 10, 2 + 6 * 10)  # 2 columns × (3 real rows + 3 reconstruction rows) of 8 px + 2 px padding
    px = np.asarray(img.convert("L"))
    assert px[2 + 4, 2 + 4] == 0 and px[12 + 4, 2 + 4] in (127, 128)  # real row above its reconstruction row
    assert px[42 + 4, 12 + 4] == 255  # the short last row is padded white
