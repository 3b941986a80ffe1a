"""Face alignment: Umeyama similarity estimation, the warp, MTCNN (bundled weights), folder trees."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from federated_core.data.align import (
    ARCFACE_TEMPLATE_112,
    FACENET_INSTALL_HINT,
    FaceDetection,
    align_faces,
    align_folder_tree,
    arcface_template,
    estimate_similarity,
    warp_affine,
    warp_to_template,
)
from federated_core.data.folders import load_folder_tree


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("seed", range(5))
def test_similarity_exact_recovery(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = _similarity(rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5.0), tuple(rng.uniform(-100, 100, 2)))
    src = rng.uniform(0, 250, size=(5, 2))
    estimate = estimate_similarity(src, _apply(truth, src))
    np.testing.assert_allclose(estimate, truth, rtol=0, atol=1e-9)


def test_similarity_matches_linear_least_squares_on_noisy_points() -> None:
    """Independent reference: a 2-d similarity is linear in (a, b, tx, ty) with
    x' = a x - b y + tx, y' = b x + a y + ty; numpy's lstsq minimises the same squared error."""
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = _apply(_similarity(0.4, 0.7, (12.0, -3.0)), src) + rng.normal(0, 2.0, size=(5, 2))
    design = np.zeros((10, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(5), np.ones(5)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, dst.reshape(-1), rcond=None)
    reference = np.array([[a, -b, tx], [b, a, ty]])
    np.testing.assert_allclose(estimate_similarity(src, dst), reference, atol=1e-9)


def test_similarity_never_reflects() -> None:
    src = ARCFACE_TEMPLATE_112
    mirrored = src * np.array([-1.0, 1.0])  # a reflection: best proper similarity has det > 0
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_similarity_errors() -> None:
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        estimate_similarity(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        estimate_similarity(np.full((5, 2), np.nan), np.zeros((5, 2)))


def test_warp_identity_and_integer_shift_are_exact_crops() -> None:
    image = torch.randint(0, 256, (3, 40, 50), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = warp_affine(image, _similarity(0.0, 1.0, (0.0, 0.0)), output_size=30)
    assert torch.equal(out, image[:, :30, :30])
    # dst = src - (5, 7): output pixel (x, y) reads input (x + 5, y + 7).
    out = warp_affine(image, _similarity(0.0, 1.0, (-5.0, -7.0)), output_size=30)
    assert torch.equal(out, image[:, 7:37, 5:35])
    # Outside the photo is black.
    out = warp_affine(image, _similarity(0.0, 1.0, (10.0, 0.0)), output_size=20)
    assert (out[:, :, :10] == 0).all() and torch.equal(out[:, :, 10:], image[:, :20, :10])


def test_warp_rotation_and_scale_sample_the_right_place() -> None:
    """Bilinear sampling of a linear ramp is exact, so a rotated/scaled warp must reproduce the
    ramp at the inverse-mapped coordinates (up to uint8 rounding)."""
    h = w = 200
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ramp = np.stack([xs, ys, 255 - xs])  # integer-valued, so the uint8 photo is exactly linear
    image = torch.from_numpy(ramp.astype(np.uint8))
    matrix = _similarity(0.5, 0.6, (0.0, 0.0))
    matrix[:, 2] = 31.5 - matrix[:, :2] @ np.array([100.0, 100.0])  # photo centre -> crop centre
    out = warp_affine(image, matrix, output_size=64).numpy().astype(np.float64)
    oy, ox = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    src = (np.stack([ox.ravel(), oy.ravel()], 1) - matrix[:, 2]) @ np.linalg.inv(matrix[:, :2]).T
    assert (src >= 0).all() and (src <= h - 1).all()  # the crop lies inside the photo
    sx, sy = src[:, 0], src[:, 1]
    expected = np.stack([sx, sy, 255 - sx]).reshape(3, 64, 64)
    # Only the output's rounding to uint8 remains (a half-pixel misregistration would show as 0.5+).
    assert np.abs(out - expected).max() <= 0.5 + 1e-3


def test_warp_to_template_puts_landmarks_on_template() -> None:
    """Landmarks drawn as distinct dots end up at the template positions after the warp."""
    truth = _similarity(-0.3, 1.7, (25.0, 40.0))  # template -> photo
    landmarks = _apply(truth, ARCFACE_TEMPLATE_112)
    photo = np.zeros((320, 320, 3), np.uint8)
    for k, (x, y) in enumerate(np.round(landmarks).astype(int)):
        photo[y - 2 : y + 3, x - 2 : x + 3, k % 3] = 255  # a 5x5 dot per landmark
    crop = warp_to_template(torch.from_numpy(photo).permute(2, 0, 1), landmarks, 112)
    for k, (x, y) in enumerate(np.round(ARCFACE_TEMPLATE_112).astype(int)):
        assert crop[k % 3, y, x] > 150
    assert arcface_template(224)[0, 0] == pytest.approx(2 * ARCFACE_TEMPLATE_112[0, 0])


def test_missing_facenet_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    image = Image.new("RGB", (64, 64))
    with pytest.raises(ImportError, match=FACENET_INSTALL_HINT.replace(".", r"\.")):
        align_faces([image])


# ------------------------------------------------------------------------------ MTCNN runs


def _cartoon_face(size: int = 160, angle: float = 0.0) -> Image.Image:
    """A drawn frontal face (skin ellipse, hair, eyes with pupils, nose, mouth) that MTCNN's
    bundled weights detect; eye centres at (62, 73) and (98, 73) for size 160 before rotation."""
    im = Image.new("RGB", (size, size), (90, 110, 130))
    dr = ImageDraw.Draw(im)
    s = size / 160
    dr.ellipse([30 * s, 15 * s, 130 * s, 60 * s], fill=(60, 40, 30))
    dr.ellipse([40 * s, 40 * s, 120 * s, 135 * s], fill=(224, 172, 140))
    for cx in (62, 98):
        dr.ellipse([(cx - 9) * s, 68 * s, (cx + 9) * s, 78 * s], fill=(250, 250, 250))
        dr.ellipse([(cx - 4) * s, 69 * s, (cx + 4) * s, 77 * s], fill=(40, 30, 20))
        dr.line([(cx - 10) * s, 60 * s, (cx + 10) * s, 58 * s], fill=(60, 40, 30), width=int(3 * s))
    dr.polygon([(80 * s, 78 * s), (72 * s, 100 * s), (88 * s, 100 * s)], fill=(200, 145, 115))
    dr.ellipse([66 * s, 108 * s, 94 * s, 118 * s], fill=(170, 70, 70))
    im = im.filter(ImageFilter.GaussianBlur(2 * s))
    if angle:
        im = im.rotate(angle, resample=Image.BILINEAR, center=(size / 2, size / 2), fillcolor=(90, 110, 130))
    return im


def _noise(seed: int, size: int = 120) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def mtcnn():
    pytest.importorskip("facenet_pytorch")
    from federated_core.data.align import MtcnnDetector

    return MtcnnDetector(device="cpu")


def test_mtcnn_reports_no_face_cleanly(mtcnn) -> None:
    tiny = Image.new("RGB", (10, 10))  # smaller than the smallest face searched for
    result = align_faces([_noise(0), tiny], output_size=112, detector=mtcnn)
    assert result.found.tolist() == [False, False]
    assert result.no_face == ["image 0", "image 1"]
    assert result.images.shape == (0, 3, 112, 112) and result.images.dtype == torch.uint8
    assert torch.isnan(result.landmarks).all()


def test_mtcnn_detects_and_aligns_a_drawn_face(mtcnn) -> None:
    upright = mtcnn(_cartoon_face())
    assert upright is not None
    eyes = upright.landmarks[:2]
    assert np.abs(eyes - np.array([[62.0, 73.0], [98.0, 73.0]])).max() < 4.0  # the drawn pupils

    # A photo rotated by 20 degrees: the alignment transform undoes the rotation.
    result = align_faces([_noise(1), _cartoon_face(angle=20.0)], output_size=112, detector=mtcnn)
    assert result.found.tolist() == [False, True] and result.no_face == ["image 0"]
    assert result.images.shape == (1, 3, 112, 112)
    m = estimate_similarity(result.landmarks[1].numpy(), arcface_template(112))
    assert np.degrees(np.arctan2(m[1, 0], m[0, 0])) == pytest.approx(20.0, abs=5.0)


def test_align_folder_tree_with_mtcnn(tmp_path: Path, mtcnn) -> None:
    src, dst = tmp_path / "raw", tmp_path / "aligned"
    (src / "ann").mkdir(parents=True)
    (src / "bob").mkdir()
    _cartoon_face().save(src / "ann" / "face.jpg")
    _noise(2).save(src / "ann" / "wall.png")
    _noise(3).save(src / "bob" / "sky.png")

    report = align_folder_tree(src, dst, output_size=48, detector=mtcnn)

    assert report.written == [dst / "ann" / "face.png"]
    assert report.no_face == [src / "ann" / "wall.png", src / "bob" / "sky.png"]
    assert report.identities_without_faces == ["bob"]
    assert report.report_file.read_text() == "ann/wall.png\nbob/sky.png\n"
    assert not (dst / "bob").exists()
    fs = load_folder_tree(dst)  # the output is a loadable identity tree
    assert fs.images.shape == (1, 3, 48, 48) and fs.names == {0: "ann"}


def test_align_folder_tree_writes_warped_crops_and_checks_paths(tmp_path: Path) -> None:
    """The tree logic with a fixed-landmark detector (no MTCNN): crops equal `warp_to_template`."""
    src = tmp_path / "raw"
    (src / "p").mkdir(parents=True)
    photo = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    Image.fromarray(photo).save(src / "p" / "a.png")
    landmarks = _apply(_similarity(0.1, 1.1, (5.0, 3.0)), ARCFACE_TEMPLATE_112)

    def fixed(_: Image.Image) -> FaceDetection:
        return FaceDetection(box=np.array([0, 0, 150, 150.0]), probability=1.0, landmarks=landmarks)

    report = align_folder_tree(src, tmp_path / "out", output_size=64, detector=fixed)
    written = np.asarray(Image.open(report.written[0]))
    expected = warp_to_template(torch.from_numpy(photo).permute(2, 0, 1), landmarks, 64)
    assert torch.equal(torch.from_numpy(written.copy()).permute(2, 0, 1), expected)
    assert report.no_face == [] and report.report_file.read_text() == ""

    with pytest.raises(ValueError, match="outside src_root"):
        align_folder_tree(src, src / "aligned", detector=fixed)
    Image.fromarray(photo).save(src / "p" / "a.jpg")
    with pytest.raises(ValueError, match=r"both be written as p/a.png"):
        align_folder_tree(src, tmp_path / "out2", detector=fixed)
    with pytest.raises(ValueError, match="output_size must be an int >= 8"):
        align_faces([Image.new("RGB", (20, 20))], output_size=4, detector=fixed)
