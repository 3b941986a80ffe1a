"""Label recovery from the update of the client's class-center matrix ``W [C, d]``.

* **iDLG** (Zhao et al. 2020): *which* class — the row whose update is anti-aligned with the
  others (`recover_labels_idlg`).
* **LLG** (Wainakh et al. 2022, "User-Level Label Leakage from Gradients in Federated Learning",
  §4: LLG, LLG+, LLG*): *how many* images of each class (`recover_label_counts_llg`).

LLG in the paper works on a linear softmax layer over non-negative (ReLU) features. Summing row
``c`` of the gradient over the feature dimension gives one number per class,

    ĝ_c = Σ_i (p_ic − y_ic)·Σ_j f_ij  ≈  m·(B·p̄_c − n_c),

where ``m`` is the *impact* of one image (its feature sum, about the same for every image), ``B``
the batch size, ``n_c`` the count of class ``c`` and ``B·p̄_c·m`` the *offset* that the softmax
mass of the images of other classes puts on row ``c``. A negative ``ĝ_c`` means "class present"
(LLG's first step); subtracting the offset and dividing by the impact gives the count. LLG+
estimates the impact from the observed gradient; LLG* calibrates it (and the offsets) by feeding
the attacker's own dummy data through the known model.

Our heads differ: the centers are compared to features by cosine (CosFace/ArcFace, PrivacyFace
Eq. 1–3), so a row's gradient is the feature projected onto the tangent plane of ``w_c`` and
scaled by ``s/‖w_c‖``, and the backbones' features are zero-centred (tanh, BatchNorm), not
non-negative: summing over the feature dimension means nothing. We keep LLG's structure and
replace "sum over the feature dimension" by "projection onto a direction ``u`` along which every
image's contribution is positive":

* ``direction="update"`` (default, for our centred features): ``u`` is the batch direction read
  off the observed update itself. Rows are first divided by the known per-row scale
  (``s/‖w_c‖`` for cosine heads); starting from iDLG's row, ``u`` is the mean of the rows judged
  absent minus the mean of those judged present, and "present" is ``⟨h_c, u⟩ < 0`` (LLG's sign
  rule), iterated to a fixed point. The offsets ``p̄_c`` come from dummy images through the known
  start model (LLG*: each dummy image given every other class as label); the impact is
  calibrated so that the present classes account for all ``B`` images (LLG+). Counts go to the
  present classes only.
* ``direction="dummy"`` (LLG* as in the paper, for ReLU-like features): for each class the
  attacker simulates the whole local update on ``B`` dummy images, all of that class and all of
  other classes; the difference of the two row updates is the presence direction ``u_c``, and
  their projections are the offset (class absent) and the full-batch impact (class everywhere).

Both end with LLG's allocation: every present class gets one image, the rest go one at a time to
the class whose estimate exceeds its current count the most, so the counts are integers summing
to ``B``.

The positive-only loss (FedFace) has no softmax and so no offsets: a row moves exactly when its
class is in the batch, and the counts follow the rows' norms.

**Exact** (by construction, whatever the offsets): with ``direction="update"``, a one-class batch
whenever the sign rule singles out that class, i.e. whenever the rows of the absent classes
project positively on the batch direction (true when the batch's images have positively
correlated features; the impact is calibrated on the present rows, which then hold all ``B``
images); the *set* of classes for the positive-only loss. **Heuristic**: everything else. The sign rule misses a class whose share
of the batch is below its offset (LLG's known weakness); counts among several present classes
assume one impact per image; dummy offsets transfer only as far as dummy probabilities resemble
real ones. **Not identifiable**: two classes without extra negatives — the head update of a
softmax or CosFace head is exactly unchanged when every label is swapped and every feature
negated, so no head-only method can tell ``(n_0, n_1)`` from ``(n_1, n_0)``; the tie is broken
by class index.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from attacks.gradient import ClientModel, LocalSgd

__all__ = [
    "LLG_DIRECTIONS",
    "LabelCounts",
    "allocate_label_counts",
    "labels_from_counts",
    "recover_label_counts_llg",
    "recover_labels_idlg",
]

LLG_DIRECTIONS = ("update", "dummy")
_HALF_IMAGE = 0.5  # an absent-by-sign class joins the allocation when its estimate rounds to >= 1


def recover_labels_idlg(head_update: torch.Tensor, count: int = 1) -> torch.Tensor:
    """Labels from the update of the class-center matrix ``[C, d]`` (iDLG, Zhao et al. 2020).

    Each row's update is the (negated, lr-scaled) sum over samples of ``(p_c − y_c)·∂u_c/∂w_c``:
    positive multiples of (roughly) the feature direction for the classes a sample is *not*, a
    negative one for its own. The true row is therefore anti-aligned with the others; we return
    the ``count`` rows with the lowest summed cosine to all other rows (exact for one sample or
    one label per batch; a heuristic for several labels). Sign-agnostic: works on gradients and
    on parameter differences alike.
    """
    if head_update.dim() != 2 or head_update.shape[0] < 2:
        raise ValueError(
            f"head_update must be [C, d] with C >= 2 classes (label recovery needs the other rows), got {tuple(head_update.shape)}"
        )
    if not 1 <= count <= head_update.shape[0]:
        raise ValueError(f"count must be in [1, C={head_update.shape[0]}], got {count}")
    g = F.normalize(head_update.double(), dim=1)
    sims = g @ g.T
    score = sims.sum(1) - sims.diagonal()
    return torch.topk(-score, count).indices.sort().values


@dataclass(frozen=True)
class LabelCounts:
    """LLG's answer for one head update.

    Attributes:
        counts: ``[C]`` int64, images per class, summing to the number of images.
        estimate: ``[C]`` float64, the real-valued counts before the integer allocation.
        present: ``[C]`` bool, the classes LLG's sign rule calls present (each got >= 1 image).
        projection: ``[C]`` float64, the per-class scalar (LLG's gradient sum, generalised).
        offset: ``[C]`` float64, ``p̄_c`` (``direction="update"``) or the simulated
            absent-class projection (``"dummy"``).
        direction: how the projection direction was found (`LLG_DIRECTIONS`).
    """

    counts: torch.Tensor
    estimate: torch.Tensor
    present: torch.Tensor
    projection: torch.Tensor
    offset: torch.Tensor
    direction: str

    def labels(self) -> torch.Tensor:
        """One label per image, sorted (``labels_from_counts(self.counts)``)."""
        return labels_from_counts(self.counts)


def labels_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """``[0]*n_0 + [1]*n_1 + …`` as an int64 tensor (the order of a batch is not recoverable)."""
    if counts.dim() != 1 or counts.dtype.is_floating_point or bool((counts < 0).any()):
        raise ValueError(f"counts must be a 1-D tensor of non-negative integers, got {counts!r}")
    return torch.repeat_interleave(torch.arange(len(counts)), counts.long().cpu())


def allocate_label_counts(
    estimate: torch.Tensor,
    present: torch.Tensor,
    num_images: int,
    eligible: torch.Tensor | None = None,
) -> torch.Tensor:
    """LLG's allocation (Wainakh et al. 2022, §4): one image to every ``present`` class, then one
    at a time to the ``eligible`` class (default: the present ones) whose ``estimate`` exceeds its
    current count the most (ties: lowest index). Returns int64 counts summing to ``num_images``."""
    _check_count("num_images", num_images)
    if estimate.dim() != 1 or present.shape != estimate.shape or present.dtype != torch.bool:
        raise ValueError(
            f"estimate must be [C] and present a bool [C], got {tuple(estimate.shape)} and "
            f"{tuple(present.shape)} ({present.dtype})"
        )
    if not bool(torch.isfinite(estimate).all()):
        raise ValueError(f"estimate must be finite, got {estimate.tolist()}")
    n_present = int(present.sum())
    if not 1 <= n_present <= num_images:
        raise ValueError(f"present must mark 1..num_images={num_images} classes, got {n_present}")
    allowed = present if eligible is None else eligible | present
    counts = present.long().clone()
    est = estimate.double()
    while int(counts.sum()) < num_images:
        gap = torch.where(allowed, est - counts, torch.full_like(est, -math.inf))
        counts[int(gap.argmax())] += 1
    return counts


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _head_scale(model: ClientModel) -> torch.Tensor:
    """Per-row scale of one image's gradient on ``w_c``: 1 (softmax: the feature itself),
    ``s/‖w_c‖`` (CosFace/ArcFace) or ``1/‖w_c‖`` (positive-only loss)."""
    from federated_core.models.heads import DEFAULT_SCALE

    norms = model.centers.detach().double().norm(dim=1).clamp_min(1e-12)
    if model.loss == "softmax":
        return torch.ones_like(norms)
    if model.loss == "positive":
        return 1.0 / norms
    s = DEFAULT_SCALE[model.loss] if model.s is None else float(model.s)
    return s / norms


def _head_rows(model: ClientModel, head_update: torch.Tensor) -> torch.Tensor:
    """``h_c = −Δw_c / scale_c`` in float64 on the CPU; for the cosine and positive-only heads,
    whose gradient on ``w_c`` is tangent to it, the radial part (weight decay, the curvature of
    several steps) is removed first."""
    rows = -head_update.detach().double().cpu()
    if model.loss != "softmax":
        w = F.normalize(model.centers.detach().double().cpu(), dim=1)
        rows = rows - (rows * w).sum(1, keepdim=True) * w
    return rows / _head_scale(model).cpu()[:, None]


def _dummy_images(num: int, image_shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """The attacker's dummy data: uniform noise in ``[-1, 1]`` (LLG*), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((num, *image_shape), generator=gen) * 2 - 1


def _dummy_offsets(model: ClientModel, image_shape: tuple[int, int, int], seed: int, num: int) -> torch.Tensor:
    """``p̄_c``: the mean softmax mass on class ``c`` of dummy images labelled with another class,
    through the known start model in training mode (LLG*'s offset, in probability units). Zero
    for the positive-only loss, which has no softmax."""
    n_classes = model.centers.shape[0]
    if model.loss == "positive":
        return torch.zeros(n_classes, dtype=torch.float64)
    device = model.centers.device
    client = copy.deepcopy(model).train()
    with torch.no_grad():
        f = client.backbone(_dummy_images(num, image_shape, seed).to(device))
        probs = torch.stack(
            [
                F.softmax(client.logits(f, torch.full((num,), lab, device=device)), dim=1)[:, :n_classes].mean(0)
                for lab in range(n_classes)
            ]
        ).double()  # [label, class]
    return (probs.sum(0) - probs.diagonal()).cpu() / (n_classes - 1)


def _batch_direction(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections ``⟨h_c, u⟩`` and the present set of ``direction="update"``: from iDLG's row,
    ``u`` ∝ Σ_absent h − Σ_present h and present = negative projection, to a fixed point (at most
    C + 1 rounds)."""
    n_classes = rows.shape[0]
    present = torch.zeros(n_classes, dtype=torch.bool)
    present[recover_labels_idlg(rows, 1)] = True
    proj = rows @ F.normalize(rows[~present].sum(0) - rows[present].sum(0), dim=0)
    for _ in range(n_classes + 1):
        new = proj < 0
        if not bool(new.any()):
            new[int(proj.argmin())] = True
        if torch.equal(new, present):
            break
        present = new
        direction = rows[~present].sum(0) - rows[present].sum(0)
        if float(direction.norm()) == 0.0:
            break
        proj = rows @ F.normalize(direction, dim=0)
    return proj, present


def _keep_most_negative(proj: torch.Tensor, present: torch.Tensor, num_images: int) -> torch.Tensor:
    """At most ``num_images`` classes can be present: keep the most negative projections."""
    if int(present.sum()) <= num_images:
        return present
    keep = torch.zeros_like(present)
    keep[torch.topk(-proj, num_images).indices] = True
    return keep


def _llg_positive(rows: torch.Tensor, num_images: int) -> LabelCounts:
    """The positive-only loss (FedFace) has no softmax, so no offsets: a row moves exactly when
    its class is in the batch, and each image pulls its row by about the same amount (the
    impact), so the counts follow the rows' norms."""
    norms = rows.norm(dim=1)
    present = norms > 1e-6 * float(norms.max())
    present = _keep_most_negative(-norms, present, num_images)
    estimate = num_images * torch.where(present, norms, torch.zeros_like(norms)) / float(norms[present].sum())
    counts = allocate_label_counts(estimate, present, num_images)
    return LabelCounts(counts, estimate, present, -norms, torch.zeros_like(norms), "update")


def _llg_update(
    model: ClientModel, head_update: torch.Tensor, num_images: int, image_shape: tuple[int, int, int], seed: int
) -> LabelCounts:
    """``direction="update"``: batch direction from the update, dummy offsets, impact calibrated
    on the present rows (so a one-class batch gets all images), counts to present classes."""
    rows = _head_rows(model, head_update)
    if model.loss == "positive":
        return _llg_positive(rows, num_images)
    proj, present = _batch_direction(rows)
    present = _keep_most_negative(proj, present, num_images)
    pbar = _dummy_offsets(model, image_shape, seed, max(num_images, 16))
    mass = num_images * (1.0 - float(pbar[present].sum()))
    pull = -float(proj[present].sum())
    if mass > 1e-9 and pull > 0:
        estimate = num_images * pbar - proj / (pull / mass)
    else:  # offsets exhaust the present rows: share the images by their projections
        estimate = num_images * (-proj).clamp_min(0) / max(pull, 1e-300)
    counts = allocate_label_counts(estimate, present, num_images)
    return LabelCounts(counts, estimate, present, proj, pbar, "update")


def _llg_dummy(
    model: ClientModel,
    head_update: torch.Tensor,
    num_images: int,
    sgd: LocalSgd,
    image_shape: tuple[int, int, int],
    seed: int,
) -> LabelCounts:
    """``direction="dummy"`` (LLG*): per class, simulate the local update on ``B`` dummy images
    all of that class (impact) and all of each other class (offset); presence direction = their
    difference; count = ``B·(offset − projection)/(offset − impact)``."""
    from attacks.gradient import simulate_local_update

    n_classes = model.centers.shape[0]
    dummy = _dummy_images(num_images, image_shape, seed).to(model.centers.device)
    rows = []
    for lab in range(n_classes):
        labels = torch.full((num_images,), lab, device=dummy.device)
        rows.append(-simulate_local_update(model, dummy, labels, sgd)["centers"].double().cpu())
    sims = torch.stack(rows)  # [label, class, d]
    own = sims[torch.arange(n_classes), torch.arange(n_classes)]
    other = (sims.sum(0) - own) / (n_classes - 1)
    u = F.normalize(other - own, dim=1)
    offset, impact = (other * u).sum(1), (own * u).sum(1)
    proj = (-head_update.detach().double().cpu() * u).sum(1)
    estimate = num_images * (offset - proj) / (offset - impact).clamp_min(1e-300)
    present = proj < 0
    if not bool(present.any()):
        present[int(estimate.argmax())] = True
    present = _keep_most_negative(proj, present, num_images)
    counts = allocate_label_counts(estimate, present, num_images, eligible=estimate >= _HALF_IMAGE)
    return LabelCounts(counts, estimate, present, proj, offset, "dummy")


def recover_label_counts_llg(
    model: ClientModel,
    head_update: torch.Tensor,
    num_images: int,
    image_shape: tuple[int, int, int],
    *,
    sgd: LocalSgd | None = None,
    direction: str = "update",
    seed: int = 0,
) -> LabelCounts:
    """How many of the client's ``num_images`` images belong to each class, from the update of
    its class centers (LLG/LLG+/LLG*, Wainakh et al. 2022 §4, generalised to margin heads as
    described in the module docstring; a heuristic except for one-class batches).

    Args:
        model: the client's model at the start of the round (the attacker broadcast it).
        head_update: the observed ``θ_after − θ_before`` of ``model.centers`` (``[C, d]``).
        num_images: the number of local images (known to the attacker).
        image_shape: ``(3, R, R)`` of the dummy images.
        sgd: the client's local optimiser; needed by ``direction="dummy"``.
        direction: ``"update"`` or ``"dummy"`` (`LLG_DIRECTIONS`).
        seed: seed of the dummy images.
    """
    from attacks.gradient import ClientModel

    if not isinstance(model, ClientModel):
        raise ValueError(f"model must be a ClientModel (its head defines the update), got {type(model).__name__}")
    _check_count("num_images", num_images)
    if direction not in LLG_DIRECTIONS:
        raise ValueError(f"direction must be one of {list(LLG_DIRECTIONS)}, got {direction!r}")
    if tuple(head_update.shape) != tuple(model.centers.shape):
        raise ValueError(f"head_update has shape {tuple(head_update.shape)}, the centers {tuple(model.centers.shape)}")
    if not bool(torch.isfinite(head_update).all()):
        raise ValueError("head_update has non-finite entries (nan or inf)")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
    n_classes = head_update.shape[0]
    if n_classes == 1:
        one = torch.ones(1, dtype=torch.float64)
        return LabelCounts(torch.tensor([num_images]), one * num_images, one.bool(), one * 0, one * 0, direction)
    if float(head_update.abs().max()) == 0.0:
        raise ValueError("head_update is all zeros: the head did not move, there are no labels to read")
    if direction == "dummy":
        if sgd is None:
            raise ValueError("direction='dummy' simulates the local update: pass sgd (the client's LocalSgd)")
        return _llg_dummy(model, head_update, num_images, sgd, image_shape, seed)
    return _llg_update(model, head_update, num_images, image_shape, seed)
