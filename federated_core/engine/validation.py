"""The server's checks of every client upload before aggregation (bad or malicious clients).

`validate_upload(message, expected)` returns None for an acceptable upload, otherwise a reason
``"<code>: <detail>"`` with ``code`` one of `REJECTION_CODES`:

* ``unexpected_kind``: the kind is not one the method accepts from clients in this phase
  (`federated_core.methods.base.Method.upload_kinds`);
* ``missing_tensor`` / ``extra_tensor`` / ``shape`` / ``dtype``: the tensors differ from what the
  server expects for that kind (for ``backbone`` uploads: exactly the global model's state-dict
  keys, shapes and dtypes);
* ``non_finite``: a floating-point tensor holds NaN or ±Inf;
* ``update_norm``: the l2 norm of the update (upload minus the broadcast global backbone, over
  all floating-point entries, in float64) exceeds ``FederatedConfig.max_update_norm``.

The engine (`run_federated`) rejects every upload of a client in a phase once one of them is
rejected (reason ``companion: ...``), so the aggregate is exactly that of the other clients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from federated_core.engine.messages import Message

REJECTION_CODES = (
    "unexpected_kind",
    "missing_tensor",
    "extra_tensor",
    "shape",
    "dtype",
    "non_finite",
    "update_norm",
    "companion",
)


class AllUploadsRejectedError(RuntimeError):
    """Every upload of a phase was rejected: the server has nothing to aggregate."""


@dataclass(frozen=True)
class UploadExpectation:
    """What the server accepts in one phase.

    Attributes:
        phase: the method phase (for messages).
        kinds: the kinds a client may upload; None accepts any registered kind.
        references: kind -> the tensors an upload of that kind must match in names, shapes and
            dtypes (e.g. ``{"backbone": global backbone state dict}``); kinds not listed get no
            structure check.
        max_update_norm: bound on ``||upload - reference||_2`` for the kinds in ``references``;
            None: no bound.
    """

    phase: str
    kinds: frozenset[str] | None = None
    references: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)
    max_update_norm: float | None = None


def check_kind(message: Message, expected: UploadExpectation) -> str | None:
    """``unexpected_kind`` when the phase does not accept ``message.kind`` from clients."""
    if expected.kinds is None or message.kind in expected.kinds:
        return None
    accepted = ", ".join(sorted(expected.kinds)) or "nothing"
    return f"unexpected_kind: kind {message.kind!r} is not accepted from clients in phase {expected.phase!r} (accepted: {accepted})"


def check_structure(tensors: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> str | None:
    """The first difference between ``tensors`` and ``reference`` in names, shapes and dtypes."""
    missing = sorted(set(reference) - set(tensors))
    if missing:
        return f"missing_tensor: {len(missing)} expected tensor(s) absent, e.g. {missing[:3]}"
    extra = sorted(set(tensors) - set(reference))
    if extra:
        return f"extra_tensor: {len(extra)} unexpected tensor(s), e.g. {extra[:3]}"
    for name, ref in reference.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            return f"shape: tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}"
        if t.dtype != ref.dtype:
            return f"dtype: tensor {name!r} has dtype {t.dtype}, expected {ref.dtype}"
    return None


def check_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """``non_finite`` naming the first floating-point tensor with NaN or ±Inf values."""
    for name, t in tensors.items():
        if not (t.is_floating_point() or t.is_complex()):
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            nan = int(torch.isnan(t).sum())
            inf = int((~finite).sum()) - nan
            return f"non_finite: tensor {name!r} holds {nan} NaN and {inf} Inf value(s)"
    return None


def update_norm(tensors: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """``||tensors - reference||_2`` over the floating-point entries of ``reference`` (float64)."""
    total = 0.0
    for name, ref in reference.items():
        if ref.is_floating_point():
            diff = tensors[name].detach().to(torch.float64) - ref.detach().to(torch.float64)
            total += float(diff.pow(2).sum())
    return math.sqrt(total)


def validate_upload(message: Message, expected: UploadExpectation) -> str | None:
    """None when the server accepts ``message``; otherwise the reason (see the module docstring)."""
    reason = check_kind(message, expected)
    if reason is not None:
        return reason
    tensors = message.tensors
    reference = expected.references.get(message.kind)
    if reference is not None:
        reason = check_structure(tensors, reference)
        if reason is not None:
            return reason
    reason = check_finite(tensors)
    if reason is not None:
        return reason
    if reference is not None and expected.max_update_norm is not None:
        norm = update_norm(tensors, reference)
        if not norm <= expected.max_update_norm:
            return f"update_norm: the {message.kind!r} update has l2 norm {norm:.6g} > max_update_norm {expected.max_update_norm:g}"
    return None


def validate_client_uploads(uploads: list[Message], expected: UploadExpectation) -> dict[int, str]:
    """Reasons by position in ``uploads`` (one client's uploads of one phase): once one upload is
    rejected, the client's other uploads are rejected with it (``companion``)."""
    reasons = {i: r for i, m in enumerate(uploads) if (r := validate_upload(m, expected)) is not None}
    if not reasons:
        return {}
    first = min(reasons)
    cause = f"companion: {uploads[first].sender}'s {uploads[first].kind!r} upload was rejected ({reasons[first]})"
    return {i: reasons.get(i, cause) for i in range(len(uploads))}
