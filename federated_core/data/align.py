"""Face detection and 5-point alignment of raw photos (MTCNN + similarity transform).

The crops every recognition backbone here expects are made as insightface makes them (and as
FedGC's "five facial landmarks for similarity transformation, then crop and resize the faces to
112x112"): MTCNN finds the face and its five landmarks (left eye, right eye, nose tip, left and
right mouth corner), a similarity transform (rotation, uniform scale, translation) maps them onto
the standard ArcFace 112x112 template by least squares (Umeyama 1991, Eqs. 40-42), and the photo
is warped with that transform.

MTCNN comes from facenet-pytorch (imported lazily; its P-, R- and O-Net weights ship inside its
wheel under ``facenet_pytorch/data/``, so detection works offline). The weights are loaded here
with ``torch.load(..., weights_only=True)``. Photos with no detected face are reported by name,
never silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from federated_core.data.folders import IMAGE_EXTENSIONS, list_folder_tree, read_image

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FACENET_INSTALL_HINT",
    "FaceDetection",
    "AlignedFaces",
    "AlignmentReport",
    "arcface_template",
    "estimate_similarity",
    "warp_affine",
    "warp_to_template",
    "MtcnnDetector",
    "align_faces",
    "align_folder_tree",
]

# Standard ArcFace / insightface 5-point reference for 112x112 crops, (x, y) in pixels with pixel
# centres at integer coordinates: left eye, right eye, nose tip, left mouth corner, right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

FACENET_INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


def arcface_template(output_size: int = 112) -> np.ndarray:
    """The ArcFace 5-point template for an ``output_size`` x ``output_size`` crop: the 112 px
    template scaled by ``output_size / 112`` (same face framing at every resolution)."""
    _check_output_size(output_size)
    return ARCFACE_TEMPLATE_112 * (output_size / 112.0)


def _check_output_size(output_size: int) -> None:
    if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer)) or output_size < 8:
        raise ValueError(f"output_size must be an int >= 8 (pixels per side), got {output_size!r}")


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform ``dst ~ c R src + t`` (rotation ``R``, no reflection,
    scale ``c > 0``), as the ``2 x 3`` matrix ``[c R | t]``.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns", Eqs. 38-42: with ``Sigma = cov(dst, src) = U D V^T``, ``S = diag(1, .., det(U)det(V))``,
    ``R = U S V^T``, ``c = tr(D S) / var(src)``, ``t = mean(dst) - c R mean(src)``.

    Args:
        src: ``[n, 2]`` source points (e.g. detected landmarks), ``n >= 2``.
        dst: ``[n, 2]`` target points (e.g. the template).

    Raises:
        ValueError: mismatched or wrong shapes, non-finite values, or coincident source points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be [n, 2] point arrays with n >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must be finite (no NaN/inf landmarks)")
    n = src.shape[0]
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    var_src = float((src_c**2).sum() / n)
    if var_src <= 1e-12 * max(1.0, float(np.abs(src).max()) ** 2):
        raise ValueError("src points all coincide; a similarity transform is undefined")
    cov = dst_c.T @ src_c / n
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[-1] = -1.0
    rotation = u @ np.diag(s) @ vt
    scale = float((d * s).sum() / var_src)
    translation = mean_dst - scale * rotation @ mean_src
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def warp_affine(
    image: torch.Tensor, matrix: np.ndarray, output_size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Warp a uint8 ``[3, H, W]`` image by the affine ``matrix`` (``2 x 3``, mapping *input* pixel
    coordinates to *output* coordinates, pixel centres at integers) into an ``output_size`` square
    crop. Bilinear sampling (``torch.nn.functional.grid_sample``); outside the photo is black.
    Returns uint8 ``[3, output_size, output_size]`` on ``device``."""
    _check_output_size(output_size)
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a uint8 tensor [3, H, W], got {image.dtype} {tuple(image.shape)}")
    h, w = int(image.shape[1]), int(image.shape[2])
    if h < 2 or w < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got {w}x{h}")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"matrix must be a finite 2x3 affine matrix, got shape {matrix.shape}")
    linear, offset = matrix[:, :2], matrix[:, 2]
    if abs(np.linalg.det(linear)) < 1e-12:
        raise ValueError("matrix is singular (zero scale); cannot invert the warp")
    inverse = np.linalg.inv(linear)
    ys, xs = np.meshgrid(np.arange(output_size), np.arange(output_size), indexing="ij")
    out_pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    src_pts = (out_pts - offset) @ inverse.T  # [S*S, 2] (x, y) in input pixels
    grid = np.empty_like(src_pts)
    grid[:, 0] = 2.0 * src_pts[:, 0] / (w - 1) - 1.0  # align_corners=True: -1/+1 are the corner centres
    grid[:, 1] = 2.0 * src_pts[:, 1] / (h - 1) - 1.0
    grid_t = torch.as_tensor(grid, dtype=torch.float32, device=device).view(1, output_size, output_size, 2)
    src = image.to(device=device, dtype=torch.float32).unsqueeze(0)
    out = F.grid_sample(src, grid_t, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def warp_to_template(
    image: torch.Tensor, landmarks: np.ndarray, output_size: int = 112, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Align one face: similarity transform from its 5 ``landmarks`` ([5, 2], (x, y) pixels) to
    :func:`arcface_template` and warp (uint8 ``[3, output_size, output_size]``)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"landmarks must be [5, 2] (x, y) points, got shape {landmarks.shape}")
    matrix = estimate_similarity(landmarks, arcface_template(output_size))
    return warp_affine(image, matrix, output_size, device)


# ------------------------------------------------------------------------------------- MTCNN


@dataclass
class FaceDetection:
    """One detected face: ``box`` (x1, y1, x2, y2), detection ``probability``, ``landmarks`` [5, 2]."""

    box: np.ndarray
    probability: float
    landmarks: np.ndarray


Detector = Callable[[Image.Image], "FaceDetection | None"]


def _import_facenet():
    try:
        import facenet_pytorch  # noqa: F401
        from facenet_pytorch import ONet, PNet, RNet
        from facenet_pytorch.models.utils.detect_face import detect_face
    except ImportError as err:
        raise ImportError(
            "face detection/alignment needs facenet-pytorch (MTCNN), which is not importable "
            f"({err}). Install it with: {FACENET_INSTALL_HINT}  (--no-deps because its metadata "
            "pins old torch/numpy versions; it works with the installed torch)"
        ) from err
    return facenet_pytorch, PNet, RNet, ONet, detect_face


class MtcnnDetector:
    """facenet-pytorch's MTCNN (P-, R-, O-Net cascade) returning the largest face of a photo.

    Args:
        device: where the three networks run.
        min_face_size: smallest face side searched for, in pixels (MTCNN's ``minsize``).
        thresholds: per-stage face-probability thresholds (P-, R-, O-Net), each in (0, 1).
        factor: image-pyramid scale factor, in (0, 1).

    Raises:
        ImportError: facenet-pytorch is missing (the message gives the install command).
        FileNotFoundError: the installed facenet-pytorch has no bundled MTCNN weights.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ) -> None:
        if isinstance(min_face_size, bool) or not isinstance(min_face_size, (int, np.integer)) or min_face_size < 12:
            raise ValueError(
                f"min_face_size must be an int >= 12 (pixels; MTCNN's smallest window), got {min_face_size!r}"
            )
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0.0 < t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities in (0, 1), got {thresholds!r}")
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        facenet, pnet_cls, rnet_cls, onet_cls, detect_face = _import_facenet()
        weights_dir = Path(os.path.dirname(facenet.__file__)) / "data"
        nets = []
        for cls, file in ((pnet_cls, "pnet.pt"), (rnet_cls, "rnet.pt"), (onet_cls, "onet.pt")):
            path = weights_dir / file
            if not path.is_file():
                raise FileNotFoundError(
                    f"MTCNN weights {path} are missing from the facenet-pytorch install; reinstall with: "
                    f"{FACENET_INSTALL_HINT}"
                )
            net = cls(pretrained=False)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            nets.append(net.to(device).eval())
        self.pnet, self.rnet, self.onet = nets
        self.device = torch.device(device)
        self.min_face_size = int(min_face_size)
        self.thresholds = list(thresholds)
        self.factor = float(factor)
        self._detect_face = detect_face

    def __call__(self, image: Image.Image) -> FaceDetection | None:
        """The largest detected face of an RGB PIL image, or ``None`` when there is none."""
        image = image.convert("RGB")
        if min(image.size) < self.min_face_size:  # no pyramid level fits: nothing can be detected
            return None
        with torch.no_grad():
            boxes, points = self._detect_face(
                image, self.min_face_size, self.pnet, self.rnet, self.onet, self.thresholds, self.factor, self.device
            )
        boxes, points = np.asarray(boxes[0], dtype=np.float64), np.asarray(points[0], dtype=np.float64)
        if boxes.size == 0:
            return None
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        best = int(np.argmax(areas))
        return FaceDetection(
            box=boxes[best, :4].copy(), probability=float(boxes[best, 4]), landmarks=points[best].copy()
        )


@dataclass
class AlignedFaces:
    """Result of :func:`align_faces`.

    Attributes:
        images: uint8 ``[M, 3, S, S]``, the aligned crops of the inputs where a face was found,
            in input order.
        found: bool ``[N]``, one per input: was a face found (``images`` holds ``found.sum()`` rows).
        landmarks: float32 ``[N, 5, 2]`` detected landmarks in input pixels (NaN where none).
        sources: a name per input (the path, or ``"image <i>"`` for PIL inputs).
    """

    images: torch.Tensor
    found: torch.Tensor
    landmarks: torch.Tensor
    sources: list[str] = field(default_factory=list)

    @property
    def no_face(self) -> list[str]:
        """Names of the inputs where no face was detected."""
        return [s for s, f in zip(self.sources, self.found.tolist()) if not f]


def _to_pil(item: str | Path | Image.Image, index: int) -> tuple[Image.Image, torch.Tensor, str]:
    if isinstance(item, Image.Image):
        tensor = torch.from_numpy(np.asarray(item.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        return item.convert("RGB"), tensor.contiguous(), f"image {index}"
    if isinstance(item, (str, Path)):
        tensor = read_image(item)  # names the file if unreadable
        return Image.fromarray(tensor.permute(1, 2, 0).numpy()), tensor, str(item)
    raise ValueError(f"images must be file paths or PIL images; item {index} is {type(item).__name__}")


def align_faces(
    images: Sequence[str | Path | Image.Image] | str | Path | Image.Image,
    output_size: int = 112,
    device: torch.device | str = "cpu",
    detector: Detector | None = None,
    min_face_size: int = 20,
    progress: bool = False,
) -> AlignedFaces:
    """Detect the largest face of every photo with MTCNN and align it to the ArcFace template.

    Args:
        images: image file paths and/or PIL images (any size).
        output_size: side of the aligned crops (112 is the ArcFace standard).
        device: device of MTCNN and of the warp.
        detector: a callable PIL image -> `FaceDetection` or None; default an `MtcnnDetector`.
        min_face_size: MTCNN's smallest face (pixels), used when ``detector`` is None.
        progress: tqdm bar over images.

    Returns:
        `AlignedFaces`: the crops of the photos with a face plus, for every input, whether a face
        was found (``.no_face`` lists the others by name).

    Raises:
        ImportError: facenet-pytorch is missing and no ``detector`` was given (install hint).
        ValueError: unreadable image file (named), bad arguments.
    """
    _check_output_size(output_size)
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    if detector is None:
        detector = MtcnnDetector(device=device, min_face_size=min_face_size)
    crops: list[torch.Tensor] = []
    found: list[bool] = []
    landmarks = np.full((len(images), 5, 2), np.nan, dtype=np.float32)
    sources: list[str] = []
    for i, item in enumerate(tqdm(images, desc="aligning faces", disable=not progress, unit="img")):
        pil, tensor, name = _to_pil(item, i)
        sources.append(name)
        detection = detector(pil)
        found.append(detection is not None)
        if detection is None:
            continue
        landmarks[i] = detection.landmarks
        crops.append(warp_to_template(tensor, detection.landmarks, output_size, device).cpu())
    stacked = torch.stack(crops) if crops else torch.empty((0, 3, output_size, output_size), dtype=torch.uint8)
    return AlignedFaces(
        images=stacked,
        found=torch.tensor(found, dtype=torch.bool),
        landmarks=torch.from_numpy(landmarks),
        sources=sources,
    )


@dataclass
class AlignmentReport:
    """What :func:`align_folder_tree` did.

    Attributes:
        written: aligned crops written (paths under ``dst_root``).
        no_face: source photos with no detected face (nothing written for them).
        identities_without_faces: identity folders none of whose photos had a face (no folder
            is created for them in ``dst_root``).
        report_file: ``dst_root/no_face.txt``, the ``no_face`` list relative to ``src_root``.
    """

    written: list[Path]
    no_face: list[Path]
    identities_without_faces: list[str]
    report_file: Path


def align_folder_tree(
    src_root: str | Path,
    dst_root: str | Path,
    output_size: int = 112,
    device: torch.device | str = "cpu",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    detector: Detector | None = None,
    min_face_size: int = 20,
    progress: bool = False,
) -> AlignmentReport:
    """Align an identity-per-folder tree of raw photos into an identity-per-folder tree of crops.

    ``src_root/<identity>/<photo>.<ext>`` becomes ``dst_root/<identity>/<photo>.png`` (lossless)
    for every photo with a detected face; the photos without one are listed in the returned
    report and in ``dst_root/no_face.txt``. The result loads with
    :func:`federated_core.data.folders.load_folder_tree`.

    Raises:
        FileNotFoundError / ValueError: as :func:`list_folder_tree` for ``src_root``; ``dst_root``
            equal to or inside ``src_root``; two photos of one identity mapping to the same output
            name (e.g. ``a.jpg`` and ``a.png``); unreadable photos (named).
        ImportError: facenet-pytorch is missing and no ``detector`` was given.
    """
    _check_output_size(output_size)
    src_root, dst_root = Path(src_root), Path(dst_root)
    tree = list_folder_tree(src_root, extensions)
    src_abs, dst_abs = src_root.resolve(), dst_root.resolve()
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise ValueError(f"dst_root must lie outside src_root (it would become an identity folder): {dst_root}")
    for name, files in tree.items():
        stems: dict[str, Path] = {}
        for f in files:
            if f.stem in stems:
                raise ValueError(
                    f"{stems[f.stem]} and {f} would both be written as {name}/{f.stem}.png; rename one of them"
                )
            stems[f.stem] = f
    if detector is None:
        detector = MtcnnDetector(device=device, min_face_size=min_face_size)

    jobs = [(name, f) for name, files in tree.items() for f in files]
    written: list[Path] = []
    no_face: list[Path] = []
    with_face: set[str] = set()
    for name, file in tqdm(jobs, desc="aligning folder tree", disable=not progress, unit="img"):
        result = align_faces([file], output_size=output_size, device=device, detector=detector)
        if not bool(result.found[0]):
            no_face.append(file)
            continue
        out_dir = dst_root / name
        out_dir.mkdir(parents=True, exist_ok=True)
        out_path = out_dir / f"{file.stem}.png"
        Image.fromarray(result.images[0].permute(1, 2, 0).numpy()).save(out_path)
        written.append(out_path)
        with_face.add(name)
    dst_root.mkdir(parents=True, exist_ok=True)
    report_file = dst_root / "no_face.txt"
    report_file.write_text("".join(f"{p.relative_to(src_root).as_posix()}\n" for p in no_face))
    return AlignmentReport(
        written=written,
        no_face=no_face,
        identities_without_faces=[name for name in tree if name not in with_face],
        report_file=report_file,
    )
