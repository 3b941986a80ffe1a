"""Personalised evaluation protocols of FedFR (Liu et al., AAAI 2022, § "Evaluation Metrics") and
FedFS (Kim et al. 2024): how well a client's own model recognises the client's own identities.

Data: every client's images are split per identity into a training part (what the client trains
on; also its enrolment images) and a held-out test part (`split_clients`; FedFR: 60 / 40 of 100
images per identity). Each client's model embeds its own enrolment images and the test images of
*all* clients; scores are cosine similarities. All metrics come from the generic functions of
`federated_core.evaluation` (one ROC implementation for the whole project).

* **FedFR protocol** (`fedfr_client_metrics`), per client, then averaged over clients:

  - 1:1 verification: genuine pairs = two test images of the same local identity; impostor pairs
    = a test image of a local identity with a test image of another client's identity. TAR@FAR
    and AUROC; FARs the impostor count cannot support are listed, not reported. (No LFW
    accuracy: at our demo scale there are about 400 impostor pairs per genuine pair, so rejecting
    every pair already scores 99.7 %.)
  - 1:N open-set identification: gallery = one template per local identity (the mean feature of
    its enrolment images), probes = the test images of all clients (a local identity's images are
    mated, every other client's non-mated). TPIR@FPIR and rank-1.

* **FedFS protocol** (`fedfs_client_metrics`), per client, then averaged: AUROC of the client's
  own identity against all others (score = cosine of a test image to the identity's template,
  genuine when the image is of that identity), and TPIR@FPIR = 1e-3 with the same gallery/probes
  as FedFR's 1:N.

Which model embeds (FedFR Table 3): the global model Θ_g, the local backbone Θ_l or ``[Θ_l, Π_l]``;
for FedFS the personalised or aggregated model (see `FedFR.personalised_model`,
`FedFS.personalised_model`). `evaluate_personalised` takes a function ``client -> model``.

**FPIR threshold rules** (``fpir_rule``):

* ``"nist"`` (default, standard): NIST FRVT 1:N (NISTIR 8271): FPIR is the fraction of
  *non-mated searches* whose top score clears the threshold (`federated_core.evaluation.tpir_at_fpir`).
* ``"fedfr-pairs"`` — **NON-STANDARD**, offered only so that our numbers can be compared with
  FedFR's published ones: FedFR's script (``local_1n.py``) thresholds at the ⌈N·FPIR⌉-th largest
  *non-mated pair* score, N the number of probes (mated and non-mated), counting every
  (probe, template) pair that is not a mate pair, and counts a mated probe as identified when its
  mate score exceeds that threshold, without requiring the mate to rank first
  (`tpir_at_fpir_fedfr_pairs`). Its "FPIR" is not a false-positive identification rate: pair
  scores of mated probes against wrong templates count as non-mated, and N is the probe count,
  not the number of non-mated pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from federated_core.data.faceset import FaceSet
from federated_core.engine.state import ClientData
from federated_core.evaluation import (
    auroc,
    far_key,
    gallery_templates,
    pair_scores,
    rank1,
    supported_fars,
    tar_at_far,
    tpir_at_fpir,
)
from federated_core.evaluation._inputs import check_count, check_rate, to_numpy

PROTOCOLS = ("fedfr", "fedfs")
FPIR_RULES = ("nist", "fedfr-pairs")
FEDFR_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
FEDFR_FPIRS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
FEDFS_FPIRS = (1e-3,)


# ------------------------------------------------------------------------------------------------
# the FedFR-style (non-standard) 1:N threshold
# ------------------------------------------------------------------------------------------------


def _unit_rows(name: str, value: Any) -> np.ndarray:
    x = to_numpy(value)
    if x.ndim != 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a non-empty 2-d float array [N, d], got dtype {x.dtype} shape {x.shape}")
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(np.isfinite(x)) or np.any(norms == 0):
        raise ValueError(f"{name} must be finite with no all-zero rows")
    return x / norms


def tpir_at_fpir_fedfr_pairs(gallery: Any, gallery_ids: Any, probes: Any, probe_ids: Any, fpir: float) -> float:
    """TPIR at FedFR's **non-standard** pair-score threshold (see the module docstring).

    With templates built as in `federated_core.evaluation.gallery_templates` (mean of the
    normalised gallery rows of each identity, re-normalised), the score matrix ``S = probes ·
    templatesᵀ``, ``N`` the number of probes and ``k = ⌈N·fpir⌉``: the threshold ``τ`` is the
    ``k``-th largest score among all (probe, template) pairs whose identities differ, and the
    result is the fraction of mated probes whose mate score is ``> τ`` (no rank condition).

    Raises:
        ValueError: no mated probes, ``fpir`` outside ``(0, 1)``, or ``k`` larger than the number
            of non-mated pairs.
    """
    fpir = check_rate("fpir", fpir)
    templates, template_ids = gallery_templates(gallery, gallery_ids)
    p = _unit_rows("probes", probes)
    if p.shape[1] != templates.shape[1]:
        raise ValueError(f"probes must have d={templates.shape[1]} columns like gallery, got {p.shape[1]}")
    pids = to_numpy(probe_ids)
    if pids.shape != (p.shape[0],) or not np.issubdtype(pids.dtype, np.integer):
        raise ValueError(
            f"probe_ids must be an integer array with one id per probe ({p.shape[0]}), got shape {pids.shape}"
        )
    scores = p @ templates.T
    is_mate = pids[:, None] == template_ids[None, :]
    mated = is_mate.any(axis=1)
    if not mated.any():
        raise ValueError("probe_ids must include mated probes (ids enrolled in gallery_ids), got none")
    non_mated_scores = scores[~is_mate]
    k = math.ceil(p.shape[0] * fpir)
    if k > non_mated_scores.size:
        raise ValueError(
            f"fpir={fpir:g} asks for the {k}-th largest of only {non_mated_scores.size} non-mated pair scores"
        )
    tau = np.partition(non_mated_scores, non_mated_scores.size - k)[non_mated_scores.size - k]
    mate_scores = scores[is_mate]
    return float(np.count_nonzero(mate_scores > tau) / mated.sum())


# ------------------------------------------------------------------------------------------------
# per-identity train / test split of every client
# ------------------------------------------------------------------------------------------------


@dataclass
class PersonalisedSplit:
    """Each client's training (= enrolment) data and held-out test images, in client order."""

    clients: list[ClientData]
    test: list[FaceSet]

    def __post_init__(self) -> None:
        if len(self.clients) != len(self.test) or not self.clients:
            raise ValueError(
                f"clients and test must be non-empty lists of equal length, got {len(self.clients)} and {len(self.test)}"
            )
        seen: dict[int, int] = {}
        for c, data in enumerate(self.clients):
            for identity in data.identities:
                if identity in seen:
                    raise ValueError(
                        f"identity {identity} is held by clients {seen[identity]} and {c}; the personalised protocols "
                        "need every identity on one client"
                    )
                seen[identity] = c
        for c, (data, test) in enumerate(zip(self.clients, self.test)):
            extra = sorted(set(test.labels.tolist()) - set(data.identities))
            if extra:
                raise ValueError(f"client {c}'s test images hold identities it does not train on: {extra[:10]}")


def split_clients(
    clients: Sequence[ClientData | FaceSet],
    train_count: int | None = None,
    train_fraction: float | None = None,
    seed: int = 0,
) -> PersonalisedSplit:
    """Split every client's images per identity into training and test parts
    (`federated_core.data.split.split_images_per_identity`; FedFR: ``train_count=60`` of 100).

    Client ``c`` is split with seed ``(seed, c)``; local classes keep the order of the input
    `ClientData` (a `FaceSet` gets classes in increasing identity id).
    """
    from federated_core.data.split import split_images_per_identity

    check_count("seed", seed, 0)
    train_parts, test_parts = [], []
    for c, client in enumerate(clients):
        faces = client.faces if isinstance(client, ClientData) else client
        if not isinstance(faces, FaceSet):
            raise ValueError(f"clients[{c}] must be a ClientData or a FaceSet, got {type(client).__name__}")
        rng = np.random.default_rng([int(seed), c])
        train, test = split_images_per_identity(faces, train_fraction=train_fraction, train_count=train_count, seed=rng)
        label_map = client.label_map if isinstance(client, ClientData) else None
        train_parts.append(ClientData(train, label_map) if label_map is not None else ClientData.from_faces(train))
        test_parts.append(test)
    return PersonalisedSplit(train_parts, test_parts)


# ------------------------------------------------------------------------------------------------
# one client's metrics from embeddings
# ------------------------------------------------------------------------------------------------


def _sample_pairs(total: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or total <= limit:
        return np.arange(total, dtype=np.int64)
    return np.sort(rng.choice(total, size=limit, replace=False)).astype(np.int64)


def fedfr_verification_pairs(
    labels: Any,
    local_identities: Sequence[int] | np.ndarray,
    max_genuine: int | None = None,
    max_impostor: int | None = None,
    seed: int | np.random.Generator = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FedFR's per-client 1:1 pairs over test images with identity ``labels``: every pair of two
    images of one local identity (genuine) and every (local image, image of a non-local identity)
    pair (impostor); each kind subsampled uniformly without replacement to ``max_*`` if given.

    Returns ``(i, j, is_same)`` in random order (so the contiguous folds of the 10-fold accuracy
    mix both kinds).
    """
    y = to_numpy(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got dtype {y.dtype} shape {y.shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_count("seed", seed, 0))
    local = np.isin(y, np.asarray(list(local_identities), dtype=np.int64))
    local_index, other_index = np.flatnonzero(local), np.flatnonzero(~local)
    gi, gj = [], []
    for identity in np.unique(y[local]):
        rows = np.flatnonzero(y == identity)
        a, b = np.triu_indices(rows.size, k=1)
        gi.append(rows[a])
        gj.append(rows[b])
    gi_all = np.concatenate(gi) if gi else np.zeros(0, np.int64)
    gj_all = np.concatenate(gj) if gj else np.zeros(0, np.int64)
    keep = _sample_pairs(gi_all.size, max_genuine, rng)
    gi_all, gj_all = gi_all[keep], gj_all[keep]
    flat = _sample_pairs(local_index.size * other_index.size, max_impostor, rng)
    ii, ij = local_index[flat // max(1, other_index.size)], other_index[flat % max(1, other_index.size)]
    i = np.r_[gi_all, ii].astype(np.int64)
    j = np.r_[gj_all, ij].astype(np.int64)
    is_same = np.r_[np.ones(gi_all.size, bool), np.zeros(ii.size, bool)]
    order = rng.permutation(i.size)
    return i[order], j[order], is_same[order]


def _identification(
    enrol: np.ndarray,
    enrol_ids: np.ndarray,
    probes: np.ndarray,
    probe_ids: np.ndarray,
    fpirs: Sequence[float],
    fpir_rule: str,
) -> dict[str, Any]:
    mated = np.isin(probe_ids, enrol_ids)
    num_mated, num_non_mated = int(mated.sum()), int((~mated).sum())
    out: dict[str, Any] = {"fpir_rule": fpir_rule, "mated_probes": num_mated, "non_mated_probes": num_non_mated}
    out["rank1"] = rank1(enrol, enrol_ids, probes, probe_ids) if num_mated else None
    tpir, unsupported = {}, []
    for fpir in fpirs:
        if fpir_rule == "nist":
            ok = num_mated > 0 and num_non_mated > 0 and fpir >= 1.0 / num_non_mated
            value = tpir_at_fpir(enrol, enrol_ids, probes, probe_ids, fpir) if ok else None
        else:
            templates = np.unique(enrol_ids).size
            ok = num_mated > 0 and math.ceil(len(probe_ids) * fpir) <= len(probe_ids) * templates - num_mated
            value = tpir_at_fpir_fedfr_pairs(enrol, enrol_ids, probes, probe_ids, fpir) if ok else None
        if ok:
            tpir[far_key(fpir)] = value
        else:
            unsupported.append(float(fpir))
    out["tpir_at_fpir"] = tpir
    out["unsupported_fpirs"] = unsupported
    return out


def _check_rule(fpir_rule: str) -> str:
    if fpir_rule not in FPIR_RULES:
        raise ValueError(f"fpir_rule must be one of {FPIR_RULES}, got {fpir_rule!r}")
    return fpir_rule


def fedfr_client_metrics(
    probes: Any,
    probe_ids: Any,
    enrol: Any,
    enrol_ids: Any,
    fars: Sequence[float] = FEDFR_FARS,
    fpirs: Sequence[float] = FEDFR_FPIRS,
    fpir_rule: str = "nist",
    max_genuine: int | None = None,
    max_impostor: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One client's FedFR personalised metrics from its model's embeddings.

    Args:
        probes, probe_ids: embeddings ``[P, d]`` of every client's test images and their identities.
        enrol, enrol_ids: embeddings of this client's own training images (its local identities).
        fars, fpirs: targets (those the pair / probe counts cannot support are listed as unsupported).
        fpir_rule: ``"nist"`` or the non-standard ``"fedfr-pairs"`` (module docstring).
        max_genuine, max_impostor: cap the 1:1 pairs (uniform subsample), None = all.
        seed: for the pair subsample and the pair order.
    """
    fpir_rule = _check_rule(fpir_rule)
    probes, enrol = to_numpy(probes), to_numpy(enrol)
    probe_ids, enrol_ids = to_numpy(probe_ids).astype(np.int64), to_numpy(enrol_ids).astype(np.int64)
    fars = [check_rate("fars", f) for f in fars]
    fpirs = [check_rate("fpirs", f) for f in fpirs]
    local = np.unique(enrol_ids)
    i, j, is_same = fedfr_verification_pairs(probe_ids, local, max_genuine, max_impostor, seed)
    num_genuine, num_impostor = int(is_same.sum()), int((~is_same).sum())
    verification: dict[str, Any] = {"num_genuine": num_genuine, "num_impostor": num_impostor}
    if num_genuine and num_impostor:
        scores = pair_scores(probes, i, j)
        supported = supported_fars(num_impostor, fars)
        verification["auroc"] = auroc(scores, is_same)
        verification["tar_at_far"] = {far_key(far): tar_at_far(scores, is_same, far) for far in supported}
        verification["unsupported_fars"] = [far for far in fars if far not in supported]
    else:
        verification.update({"auroc": None, "tar_at_far": {}, "unsupported_fars": fars})
    return {
        "local_identities": int(local.size),
        "verification": verification,
        "identification": _identification(enrol, enrol_ids, probes, probe_ids, fpirs, fpir_rule),
    }


def own_identity_scores(probes: Any, probe_ids: Any, enrol: Any, enrol_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """FedFS's per-client scores: the cosine of every probe to every local identity's template
    (`gallery_templates` of the enrolment embeddings); genuine when the probe is that identity.
    Returns ``(scores, is_same)`` flattened over (template, probe)."""
    templates, template_ids = gallery_templates(enrol, enrol_ids)
    p = _unit_rows("probes", probes)
    ids = to_numpy(probe_ids).astype(np.int64)
    scores = templates @ p.T
    return scores.reshape(-1), (template_ids[:, None] == ids[None, :]).reshape(-1)


def fedfs_client_metrics(
    probes: Any,
    probe_ids: Any,
    enrol: Any,
    enrol_ids: Any,
    fpirs: Sequence[float] = FEDFS_FPIRS,
    fpir_rule: str = "nist",
) -> dict[str, Any]:
    """One client's FedFS personalised metrics: AUROC of its own identity vs. all others
    (`own_identity_scores`) and TPIR@FPIR (default 1e-3) with its local gallery."""
    fpir_rule = _check_rule(fpir_rule)
    probes, enrol = to_numpy(probes), to_numpy(enrol)
    probe_ids, enrol_ids = to_numpy(probe_ids).astype(np.int64), to_numpy(enrol_ids).astype(np.int64)
    fpirs = [check_rate("fpirs", f) for f in fpirs]
    scores, is_same = own_identity_scores(probes, probe_ids, enrol, enrol_ids)
    both = bool(is_same.any()) and not bool(is_same.all())
    return {
        "local_identities": int(np.unique(enrol_ids).size),
        "auroc": auroc(scores, is_same) if both else None,
        "num_genuine": int(is_same.sum()),
        "num_impostor": int((~is_same).sum()),
        "identification": _identification(enrol, enrol_ids, probes, probe_ids, fpirs, fpir_rule),
    }


# ------------------------------------------------------------------------------------------------
# the protocols over all clients
# ------------------------------------------------------------------------------------------------


@dataclass
class PersonalisedReport:
    """Per-client metrics and their means over the clients that support each number.

    ``mean`` maps a flat metric name (``"verification.tar_at_far.0.01"``, ``"auroc"``,
    ``"identification.tpir_at_fpir.0.001"``, ...) to ``{"mean", "std", "clients"}``.
    """

    protocol: str
    fpir_rule: str
    per_client: list[dict[str, Any]]
    mean: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "fpir_rule": self.fpir_rule,
            "mean": self.mean,
            "per_client": self.per_client,
        }


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
        out[prefix] = float(value)


def average_over_clients(per_client: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean (and population std) of every numeric metric over the clients that report it."""
    values: dict[str, list[float]] = {}
    for metrics in per_client:
        flat: dict[str, float] = {}
        _flatten("", metrics, flat)
        for key, v in flat.items():
            if (
                key in ("client", "local_identities")
                or key.endswith("_probes")
                or key.startswith("num_")
                or ".num_" in key
            ):
                continue
            values.setdefault(key, []).append(v)
    return {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "clients": len(v)} for k, v in sorted(values.items())
    }


def evaluate_personalised(
    model_for_client: Callable[[int], nn.Module],
    split: PersonalisedSplit,
    protocol: str = "fedfr",
    fars: Sequence[float] = FEDFR_FARS,
    fpirs: Sequence[float] | None = None,
    fpir_rule: str = "nist",
    max_genuine: int | None = None,
    max_impostor: int | None = 1_000_000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> PersonalisedReport:
    """Run a personalised protocol over every client of ``split``.

    Args:
        model_for_client: client index -> the model that client evaluates with (e.g.
            ``lambda c: result.backbone`` for Θ_g, or ``lambda c: method.personalised_model(
            result.client_states[c])``). A model object returned for several clients is
            embedded once.
        split: training (enrolment) data and test images of each client (`split_clients`).
        protocol: ``"fedfr"`` or ``"fedfs"``.
        fars: 1:1 FAR targets (FedFR protocol only).
        fpirs: 1:N FPIR targets (default: FedFR's 1e-1 … 1e-5, FedFS's 1e-3).
        fpir_rule: ``"nist"`` or the non-standard ``"fedfr-pairs"``.
        max_genuine, max_impostor: caps on FedFR's 1:1 pairs per client.
        seed: pair subsampling / ordering (client ``c`` uses ``seed + c``).
        device: where the models embed.
        progress: tqdm bar over clients.
    """
    from federated_core.models import embed

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    fpir_rule = _check_rule(fpir_rule)
    if fpirs is None:
        fpirs = FEDFR_FPIRS if protocol == "fedfr" else FEDFS_FPIRS
    test = FaceSet.concat(list(split.test))
    probe_ids = test.labels.numpy()
    cache: dict[int, tuple[nn.Module, np.ndarray]] = {}
    per_client = []
    for c in tqdm(range(len(split.clients)), desc=f"personalised ({protocol})", disable=not progress, leave=False):
        model = model_for_client(c)
        key = id(model)
        if key not in cache:
            cache[key] = (model, embed(model, test, device=device).numpy())  # keep the model alive: ids stay unique
        probes = cache[key][1]
        enrol_faces = split.clients[c].faces
        enrol = embed(model, enrol_faces, device=device).numpy()
        enrol_ids = enrol_faces.labels.numpy()
        if protocol == "fedfr":
            metrics = fedfr_client_metrics(
                probes, probe_ids, enrol, enrol_ids, fars, fpirs, fpir_rule, max_genuine, max_impostor, seed + c
            )
        else:
            metrics = fedfs_client_metrics(probes, probe_ids, enrol, enrol_ids, fpirs, fpir_rule)
        per_client.append({"client": c, **metrics})
    return PersonalisedReport(protocol, fpir_rule, per_client, average_over_clients(per_client))


__all__ = [
    "FPIR_RULES",
    "PROTOCOLS",
    "PersonalisedReport",
    "PersonalisedSplit",
    "average_over_clients",
    "evaluate_personalised",
    "fedfr_client_metrics",
    "fedfr_verification_pairs",
    "fedfs_client_metrics",
    "own_identity_scores",
    "split_clients",
    "tpir_at_fpir_fedfr_pairs",
]
