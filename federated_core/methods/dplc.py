"""Differentially Private Local Clustering (DPLC, Algorithm 1 of PrivacyFace, Meng et al. ICLR 2022).

A client's class centers ``W = {w_1..w_n}`` (unit vectors) are summarised by at most ``Q`` cluster
centers. For each query ``q``: every remaining center's neighbourhood ``S_i = {j in I :
angle(w_i, w_j) <= rho}`` (line 3), the largest one ``S`` (line 4, ties -> smallest index), its mean
``p = mean_{i in S} w_i`` (line 5); if ``|S| >= T`` (line 6) release ``p_hat = (p + v) / ||p + v||``
with ``v ~ N(0, sigma^2 I_d)`` (lines 7-8, ``sigma`` from Theorem 2 via the accountants) and drop
the covered centers ``{i in I : angle(w_i, p / ||p||) <= rho}`` from ``I`` (line 8); else stop.
(Line 8 is garbled in the published PDF; the paper's Fig. 4c -- one set of Q = 3 cluster sizes for
every epsilon -- implies the clean ``p / ||p||``. `accountants.dplc_reference` removes around the
noisy ``p_hat`` instead; ``DPLCConfig(removal="release")`` does the same, and the two agree for
``Q = 1``.)

The implementation is split in two so that each half can be checked on its own:

* `local_clustering` -- lines 1-6 and the removal of line 8: deterministic, noise-free, exposed
  for the accountants' end-to-end audit (the selection of ``S`` and the threshold ``T`` are *not*
  privatised by Theorem 2; see DESIGN §6).
* `release_clusters` -- line 7 and the normalisation of line 8: the Gaussian mechanism with the
  noise scale of Theorem 2 computed by `accountants` (tight or weak bound, classic or analytic
  calibration), one `GaussianEvent(noise_multiplier = sigma / sensitivity)` per release.

`dplc` runs both (or, with ``removal="release"``, draws each ``p_hat`` inside the loop);
`dplc_mechanism` wraps it as a numpy ``(centers, rng) -> p_hat`` function for the accountants'
distinguishing games. It agrees exactly with `accountants.dplc_algorithm1` (same clusters; same
outputs from the same standard normal draws), which the tests check.

Blocked computation: the ``n x n`` angle matrix is never held in memory. Neighbour counts are
computed once in row blocks of ``W @ W_active^T`` (``O(n^2 d)``) and then updated incrementally
after each removal (``O(n |removed| d)``), so the whole algorithm is ``O(n^2 d)`` -- within
Property 1's ``O(Q n^2)`` -- and ``n = 100k`` runs on a GPU with a bounded working set
(``max_block_elements``). Angles are compared through cosines (``angle <= rho`` iff ``cos >=
cos(rho)`` on ``[0, pi]``); pairs within floating-point rounding of the boundary may be
classified differently from an implementation that compares ``arccos`` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

CALIBRATIONS = ("analytic", "classic")
SENSITIVITY_BOUNDS = ("tight", "weak")
REMOVALS = ("mean", "release")
DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 25  # 32M cosines per block: 256 MiB in float64


# --------------------------------------------------------------------------------------------
# parameter validation
# --------------------------------------------------------------------------------------------


def _check_rho(rho: float) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (0.0 < float(rho) <= math.pi):
        raise ValueError(f"rho must be a margin in radians with 0 < rho <= pi, got {rho!r}")
    return float(rho)


def _check_max_queries(max_queries: int) -> int:
    if isinstance(max_queries, bool) or not isinstance(max_queries, (int, np.integer)) or max_queries < 1:
        raise ValueError(f"max_queries (Q) must be an integer >= 1, got {max_queries!r}")
    return int(max_queries)


def check_privacy_parameters(epsilon: float, delta: float) -> None:
    """Raise `ValueError` unless ``epsilon > 0`` is finite and ``0 < delta < 1``."""
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, (int, float))
        or not (math.isfinite(float(epsilon)) and float(epsilon) > 0)
    ):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0.0 < float(delta) < 1.0):
        raise ValueError(f"delta must satisfy 0 < delta < 1, got {delta!r}")


def resolve_min_cluster_size(min_cluster_size: int | float, num_classes: int) -> int:
    """The minimum cluster size ``T`` for a client holding ``num_classes`` classes.

    ``min_cluster_size`` is either an absolute count (an ``int >= 1``; the paper uses 512 with 7k
    classes per client) or a fraction of the client's classes (a ``float`` in ``(0, 1]``), giving
    ``max(1, ceil(fraction * num_classes))``. A client with 20 classes can never reach ``T = 512``,
    so small-scale runs use the fractional form.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    if isinstance(min_cluster_size, bool):
        raise ValueError(f"min_cluster_size (T) must be an int >= 1 or a float in (0, 1], got {min_cluster_size!r}")
    if isinstance(min_cluster_size, (int, np.integer)):
        if min_cluster_size < 1:
            raise ValueError(f"min_cluster_size (T) as an absolute count must be >= 1, got {min_cluster_size}")
        return int(min_cluster_size)
    if isinstance(min_cluster_size, (float, np.floating)):
        frac = float(min_cluster_size)
        if not (0.0 < frac <= 1.0):
            raise ValueError(
                f"min_cluster_size (T) as a fraction of the client's classes must be in (0, 1], got {frac}"
            )
        return max(1, math.ceil(frac * int(num_classes) - 1e-9))
    raise ValueError(f"min_cluster_size (T) must be an int >= 1 or a float in (0, 1], got {min_cluster_size!r}")


def _as_centers(
    centers: torch.Tensor | np.ndarray, dtype: torch.dtype, device: torch.device | str | None
) -> torch.Tensor:
    w = torch.as_tensor(centers)
    if w.dim() != 2 or w.shape[1] < 1:
        raise ValueError(f"centers must be a 2-d array [n, d] with d >= 1, got shape {tuple(w.shape)}")
    if not (w.is_floating_point()):
        raise ValueError(f"centers must be floating point, got dtype {w.dtype}")
    w = w.detach().to(device=device if device is not None else w.device, dtype=dtype)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("centers must be finite (found NaN or inf)")
    norms = torch.linalg.vector_norm(w, dim=1)
    if w.shape[0] and bool((norms == 0).any()):
        bad = int(torch.nonzero(norms == 0)[0])
        raise ValueError(f"centers must be non-zero vectors (row {bad} has norm 0); they are normalised to unit length")
    return w / norms.unsqueeze(1)


# --------------------------------------------------------------------------------------------
# clustering (Algorithm 1 without the noise)
# --------------------------------------------------------------------------------------------


@dataclass
class DPLCClustering:
    """The deterministic part of DPLC on one client's centers.

    Attributes:
        centers: ``[k, d]`` clean cluster means ``p`` (line 5; *not* normalised), ``k <= Q``.
        sizes: ``[k]`` int64 ``|S|`` of each released cluster (each ``>= T``).
        members: ``k`` index tensors, the neighbourhood ``S`` (indices into the input rows).
        covered: ``k`` index tensors, the rows removed from ``I`` after each query (line 8).
        anchors: ``[k]`` int64 index of the center whose neighbourhood is ``S``.
        num_classes, rho, min_cluster_size (the resolved ``T``), max_queries: the inputs.
        stopped_below_threshold: the loop ended because the largest remaining neighbourhood had
            fewer than ``T`` members (line 10), rather than after ``Q`` queries or with ``I`` empty.
        last_largest: size of the largest neighbourhood at the last query evaluated (``0`` if
            ``I`` was empty).
    """

    centers: torch.Tensor
    sizes: torch.Tensor
    members: list[torch.Tensor]
    covered: list[torch.Tensor]
    anchors: torch.Tensor
    num_classes: int
    rho: float
    min_cluster_size: int
    max_queries: int
    stopped_below_threshold: bool
    last_largest: int

    @property
    def num_clusters(self) -> int:
        return int(self.sizes.shape[0])

    def remaining(self) -> torch.Tensor:
        """Indices of the centers no query covered."""
        mask = torch.ones(self.num_classes, dtype=torch.bool)
        for c in self.covered:
            mask[c.cpu()] = False
        return torch.nonzero(mask).flatten()


def _row_block(num_cols: int, max_block_elements: int) -> int:
    return max(1, max_block_elements // max(1, num_cols))


def _neighbour_counts(rows: torch.Tensor, cols: torch.Tensor, cos_rho: float, max_block_elements: int) -> torch.Tensor:
    """For each row ``r``: ``#{c in cols : r . c >= cos_rho}``, in row blocks of ``rows @ cols^T``."""
    counts = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
    if rows.shape[0] == 0 or cols.shape[0] == 0:
        return counts
    step = _row_block(cols.shape[0], max_block_elements)
    cols_t = cols.t()
    for start in range(0, rows.shape[0], step):
        block = rows[start : start + step] @ cols_t
        counts[start : start + step] = (block >= cos_rho).sum(dim=1)
    return counts


@dataclass
class _ClusteringLog:
    """Per-query outputs of `local_clustering`'s greedy loop, in query order."""

    centers: list[torch.Tensor] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    members: list[torch.Tensor] = field(default_factory=list)
    covered: list[torch.Tensor] = field(default_factory=list)
    anchors: list[int] = field(default_factory=list)
    stopped: bool = False
    last_largest: int = 0

    def add(self, p: torch.Tensor, size: int, s_idx: torch.Tensor, removed: torch.Tensor, anchor: int) -> None:
        """Record one released cluster (its mean, |S|, S, the covered rows and its anchor)."""
        self.centers.append(p)
        self.sizes.append(size)
        self.members.append(s_idx.cpu())
        self.covered.append(removed.cpu())
        self.anchors.append(anchor)


def local_clustering(
    centers: torch.Tensor | np.ndarray,
    rho: float = 1.3,
    min_cluster_size: int | float = 512,
    max_queries: int = 1,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
    progress: bool = False,
    removal_direction: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> DPLCClustering:
    """Lines 1-6 and the removal of line 8 of Algorithm 1 (PrivacyFace): the greedy spherical-cap
    clustering of Definition 5, without noise.

    Removal (line 8): by default the centers within ``rho`` of the clean mean's direction
    ``p / ||p||`` are removed, so the clustering does not depend on the noise (as the paper's
    Fig. 4c implies: its three Q = 3 cluster sizes are the same for every epsilon).
    ``removal_direction(p, |S|)`` replaces that direction (e.g. by the released ``p_hat``, which
    `dplc` does with ``removal="release"``, the choice of `accountants.dplc_reference`).

    Args:
        centers: ``[n, d]`` class centers (rows are normalised here, as Theorem 2 assumes).
        rho: cluster margin in radians, ``0 < rho <= pi``.
        min_cluster_size: ``T``; an ``int`` count or a ``float`` fraction of ``n`` (see
            `resolve_min_cluster_size`).
        max_queries: ``Q >= 1``.
        dtype: compute dtype (float64 by default: exact agreement with a float64 reference).
        device: where to compute (``None``: where ``centers`` live).
        max_block_elements: the most cosines held at once (blocks of ``W @ W^T``).
        progress: tqdm bar over the blocks of the first count.
    """
    rho = _check_rho(rho)
    max_queries = _check_max_queries(max_queries)
    if isinstance(max_block_elements, bool) or not isinstance(max_block_elements, int) or max_block_elements < 1:
        raise ValueError(f"max_block_elements must be an integer >= 1, got {max_block_elements!r}")
    w = _as_centers(centers, dtype, device)
    n, d = w.shape
    threshold = resolve_min_cluster_size(min_cluster_size, n)
    cos_rho = math.cos(rho)
    counts = _initial_neighbour_counts(w, cos_rho, max_block_elements, progress)
    log = _greedy_queries(w, counts, cos_rho, threshold, max_queries, max_block_elements, removal_direction)
    return DPLCClustering(
        centers=torch.stack(log.centers) if log.centers else w.new_zeros((0, d)),
        sizes=torch.tensor(log.sizes, dtype=torch.int64),
        members=log.members,
        covered=log.covered,
        anchors=torch.tensor(log.anchors, dtype=torch.int64),
        num_classes=n,
        rho=rho,
        min_cluster_size=threshold,
        max_queries=max_queries,
        stopped_below_threshold=log.stopped,
        last_largest=log.last_largest,
    )


def _initial_neighbour_counts(w: torch.Tensor, cos_rho: float, max_block_elements: int, progress: bool) -> torch.Tensor:
    """Line 3: every center's neighbour count over all centers, in row blocks of ``W @ W^T``."""
    n = w.shape[0]
    counts = torch.zeros(n, dtype=torch.int64, device=w.device)
    step = _row_block(n, max_block_elements)
    w_t = w.t()
    for start in tqdm(range(0, n, step), desc="DPLC neighbour counts", disable=not progress, leave=False):
        block = w[start : start + step] @ w_t
        counts[start : start + step] = (block >= cos_rho).sum(dim=1)
    return counts


def _greedy_queries(
    w: torch.Tensor,
    counts: torch.Tensor,
    cos_rho: float,
    threshold: int,
    max_queries: int,
    max_block_elements: int,
    removal_direction: Callable[[torch.Tensor, int], torch.Tensor] | None,
) -> _ClusteringLog:
    """Lines 2-10: up to Q queries over the active set, updating ``counts`` as centers are removed."""
    active = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
    log = _ClusteringLog()
    for _q in range(max_queries):
        active_idx = torch.nonzero(active).flatten()
        if active_idx.numel() == 0:
            log.last_largest = 0
            break
        # Line 4: the largest neighbourhood; torch.argmax returns the first maximum, i.e. the
        # smallest remaining index among ties.
        anchor = int(active_idx[int(torch.argmax(counts[active_idx]))])
        cos_anchor = w[active_idx] @ w[anchor]
        s_idx = active_idx[cos_anchor >= cos_rho]
        size = int(s_idx.numel())
        log.last_largest = size
        if size < threshold:  # line 6 / line 10
            log.stopped = True
            break
        p = w[s_idx].mean(dim=0)  # line 5
        removed = _covered_rows(w, active_idx, p, size, cos_rho, removal_direction)
        log.add(p, size, s_idx, removed, anchor)
        if removed.numel():
            _remove_covered(w, active, counts, removed, cos_rho, max_block_elements)
    return log


def _covered_rows(
    w: torch.Tensor,
    active_idx: torch.Tensor,
    p: torch.Tensor,
    size: int,
    cos_rho: float,
    removal_direction: Callable[[torch.Tensor, int], torch.Tensor] | None,
) -> torch.Tensor:
    """Line 8: the active rows within rho of ``p / ||p||`` (or of ``removal_direction(p, |S|)``)."""
    if removal_direction is not None:
        direction = removal_direction(p, size).to(device=w.device, dtype=w.dtype)
        return active_idx[(w[active_idx] @ direction) >= cos_rho]
    if float(torch.linalg.vector_norm(p)) > 0:
        cos_p = w[active_idx] @ (p / torch.linalg.vector_norm(p))
        return active_idx[cos_p >= cos_rho]  # line 8: I <- I \ {angle(w_i, p/||p||) <= rho}
    # only possible for rho > pi/2: the mean of S cancels out; nothing is within rho of p
    return active_idx[:0]


def _remove_covered(
    w: torch.Tensor,
    active: torch.Tensor,
    counts: torch.Tensor,
    removed: torch.Tensor,
    cos_rho: float,
    max_block_elements: int,
) -> None:
    """Drop ``removed`` from the active set (in place) and subtract their neighbours from ``counts``."""
    active[removed] = False
    keep = torch.nonzero(active).flatten()
    if keep.numel():
        counts[keep] -= _neighbour_counts(w[keep], w[removed], cos_rho, max_block_elements)


# --------------------------------------------------------------------------------------------
# release (Gaussian mechanism of Theorem 2)
# --------------------------------------------------------------------------------------------


def dplc_noise_scale(
    cluster_size: int,
    rho: float,
    epsilon: float,
    delta: float,
    *,
    calibration: str = "analytic",
    bound: str = "tight",
) -> tuple[float, float]:
    """``(sigma, sensitivity)`` of one DPLC release, both from `accountants`: ``sensitivity =
    dplc_sensitivity(rho, |S|, bound)`` (Theorem 2, or Theorem 3 with ``bound="weak"``) and
    ``sigma = gaussian_sigma(sensitivity, epsilon, delta, method=calibration)`` (line 7 of
    Algorithm 1 with ``calibration="classic"``; the accountants warn when the classic calibration
    is used at ``epsilon >= 1``, outside its proof)."""
    from accountants import dplc_sensitivity, gaussian_sigma

    _check_calibration(epsilon, delta, calibration, bound)
    sensitivity = float(dplc_sensitivity(rho, int(cluster_size), bound=bound))
    sigma = float(gaussian_sigma(sensitivity, float(epsilon), float(delta), method=calibration))
    return sigma, sensitivity


def _tight_sensitivity(rho: float, cluster_size: int) -> float:
    from accountants import dplc_sensitivity

    return float(dplc_sensitivity(rho, int(cluster_size), bound="tight"))


@dataclass
class DPLCRelease:
    """What DPLC outputs for one client: ``k <= Q`` unit vectors ``p_hat`` and how they were made.

    ``sigmas`` are the noise scales used (calibrated with ``bound``'s sensitivity);
    ``sensitivities`` are Theorem 2's (tight) sensitivities of each release, so that
    ``noise_multipliers = sigmas / sensitivities`` describe the noise actually added relative to
    the true sensitivity (with ``bound="weak"`` the noise is larger than needed and the multiplier
    says so). ``events`` holds one ``GaussianEvent(noise_multiplier)`` per release.
    """

    noisy_centers: torch.Tensor
    sigmas: torch.Tensor
    sensitivities: torch.Tensor
    sizes: torch.Tensor
    noise_multipliers: torch.Tensor
    events: list[Any]
    epsilon: float
    delta: float
    calibration: str
    bound: str
    clustering: DPLCClustering
    removal: str = "mean"

    @property
    def num_releases(self) -> int:
        return int(self.sizes.shape[0])

    def composed_event(self) -> Any | None:
        """All releases of this call as one event (sequential composition, Property 2); ``None``
        when nothing was released (no cluster reached ``T``)."""
        from accountants import ComposedEvent, SelfComposedEvent

        if not self.events:
            return None
        if len(self.events) == 1:
            return self.events[0]
        multipliers = {float(z) for z in self.noise_multipliers.tolist()}
        if len(multipliers) == 1:
            return SelfComposedEvent(self.events[0], len(self.events))
        return ComposedEvent(list(self.events))

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per release: sigma, sensitivity, cluster size, noise multiplier."""
        return [
            {
                "sigma": float(self.sigmas[i]),
                "sensitivity": float(self.sensitivities[i]),
                "cluster_size": int(self.sizes[i]),
                "noise_multiplier": float(self.noise_multipliers[i]),
                "epsilon": self.epsilon,
                "delta": self.delta,
                "calibration": self.calibration,
                "bound": self.bound,
            }
            for i in range(self.num_releases)
        ]


def standard_normal_noise(
    count: int, dim: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``[count, dim]`` standard normal draws on the CPU (same seed -> same noise on every device)."""
    return torch.randn((count, dim), generator=generator, dtype=dtype, device="cpu")


def _check_calibration(epsilon: float, delta: float, calibration: str, bound: str) -> None:
    check_privacy_parameters(epsilon, delta)
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    if bound not in SENSITIVITY_BOUNDS:
        raise ValueError(f"bound must be one of {SENSITIVITY_BOUNDS}, got {bound!r}")


def _make_release(
    clustering: DPLCClustering,
    noisy: torch.Tensor,
    sigmas: list[float],
    epsilon: float,
    delta: float,
    calibration: str,
    bound: str,
    removal: str,
) -> DPLCRelease:
    from accountants import GaussianEvent

    tight = [_tight_sensitivity(clustering.rho, size) for size in clustering.sizes.tolist()]
    multipliers = [s / t for s, t in zip(sigmas, tight)]
    return DPLCRelease(
        noisy_centers=noisy,
        sigmas=torch.tensor(sigmas, dtype=torch.float64),
        sensitivities=torch.tensor(tight, dtype=torch.float64),
        sizes=clustering.sizes.clone(),
        noise_multipliers=torch.tensor(multipliers, dtype=torch.float64),
        events=[GaussianEvent(z_, unit="class-center") for z_ in multipliers],
        epsilon=float(epsilon),
        delta=float(delta),
        calibration=calibration,
        bound=bound,
        clustering=clustering,
        removal=removal,
    )


def release_clusters(
    clustering: DPLCClustering,
    epsilon: float,
    delta: float,
    *,
    calibration: str = "analytic",
    bound: str = "tight",
    generator: torch.Generator | None = None,
    standard_noise: torch.Tensor | np.ndarray | None = None,
) -> DPLCRelease:
    """Lines 7-8 of Algorithm 1: ``p_hat = (p + v) / ||p + v||`` with ``v = sigma * z``,
    ``z ~ N(0, I_d)`` and ``sigma`` of Theorem 2 for each cluster's own ``|S|``.

    Args:
        clustering: the output of `local_clustering`.
        epsilon, delta: per-release budget (Property 2: ``Q`` releases cost ``(Q eps, Q delta)``).
        calibration: ``"analytic"`` (Balle & Wang 2018) or ``"classic"`` (Definition 3; proven only
            for ``epsilon < 1``).
        bound: ``"tight"`` (Theorem 2) or ``"weak"`` (Theorem 3).
        generator: CPU `torch.Generator` for ``z`` (required unless ``standard_noise`` is given).
        standard_noise: optional ``[k, d]`` standard normal draws to use instead (``k`` = number of
            clusters), e.g. to reproduce another implementation's draws.
    """
    _check_calibration(epsilon, delta, calibration, bound)
    k = clustering.num_clusters
    d = clustering.centers.shape[1]
    sigmas = [
        dplc_noise_scale(size, clustering.rho, epsilon, delta, calibration=calibration, bound=bound)[0]
        for size in clustering.sizes.tolist()
    ]
    if standard_noise is None:
        if generator is None:
            raise ValueError("release_clusters needs a torch.Generator (generator=...) or standard_noise")
        z = standard_normal_noise(k, d, generator, dtype=clustering.centers.dtype)
    else:
        z = torch.as_tensor(standard_noise)
        if tuple(z.shape) != (k, d):
            raise ValueError(f"standard_noise must have shape ({k}, {d}), got {tuple(z.shape)}")
    z = z.to(device=clustering.centers.device, dtype=clustering.centers.dtype)
    sigma_t = torch.tensor(sigmas, dtype=clustering.centers.dtype, device=clustering.centers.device)
    noisy = clustering.centers + sigma_t.unsqueeze(1) * z
    noisy = noisy / torch.linalg.vector_norm(noisy, dim=1, keepdim=True)
    return _make_release(clustering, noisy, sigmas, epsilon, delta, calibration, bound, "mean")


@dataclass(frozen=True)
class DPLCConfig:
    """Parameters of Algorithm 1 (defaults: PrivacyFace §4 -- rho = 1.3, Q = 1, eps = 1, T = 512;
    ``delta`` must be set by the caller, the paper uses ``1 / |D|``).

    ``removal``: which direction line 8 removes covered centers around -- ``"mean"`` (the clean
    ``p / ||p||``: the paper, whose Fig. 4c reports one set of Q = 3 cluster sizes for every
    epsilon) or ``"release"`` (the noisy ``p_hat``, as `accountants.dplc_reference.dplc` does; the
    later queries then depend on the earlier noise). Both coincide for ``Q = 1``.
    """

    rho: float = 1.3
    min_cluster_size: int | float = 512
    max_queries: int = 1
    epsilon: float = 1.0
    delta: float = 1e-5
    calibration: str = "analytic"
    bound: str = "tight"
    removal: str = "mean"
    dtype: str = "float64"
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS

    def __post_init__(self) -> None:
        _check_rho(self.rho)
        _check_max_queries(self.max_queries)
        resolve_min_cluster_size(self.min_cluster_size, 1)
        _check_calibration(self.epsilon, self.delta, self.calibration, self.bound)
        if self.removal not in REMOVALS:
            raise ValueError(f"removal must be one of {REMOVALS}, got {self.removal!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32


def dplc(
    centers: torch.Tensor | np.ndarray,
    config: DPLCConfig,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    standard_noise: torch.Tensor | np.ndarray | None = None,
    progress: bool = False,
) -> DPLCRelease:
    """Algorithm 1 of PrivacyFace end to end.

    With ``config.removal == "mean"``: `local_clustering` then `release_clusters`. With
    ``"release"``: each query's ``p_hat`` is drawn inside the loop and line 8 removes the centers
    within ``rho`` of it. ``standard_noise`` (optional, ``[>= k, d]``) supplies the standard
    normal draws row by row in query order; otherwise ``generator`` draws them.
    """
    if config.removal == "mean":
        clustering = local_clustering(
            centers,
            config.rho,
            config.min_cluster_size,
            config.max_queries,
            dtype=config.torch_dtype,
            device=device,
            max_block_elements=config.max_block_elements,
            progress=progress,
        )
        if standard_noise is not None:
            standard_noise = torch.as_tensor(standard_noise)[: clustering.num_clusters]
        return release_clusters(
            clustering,
            config.epsilon,
            config.delta,
            calibration=config.calibration,
            bound=config.bound,
            generator=generator,
            standard_noise=standard_noise,
        )
    if standard_noise is None and generator is None:
        raise ValueError("dplc needs a torch.Generator (generator=...) or standard_noise")
    noise = None if standard_noise is None else torch.as_tensor(standard_noise)
    noisy: list[torch.Tensor] = []
    sigmas: list[float] = []

    def release_one(p: torch.Tensor, size: int) -> torch.Tensor:
        sigma = dplc_noise_scale(
            size, config.rho, config.epsilon, config.delta, calibration=config.calibration, bound=config.bound
        )[0]
        if noise is not None:
            if len(noisy) >= noise.shape[0] or noise.dim() != 2 or noise.shape[1] != p.shape[0]:
                raise ValueError(
                    f"standard_noise must have shape (>= {len(noisy) + 1}, {p.shape[0]}), got {tuple(noise.shape)}"
                )
            z = noise[len(noisy)]
        else:
            z = standard_normal_noise(1, p.shape[0], generator, dtype=p.dtype)[0]
        v = p + sigma * z.to(device=p.device, dtype=p.dtype)
        p_hat = v / torch.linalg.vector_norm(v)
        noisy.append(p_hat)
        sigmas.append(sigma)
        return p_hat

    clustering = local_clustering(
        centers,
        config.rho,
        config.min_cluster_size,
        config.max_queries,
        dtype=config.torch_dtype,
        device=device,
        max_block_elements=config.max_block_elements,
        progress=progress,
        removal_direction=release_one,
    )
    d = clustering.centers.shape[1]
    stacked = torch.stack(noisy) if noisy else clustering.centers.new_zeros((0, d))
    return _make_release(
        clustering, stacked, sigmas, config.epsilon, config.delta, config.calibration, config.bound, "release"
    )


def dplc_mechanism(
    config: DPLCConfig, *, device: torch.device | str | None = None
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Algorithm 1 as a plain mechanism ``(centers [n, d], rng) -> p_hat [k, d]`` (numpy in,
    numpy out, ``k <= Q``; the noise of query ``q`` is row ``q`` of
    ``rng.standard_normal((Q, d))``), so that the accountants' empirical audit (distinguishing
    games on neighbouring sets of class centers) can run this implementation without importing
    model code."""

    def mechanism(centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((config.max_queries, np.asarray(centers).shape[1]))
        return dplc(centers, config, device=device, standard_noise=z).noisy_centers.cpu().numpy()

    return mechanism
