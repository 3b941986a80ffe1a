"""FedFR's globally shared public data D_g: what it is, how every party obtains it, and the
features of it that the hard-negative selection needs.

D_g is public (FedFR: the data the pre-trained model was trained on, "naturally shared to all the
local clients"): every party obtains it once at set-up, by rendering it from a synthetic
generator spec or from an in-memory `FaceSet` given to the method. It never crosses the wire in
a round, so no message carries it; the wire log shows only what a round adds (Θ and Φ).

Its identities must be disjoint from every client's identities (checked on each client) and from
the test identities (the caller's split: `federated_core.data.split.split_identities`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from federated_core.data.faceset import FaceSet

DEFAULT_PUBLIC_SET: dict[str, Any] = {
    "identities": [0, 100],
    "images_per_identity": 8,
    "start_index": 0,
    "generator": {"seed": 0},
}


def check_public_set(spec: Any) -> dict[str, Any] | FaceSet:
    """Validate ``public_set``: None (the default spec), a synthetic spec dict
    ``{"identities": [start, stop], "images_per_identity": k, "start_index": i, "generator":
    {SyntheticFaces kwargs}}`` or a `FaceSet`."""
    if spec is None:
        return {**DEFAULT_PUBLIC_SET, "generator": dict(DEFAULT_PUBLIC_SET["generator"])}
    if isinstance(spec, FaceSet):
        if len(spec) == 0 or spec.identities().numel() < 1:
            raise ValueError("public_set must hold at least one image of one identity, got an empty FaceSet")
        return spec
    if not isinstance(spec, Mapping) or "identities" not in spec:
        raise ValueError(
            "public_set must be None, a FaceSet, or a dict {'identities': [start, stop], 'images_per_identity': k, "
            f"'start_index': i, 'generator': {{SyntheticFaces kwargs}}}}, got {spec!r}"
        )
    unknown = sorted(set(spec) - {"identities", "images_per_identity", "start_index", "generator"})
    if unknown:
        raise ValueError(
            f"public_set has unknown key(s) {unknown}; allowed: identities, images_per_identity, start_index, generator"
        )
    try:
        start, stop = (int(v) for v in spec["identities"])
    except (TypeError, ValueError):
        raise ValueError(f"public_set['identities'] must be [start, stop], got {spec['identities']!r}") from None
    if not 0 <= start < stop:
        raise ValueError(
            f"public_set['identities'] must be [start, stop) with 0 <= start < stop, got {spec['identities']!r}"
        )
    per = spec.get("images_per_identity", DEFAULT_PUBLIC_SET["images_per_identity"])
    if isinstance(per, bool) or not isinstance(per, int) or per < 1:
        raise ValueError(f"public_set['images_per_identity'] must be an integer >= 1, got {per!r}")
    first = spec.get("start_index", 0)
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise ValueError(f"public_set['start_index'] must be an integer >= 0, got {first!r}")
    generator = spec.get("generator", {})
    if not isinstance(generator, Mapping):
        raise ValueError(f"public_set['generator'] must be a dict of SyntheticFaces arguments, got {generator!r}")
    return {"identities": [start, stop], "images_per_identity": per, "start_index": first, "generator": dict(generator)}


def describe_public_set(spec: dict[str, Any] | FaceSet) -> dict[str, Any]:
    """A JSON-able description (for the run's recorded hyper-parameters)."""
    if isinstance(spec, FaceSet):
        return {
            "faceset": {
                "images": len(spec),
                "identities": int(spec.identities().numel()),
                "resolution": spec.resolution,
            }
        }
    return dict(spec)


class PublicData:
    """The public set of one run, rendered once per process and per resolution (public data
    only: it carries nothing between parties), plus a memo of its features under the latest
    global model (a pure function of public data and the broadcast every participant receives)."""

    def __init__(self, spec: dict[str, Any] | FaceSet) -> None:
        self.spec = spec
        self._faces: tuple[int, FaceSet] | None = None
        self._features: tuple[str, torch.Tensor] | None = None

    def faces(self, resolution: int) -> FaceSet:
        if isinstance(self.spec, FaceSet):
            if self.spec.resolution != int(resolution):
                raise ValueError(
                    f"public_set images are {self.spec.resolution} px but the backbone takes {resolution} px"
                )
            return self.spec
        if self._faces is None or self._faces[0] != int(resolution):
            from federated_core.data import SyntheticFaces

            kwargs = {"resolution": int(resolution), **self.spec["generator"]}
            if int(kwargs["resolution"]) != int(resolution):
                raise ValueError(
                    f"public_set['generator']['resolution'] is {kwargs['resolution']} but the backbone takes {resolution} px"
                )
            start, stop = self.spec["identities"]
            ids = torch.arange(start, stop, dtype=torch.int64)
            faces = SyntheticFaces(**kwargs).make_set(
                ids, self.spec["images_per_identity"], start_index=self.spec["start_index"]
            )
            self._faces = (int(resolution), faces)
        return self._faces[1]

    def identities(self, resolution: int) -> list[int]:
        """Public identity ids in the row order of Φ (sorted)."""
        return [int(i) for i in self.faces(resolution).identities().tolist()]

    def features(self, model: nn.Module, model_key: str, resolution: int, device: str) -> torch.Tensor:
        """L2-normalised features ``[P, d]`` of every public image under ``model`` (memoised by
        ``model_key``, a digest of the model's weights)."""
        from federated_core.models import embed

        if self._features is None or self._features[0] != model_key:
            self._features = (model_key, embed(model, self.faces(resolution), device=device))
        return self._features[1]


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """A digest of named tensors (names, shapes, dtypes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
