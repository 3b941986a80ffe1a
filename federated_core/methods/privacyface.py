"""PrivacyFace (Meng et al., ICLR 2022), Algorithm 2, and its baselines / privacy variants.

Each round has two phases (DESIGN §3):

* ``"clusters"`` (Alg. 2 line 4): each participant runs DPLC (Algorithm 1,
  `federated_core.methods.dplc`) on its current class centers ``W_k`` and uploads at most ``Q``
  released cluster centers; the server gathers them (line 5).
* ``"train"`` (lines 3, 5-8): the server sends the global backbone and relays every gathered
  cluster center (one message, rows tagged with their owner); each client drops its own rows and
  optimises the consensus-aware loss (Eq. 5, `consensus_loss`) on its data, optionally fine-tunes
  on a small public set (§4: "a lightweight public dataset ... to finetune local models before
  gathered by the server"), and uploads its backbone; the server FedAvgs it (line 9). ``W_k``
  never leaves the client.

What a client releases (``release``; one registered name each):

============================  =====================  ==========================================
name                           kind on the wire        DP event of each upload
============================  =====================  ==========================================
``privacyface`` (φ + p̂)        noisy_cluster_centers   GaussianEvent(σ/Δ) per release (Thm. 2)
``privacyface-nonoise`` (φ+p)  cluster_centers         NonPrivateEvent (clean means)
``noisy-centers`` (φ + W̃)      noisy_class_centers     GaussianEvent(σ/2): App. A.2.2's naive DP
``privacyface-e2e``            noisy_cluster_centers   the accountants' end-to-end private DPLC
``release="none"`` (φ)         nothing                 (conventional FL with the same recipe)
``release="random-control"``   noisy_cluster_centers   None: Q random unit vectors drawn
                                                       independently of the data (an ablation:
                                                       how much of φ + p̂'s utility needs p̂'s
                                                       information at all)
============================  =====================  ==========================================

Noise scales come from `accountants` only (`dplc_noise_scale`, `gaussian_sigma`). ``delta=None``
means ``1 / |D_k|`` (the client's number of training images, §4). The minimum cluster size ``T``
(``min_cluster_size``) is an absolute count (the paper's 512 for 7k classes per client) or a
fraction of the client's classes (default 0.1, close to the paper's 512 / 7000 ≈ 0.073 and
reachable by clients with a few dozen classes); the resolved ``T`` of every client is recorded
in its state and in each release's ``meta``.

Release meta: each upload's ``meta["releases"]`` lists ``(client, round, sigma, sensitivity,
cluster_size)`` per released row, so the ledger can compose ``Q·M`` releases per client. Note that
``cluster_size`` and ``sigma`` (which is ``∝ 1/|S|``) are then seen by the server: Theorem 2 does
not cover them (nor the choice of S and the ``|S| >= T`` test; DESIGN §6). Set
``disclose_release_meta=False`` to keep them in the client's own state only (the data-independent
noise multiplier stays on the wire in the event).

``fidelity`` (`federated_core.methods.fidelity`): ``"default"`` is the small-scale setting above
(analytic calibration, ``δ = 1/|D_k|``, ``T = 0.1``, no public set); ``"paper"``
(`privacyface_paper_preset`) is §4's: classic calibration, ``δ = 5e-5``, ``T = 512/7000`` of a
client's classes, ``ρ = 1.3``, ``Q = 1``, ``ε = 1`` and the public fine-tuning step on
`PAPER_PUBLIC_SET`.

``aggregation="fedsgd"`` is App. A.2.1: clients keep the model frozen during the local pass,
upload the average gradient of their loss (kind ``backbone_gradient``) and update ``W_k`` with
their own gradient; the server averages the gradients and takes one SGD step (lr and weight decay
of the run's config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from federated_core.engine.config import FederatedConfig, LocalTrainingConfig
from federated_core.engine.local_sgd import train_local
from federated_core.engine.messages import (
    SERVER,
    Message,
    client_id_of,
    event_to_dict,
    make_message,
    non_private_event,
    register_message_kind,
)
from federated_core.engine.state import ClientData, ClientState, ServerState
from federated_core.methods._centers import CenterMethod, MarginClientModel, init_centers, resolve_center_init
from federated_core.methods.base import BACKBONE_PREFIX, FedAvg, GlobalModel, register_method
from federated_core.methods.consensus_loss import CONSENSUS_KINDS, consensus_loss
from federated_core.methods.dplc import (
    CALIBRATIONS,
    REMOVALS,
    SENSITIVITY_BOUNDS,
    DPLCConfig,
    check_privacy_parameters,
    dplc,
    local_clustering,
    resolve_min_cluster_size,
)
from federated_core.methods.fidelity import UNSET, Preset

register_message_kind(
    "backbone_gradient",
    "a client's average gradient of its local loss w.r.t. the backbone at the global model (FedSGD)",
)

RELEASES = ("noisy", "clean", "noisy-class-centers", "private-e2e", "random-control", "none")
AGGREGATIONS = ("fedavg", "fedsgd")
RELEASE_KIND = {
    "noisy": "noisy_cluster_centers",
    "clean": "cluster_centers",
    "noisy-class-centers": "noisy_class_centers",
    "private-e2e": "noisy_cluster_centers",
    "random-control": "noisy_cluster_centers",
}
CLUSTERS_PREFIX = "gathered/"


class ConsensusClientModel(nn.Module):
    """``forward(x, y) -> [B]`` per-example consensus-aware loss (Eq. 5) of the backbone's
    embeddings against the client's ``W_k`` and the other clients' cluster centers (a buffer)."""

    clusters: torch.Tensor | None  # a buffer (None when there are none)

    def __init__(
        self,
        backbone: nn.Module,
        centers: torch.Tensor,
        clusters: torch.Tensor | None,
        rho: float,
        kind: str,
        s: float,
        m: float,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.centers = nn.Parameter(centers.detach().clone())
        self.register_buffer("clusters", None if clusters is None else clusters.detach().clone())
        self.rho, self.kind, self.s, self.m = float(rho), kind, float(s), float(m)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return consensus_loss(
            self.backbone(x),
            self.centers,
            y,
            self.clusters,
            rho=self.rho,
            kind=self.kind,
            s=self.s,
            m=self.m,
            reduction="none",
        )


def _public_faces(spec: dict[str, Any], resolution: int | None = None) -> Any:
    """Render the public fine-tuning set described by ``spec`` (synthetic identities every party
    can regenerate: nothing about it crosses the wire), at the generator's ``resolution`` if the
    spec sets one, else at the backbone's ``resolution``."""
    from federated_core.data import SyntheticFaces

    gen_kwargs = dict(spec.get("generator", {}))
    if resolution is not None:
        gen_kwargs.setdefault("resolution", int(resolution))
    start, stop = spec["identities"]
    identities = torch.arange(int(start), int(stop), dtype=torch.int64)
    return SyntheticFaces(**gen_kwargs).make_set(identities, int(spec.get("images_per_identity", 4)))


def _check_public_set(spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or "identities" not in spec:
        raise ValueError(
            "public_set must be None or a dict {'identities': [start, stop], 'images_per_identity': k, "
            f"'generator': {{SyntheticFaces kwargs}}, 'epochs': e}}, got {spec!r}"
        )
    start, stop = spec["identities"]
    if not (0 <= int(start) < int(stop)):
        raise ValueError(
            f"public_set['identities'] must be [start, stop) with 0 <= start < stop, got {spec['identities']!r}"
        )
    if int(spec.get("images_per_identity", 4)) < 1 or int(spec.get("epochs", 1)) < 1:
        raise ValueError(f"public_set images_per_identity and epochs must be >= 1, got {spec!r}")
    return dict(spec)


PRIVACYFACE_DEFAULTS: dict[str, Any] = {
    "rho": 1.3,
    "min_cluster_size": 0.1,
    "max_queries": 1,
    "epsilon": 1.0,
    "delta": None,
    "calibration": "analytic",
    "bound": "tight",
    "aggregation": "fedavg",
    "public_set": None,
    "dplc_removal": "mean",
}
PAPER_T_FRACTION = 512 / 7000  # §4: T = 512 with 7K classes per client
PAPER_PUBLIC_SET: dict[str, Any] = {
    "identities": [0, 100],
    "images_per_identity": 4,
    "generator": {"seed": 0},
    "epochs": 1,
}
"""The paper preset's public fine-tuning set: 100 synthetic identities standing in for §4's "first
100 classes from CASIA-WebFace" (φ0's pre-training set), 4 images each (this method's default
``images_per_identity``), the default generator (seed 0) at the backbone's resolution, one epoch."""


def privacyface_paper_preset(explicit: Mapping[str, Any]) -> Preset:
    """PrivacyFace §4 (and Alg. 1/2, Thm. 2): ``T = 512`` of 7K classes (as the fraction 512/7000),
    ``Q = 1``, ``ρ = 1.3``, ``ε = 1``, ``δ = 5e-5``, the classic Gaussian calibration of Definition
    3 / Theorem 2, the tight bound, FedAvg, the clean-mean removal of line 8, and the lightweight
    public fine-tuning step (`PAPER_PUBLIC_SET`)."""
    return Preset(
        {
            "rho": 1.3,
            "min_cluster_size": PAPER_T_FRACTION,
            "max_queries": 1,
            "epsilon": 1.0,
            "delta": 5e-5,
            "calibration": "classic",
            "bound": "tight",
            "aggregation": "fedavg",
            "public_set": {**PAPER_PUBLIC_SET, "generator": dict(PAPER_PUBLIC_SET["generator"])},
            "dplc_removal": "mean",
        }
    )


@register_method("privacyface", release="noisy")
@register_method("privacyface-nonoise", release="clean")
@register_method("noisy-centers", release="noisy-class-centers")
@register_method("privacyface-e2e", release="private-e2e")
class PrivacyFace(CenterMethod):
    """PrivacyFace, Algorithm 2 (see the module docstring).

    Hyper-parameters: ``rho`` (1.3), ``min_cluster_size`` (T; int count or float fraction of the
    client's classes, default 0.1), ``max_queries`` (Q, 1), ``epsilon`` (1.0 per release),
    ``delta`` (None: 1/|D_k|), ``calibration`` (``"analytic"`` or ``"classic"``), ``bound``
    (``"tight"`` Thm. 2 or ``"weak"`` Thm. 3), ``release`` (see `RELEASES`), ``aggregation``
    (``"fedavg"`` or ``"fedsgd"``), ``public_set`` (None or a synthetic public set spec),
    ``disclose_release_meta`` (True), ``dplc_dtype`` (``"float64"``), ``dplc_removal`` (``"mean"``
    as the paper, or ``"release"`` as `accountants.dplc_reference`; see `DPLCConfig`), ``fidelity``
    (``"default"`` as listed here, or ``"paper"``: `privacyface_paper_preset`), and those of
    `CenterMethod` (``loss`` cosface/arcface, ``s``, ``m``, ``center_init``). The keys of
    `PRIVACYFACE_DEFAULTS` default to the fidelity preset's values.
    """

    phases = ("clusters", "train")
    uploads_centers = False
    fidelities = ("default", "paper")

    def __init__(
        self,
        loss: str = "cosface",
        s: float = 30.0,
        m: float = 0.35,
        center_init: str = "auto",
        rho: float = UNSET,
        min_cluster_size: int | float = UNSET,
        max_queries: int = UNSET,
        epsilon: float = UNSET,
        delta: float | None = UNSET,
        calibration: str = UNSET,
        bound: str = UNSET,
        release: str = "noisy",
        aggregation: str = UNSET,
        public_set: dict[str, Any] | None = UNSET,
        disclose_release_meta: bool = True,
        dplc_dtype: str = "float64",
        dplc_removal: str = UNSET,
        fidelity: str = "default",
    ) -> None:
        hp = self.apply_fidelity(
            fidelity,
            {
                "rho": rho,
                "min_cluster_size": min_cluster_size,
                "max_queries": max_queries,
                "epsilon": epsilon,
                "delta": delta,
                "calibration": calibration,
                "bound": bound,
                "aggregation": aggregation,
                "public_set": public_set,
                "dplc_removal": dplc_removal,
            },
            PRIVACYFACE_DEFAULTS,
            {"paper": privacyface_paper_preset},
        )
        rho, min_cluster_size, max_queries, epsilon = (
            hp["rho"],
            hp["min_cluster_size"],
            hp["max_queries"],
            hp["epsilon"],
        )
        delta, calibration, bound, aggregation = hp["delta"], hp["calibration"], hp["bound"], hp["aggregation"]
        public_set, dplc_removal = hp["public_set"], hp["dplc_removal"]
        if loss not in CONSENSUS_KINDS:
            raise ValueError(
                f"loss must be one of {CONSENSUS_KINDS} for PrivacyFace (Eq. 5 uses cosines), got {loss!r}"
            )
        super().__init__(loss=loss, s=s, m=m, center_init=center_init, fidelity=fidelity)
        if release not in RELEASES:
            raise ValueError(f"release must be one of {RELEASES}, got {release!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (0.0 < float(rho) <= math.pi):
            raise ValueError(f"rho must be a margin in radians with 0 < rho <= pi, got {rho!r}")
        resolve_min_cluster_size(min_cluster_size, 1)
        if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
            raise ValueError(f"max_queries (Q) must be an integer >= 1, got {max_queries!r}")
        check_privacy_parameters(epsilon, 0.5)  # epsilon > 0, finite
        if delta is not None:
            check_privacy_parameters(epsilon, delta)  # 0 < delta < 1
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        if bound not in SENSITIVITY_BOUNDS:
            raise ValueError(f"bound must be one of {SENSITIVITY_BOUNDS}, got {bound!r}")
        if dplc_dtype not in ("float32", "float64"):
            raise ValueError(f"dplc_dtype must be 'float32' or 'float64', got {dplc_dtype!r}")
        if dplc_removal not in REMOVALS:
            raise ValueError(f"dplc_removal must be one of {REMOVALS}, got {dplc_removal!r}")
        self.dplc_removal = dplc_removal
        self.rho, self.min_cluster_size, self.max_queries = float(rho), min_cluster_size, int(max_queries)
        self.epsilon, self.delta = float(epsilon), None if delta is None else float(delta)
        self.calibration, self.bound, self.release, self.aggregation = calibration, bound, release, aggregation
        self.public_set = _check_public_set(public_set)
        self.disclose_release_meta = bool(disclose_release_meta)
        self.dplc_dtype = torch.float64 if dplc_dtype == "float64" else torch.float32
        self._public_cache: tuple[str, Any] | None = None  # public data only (regenerable by anyone)

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        if fidelity == "default":
            return (
                f"{name} (default): PrivacyFace Alg. 2 with this package's small-scale choices — analytic Gaussian "
                "calibration (Balle & Wang), δ = 1/|D_k| per client, T = 10% of a client's classes, ρ = 1.3, Q = 1, "
                "ε = 1 per release, no public fine-tuning step."
            )
        variant = {
            "privacyface-nonoise": " (φ+p: no noise, so δ and the calibration are unused)",
            "noisy-centers": " (φ+W̃, App. A.2.2's naive baseline: the calibration and δ apply to every class center)",
            "privacyface-e2e": " (the end-to-end private DPLC is this package's own, not the paper's: only its "
            "parameters follow the paper)",
        }.get(name, "")
        return (
            f"{name} (paper: PrivacyFace, Meng et al. ICLR 2022 §4){variant}: classic Gaussian calibration "
            "(Def. 3/Thm. 2), δ = 5e-5, T = 512/7000 of a client's classes, ρ = 1.3, Q = 1, ε = 1, plus §4's public "
            "fine-tuning on 100 synthetic public identities (4 images, generator seed 0, 1 epoch). Caveats: the "
            "classic calibration is proven only for ε < 1 (the paper's ε = 1 is outside it; the accountants warn); "
            "δ = 5e-5 is not o(1/|D_k|) on clients with fewer than ~20K images; the public identities are not "
            "checked against the clients'."
        )

    # ------------------------------------------------------------------------------- helpers
    def hyperparameters(self) -> dict[str, Any]:
        """Every hyper-parameter with its resolved value (recorded in the run's metrics; the
        per-client ``T`` and ``delta`` are in each client's state and release meta)."""
        return {
            **super().hyperparameters(),
            "loss": self.loss,
            "s": self.s,
            "m": self.m,
            "center_init": self.center_init,
            "rho": self.rho,
            "min_cluster_size": self.min_cluster_size,
            "max_queries": self.max_queries,
            "epsilon": self.epsilon,
            "delta": self.delta if self.delta is not None else "1/|D_k|",
            "calibration": self.calibration,
            "bound": self.bound,
            "release": self.release,
            "aggregation": self.aggregation,
            "public_set": self.public_set,
            "disclose_release_meta": self.disclose_release_meta,
            "dplc_dtype": "float64" if self.dplc_dtype == torch.float64 else "float32",
            "dplc_removal": self.dplc_removal,
            "fidelity": self.fidelity,
            "fidelity_deviations": {k: dict(v) for k, v in self.fidelity_deviations.items()},
        }

    @property
    def release_kind(self) -> str | None:
        return RELEASE_KIND.get(self.release)

    def _public(self, resolution: int | None = None) -> ClientData | None:
        """The public fine-tuning set (rendered at the backbone's ``resolution`` unless its spec's
        generator sets one), cached per process."""
        if self.public_set is None:
            return None
        key = repr((sorted(self.public_set.items()), resolution))
        if self._public_cache is None or self._public_cache[0] != key:
            self._public_cache = (key, ClientData.from_faces(_public_faces(self.public_set, resolution)))
        return self._public_cache[1]

    def client_delta(self, data: ClientData) -> float:
        """``delta`` of this client's releases: the configured one, or ``1 / |D_k|`` (§4)."""
        if self.delta is not None:
            return self.delta
        if len(data) < 2:
            raise ValueError(
                f"delta=None means 1/|D_k|, which needs a client with >= 2 images (got {len(data)}); set delta"
            )
        return 1.0 / len(data)

    # ------------------------------------------------------------------------------- server side
    def init(self, global_model: GlobalModel, config: FederatedConfig, rng: torch.Generator) -> ServerState:
        state = super().init(global_model, config, rng)
        state.meta["weight_decay"] = float(config.weight_decay)
        state.meta["gathered_round"] = None
        return state

    def configure(self, phase: str, server_state: ServerState, round: int, participants: list[str]) -> list[Message]:
        if phase == "clusters":
            return []  # DPLC runs on each client's own W_k: nothing to send (Alg. 2 line 4)
        messages = [self.backbone_broadcast(server_state, round, phase, participants)]
        centers = server_state.tensors.get(CLUSTERS_PREFIX + "centers")
        if (
            self.release_kind is not None
            and server_state.meta.get("gathered_round") == round
            and centers is not None
            and centers.shape[0] > 0
        ):
            owners = server_state.tensors[CLUSTERS_PREFIX + "owners"]
            raw = self.release == "clean"
            messages.append(
                make_message(
                    self.release_kind,
                    SERVER,
                    tuple(participants),
                    round,
                    phase,
                    {"centers": centers, "owners": owners},
                    event=non_private_event() if raw else None,
                    meta={
                        "relay": True,
                        "note": "the server relays this round's client releases (post-processing); each "
                        "release's DP event is on its upload (see owners_events)",
                        "owners_events": server_state.meta.get("gathered_events", {}),
                    },
                )
            )
        return messages

    def server_step(
        self, phase: str, server_state: ServerState, uploads: list[Message]
    ) -> tuple[ServerState, list[Message]]:
        if phase == "clusters":
            return self._gather(server_state, uploads), []
        tensors = dict(server_state.tensors)
        meta = dict(server_state.meta)
        if self.aggregation == "fedavg":
            avg = FedAvg()
            for message in uploads:
                if message.kind != "backbone":
                    raise ValueError(
                        f"{self.name!r} expects 'backbone' uploads in phase 'train', got {message.kind!r} from {message.sender}"
                    )
                avg.accumulate(message.tensors, weight=message.meta["num_samples"])
            return self.with_backbone(ServerState(tensors, meta), avg.finalize()), []
        avg = FedAvg()
        for message in uploads:
            if message.kind != "backbone_gradient":
                raise ValueError(
                    f"{self.name!r} (fedsgd) expects 'backbone_gradient' uploads, got {message.kind!r} from {message.sender}"
                )
            avg.accumulate(message.tensors, weight=message.meta["num_samples"])
        grad = avg.finalize()
        lr, wd = float(meta["lr"]), float(meta["weight_decay"])
        for name, g in grad.items():
            key = BACKBONE_PREFIX + name
            theta = tensors[key]
            tensors[key] = (theta - lr * (g.to(theta.dtype) + wd * theta)).clone()
        return ServerState(tensors, meta), []

    def _gather(self, server_state: ServerState, uploads: list[Message]) -> ServerState:
        """Alg. 2 line 5: keep this round's released centers (stacked, owner of each row)."""
        tensors = {k: v for k, v in server_state.tensors.items() if not k.startswith(CLUSTERS_PREFIX)}
        meta = dict(server_state.meta)
        blocks, owners, events = [], [], {}
        for message in sorted(uploads, key=lambda m: client_id_of(m.sender)):
            if message.kind != self.release_kind:
                raise ValueError(
                    f"{self.name!r} expects {self.release_kind!r} uploads in phase 'clusters', got {message.kind!r}"
                )
            block = message.tensors["centers"]
            blocks.append(block)
            cid = client_id_of(message.sender)
            owners.append(torch.full((block.shape[0],), cid, dtype=torch.int64))
            events[message.sender] = event_to_dict(message.event)
        if blocks:
            tensors[CLUSTERS_PREFIX + "centers"] = torch.cat(blocks)
            tensors[CLUSTERS_PREFIX + "owners"] = torch.cat(owners)
        meta["gathered_round"] = int(uploads[0].round) if uploads else None
        meta["gathered_events"] = events
        return ServerState(tensors, meta)

    # ------------------------------------------------------------------------------- client side
    def _refuse_dp(self, config: Any) -> None:
        """Raise ValueError when this variant cannot run under ``config.dp_sgd`` (from the config
        alone, so the pipeline refuses before any training)."""
        if config.dp_sgd is not None and self.aggregation == "fedsgd":
            raise ValueError("aggregation='fedsgd' uploads exact gradients; it cannot be combined with dp_sgd")
        super()._refuse_dp(config)

    def client_init(
        self,
        client_id: int,
        data: ClientData,
        global_model: GlobalModel,
        config: FederatedConfig,
        rng: torch.Generator,
    ) -> ClientState:
        self._refuse_dp(config)
        state = super().client_init(client_id, data, global_model, config, rng)
        state.meta["min_cluster_size"] = resolve_min_cluster_size(self.min_cluster_size, data.num_classes)
        state.meta["delta"] = (
            self.client_delta(data) if self.release in ("noisy", "noisy-class-centers", "private-e2e") else None
        )
        state.meta["dplc_releases"] = []
        public = self._public(int(global_model.spec["resolution"]))
        if public is not None:
            how = resolve_center_init("auto", config) if self.center_init == "auto" else self.center_init
            state.tensors["public_centers"] = init_centers(how, public, global_model, rng, config.device)
        return state

    def private_state(self, client_state: ClientState) -> dict[str, torch.Tensor]:
        return {"centers": client_state.tensors["centers"]}

    def client_update(
        self,
        phase: str,
        client_state: ClientState,
        broadcast: list[Message],
        data: ClientData,
        rng: torch.Generator,
    ) -> tuple[ClientState, list[Message]]:
        if phase == "clusters":
            return self._release(client_state, data, rng)
        return self._train(client_state, broadcast, data, rng)

    def _release(
        self, client_state: ClientState, data: ClientData, rng: torch.Generator
    ) -> tuple[ClientState, list[Message]]:
        """Alg. 2 line 4: DPLC (or the variant's release) on this client's current ``W_k``."""
        if self.release == "none":
            return client_state, []
        training = LocalTrainingConfig.from_dict(client_state.meta["training"])
        w = client_state.tensors["centers"]
        cid, rnd = int(client_state.meta["client_id"]), int(client_state.meta["round"])
        noise_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=rng)))
        delta = client_state.meta["delta"]
        base = {"client": cid, "round": rnd, "num_classes": int(w.shape[0])}
        out = self._variant_release(w, delta, noise_gen, base, client_state, training)
        new_state = self._with_release_records(client_state, out, rnd)
        if out.payload.shape[0] == 0 and self.release != "private-e2e":
            return new_state, []  # nothing reached T: no noise drawn, no release this round
        # (the end-to-end private variant always uploads: its noisy counts were spent even when
        # nothing passed the noisy threshold, and its event must reach the ledger)
        return new_state, [self._release_message(client_state, out, rnd)]

    def _variant_release(
        self,
        w: torch.Tensor,
        delta: float,
        noise_gen: torch.Generator,
        base: dict[str, Any],
        client_state: ClientState,
        training: LocalTrainingConfig,
    ) -> _ClientRelease:
        """The release of this method's variant (``self.release``, not ``"none"``) on ``W_k``."""
        if self.release == "noisy-class-centers":
            payload, event, records = self._noisy_class_centers(w, delta, noise_gen, base)
            members = [[i] for i in range(w.shape[0])]
            meta = {"sensitivity": 2.0, "epsilon": self.epsilon, "delta": delta, "calibration": self.calibration}
            return _ClientRelease(payload, event, records, meta, members)
        if self.release == "random-control":
            return self._random_control(w, noise_gen, base)
        if self.release == "private-e2e":
            return _ClientRelease(*self._private_e2e(w, delta, noise_gen, base, client_state, training))
        if self.release == "noisy":  # Algorithm 1 (φ + p̂)
            return self._algorithm1_release(w, delta, noise_gen, base, client_state, training)
        # clean p (φ + p): Algorithm 1 without noise (then p_hat = p/||p||: every removal rule agrees)
        return self._clean_release(w, base, client_state, training)

    def _random_control(self, w: torch.Tensor, noise_gen: torch.Generator, base: dict[str, Any]) -> _ClientRelease:
        """The ablation control: ``Q`` random unit vectors drawn independently of the data."""
        payload = F.normalize(
            torch.randn((self.max_queries, w.shape[1]), generator=noise_gen, dtype=torch.float64), dim=1
        )
        records = [{**base, "control": "random direction, independent of the data"}] * self.max_queries
        meta = {"control": "random unit vectors independent of the client's data (no privacy cost)"}
        members: list[list[int]] = [[] for _ in range(self.max_queries)]
        return _ClientRelease(payload, None, records, meta, members)

    def _algorithm1_release(
        self,
        w: torch.Tensor,
        delta: float,
        noise_gen: torch.Generator,
        base: dict[str, Any],
        client_state: ClientState,
        training: LocalTrainingConfig,
    ) -> _ClientRelease:
        """φ + p̂: Algorithm 1 (`dplc`) with this client's ``T`` and ``delta``."""
        config = DPLCConfig(
            rho=self.rho,
            min_cluster_size=int(client_state.meta["min_cluster_size"]),
            max_queries=self.max_queries,
            epsilon=self.epsilon,
            delta=delta,
            calibration=self.calibration,
            bound=self.bound,
            removal=self.dplc_removal,
            dtype="float64" if self.dplc_dtype == torch.float64 else "float32",
        )
        rel = dplc(w, config, noise_gen, device=training.device)
        members = [m.tolist() for m in rel.clustering.members]
        records = [{**base, **r} for r in rel.records()]
        meta = {
            "rho": self.rho,
            "min_cluster_size": config.min_cluster_size,
            "max_queries": self.max_queries,
            "stopped_below_threshold": rel.clustering.stopped_below_threshold,
            "epsilon": self.epsilon,
            "delta": delta,
            "calibration": self.calibration,
            "bound": self.bound,
            "removal": self.dplc_removal,
        }
        return _ClientRelease(rel.noisy_centers, rel.composed_event(), records, meta, members)

    def _clean_release(
        self, w: torch.Tensor, base: dict[str, Any], client_state: ClientState, training: LocalTrainingConfig
    ) -> _ClientRelease:
        """φ + p: the clean cluster means of Algorithm 1 without noise (a non-private release)."""
        clustering = local_clustering(
            w,
            self.rho,
            client_state.meta["min_cluster_size"],
            self.max_queries,
            dtype=self.dplc_dtype,
            device=training.device,
        )
        members = [m.tolist() for m in clustering.members]
        records = [
            {**base, "cluster_size": int(sz), "sigma": 0.0, "sensitivity": None} for sz in clustering.sizes.tolist()
        ]
        meta = {
            "rho": self.rho,
            "min_cluster_size": clustering.min_cluster_size,
            "max_queries": self.max_queries,
            "stopped_below_threshold": clustering.stopped_below_threshold,
        }
        return _ClientRelease(clustering.centers, non_private_event(), records, meta, members)

    def _with_release_records(self, client_state: ClientState, out: _ClientRelease, rnd: int) -> ClientState:
        """The client's state with this round's release records (and, when rows were released or
        the end-to-end variant ran, the local classes behind each row) appended to its meta."""
        new_meta = dict(client_state.meta)
        new_meta["dplc_releases"] = list(client_state.meta.get("dplc_releases", [])) + out.records
        if out.payload.shape[0] or self.release == "private-e2e":
            # ground truth for scoring attacks (never sent): the local classes behind each released row
            if len(out.members) != out.payload.shape[0]:
                raise RuntimeError(f"{len(out.members)} member lists for {out.payload.shape[0]} released rows")
            new_meta["release_members"] = list(client_state.meta.get("release_members", [])) + [
                {"round": rnd, "kind": self.release_kind, "rows": [[int(i) for i in m] for m in out.members]}
            ]
        return ClientState(dict(client_state.tensors), new_meta)

    def _release_message(self, client_state: ClientState, out: _ClientRelease, rnd: int) -> Message:
        """The upload of this round's release: the rows, the DP event and the (maybe redacted) records."""
        meta = out.meta
        meta["releases"] = (
            out.records
            if self.disclose_release_meta
            else [
                {"client": r["client"], "round": r["round"], "noise_multiplier": r.get("noise_multiplier")}
                for r in out.records
            ]
        )
        release_kind = self.release_kind
        if release_kind is None:
            raise ValueError(f"release {self.release!r} uploads nothing (it has no message kind)")
        return make_message(
            release_kind,
            self.party(client_state),
            (SERVER,),
            rnd,
            "clusters",
            {"centers": out.payload.to(torch.float32)},
            event=out.event,
            meta=meta,
        )

    def _noisy_class_centers(
        self, w: torch.Tensor, delta: float, gen: torch.Generator, base: dict[str, Any]
    ) -> tuple[torch.Tensor, Any, list[dict[str, Any]]]:
        """App. A.2.2's naive baseline W̃: every unit class center plus N(0, σ² I) with the
        sensitivity 2 of a unit vector, then normalised. Replacing one class center changes one
        row by at most 2 in l2, so the whole matrix is one Gaussian mechanism:
        ``GaussianEvent(σ / 2)`` per round (the paper's cost comparison composes one query per
        class instead, which over-counts)."""
        from accountants import GaussianEvent, gaussian_sigma

        sigma = float(gaussian_sigma(2.0, self.epsilon, delta, method=self.calibration))
        unit = F.normalize(w.to(torch.float64), dim=1)
        noisy = unit + sigma * torch.randn(unit.shape, generator=gen, dtype=torch.float64)
        noisy = F.normalize(noisy, dim=1)
        records = [
            {
                **base,
                "sigma": sigma,
                "sensitivity": 2.0,
                "cluster_size": 1,
                "noise_multiplier": sigma / 2.0,
                "rows": int(w.shape[0]),
            }
        ]
        return noisy, GaussianEvent(sigma / 2.0, unit="class-center"), records

    def _private_e2e(
        self,
        w: torch.Tensor,
        delta: float,
        gen: torch.Generator,
        base: dict[str, Any],
        client_state: ClientState,
        training: LocalTrainingConfig,
    ) -> tuple[torch.Tensor, Any, list[dict[str, Any]], dict[str, Any], list[list[int]]]:
        """`accountants.private_dplc` (mean-shift mode: no public candidates needed): selection,
        threshold and normalisation are privatised too, and its one event covers all ``Q``
        queries of the call, so ``epsilon``/``delta`` are the budget of the whole call (not per
        release as for Algorithm 1)."""
        import numpy as np

        from accountants import private_dplc

        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        out = private_dplc(
            F.normalize(w.to(torch.float64), dim=1).numpy(),
            None,
            rho=self.rho,
            min_cluster_size=int(client_state.meta["min_cluster_size"]),
            max_queries=self.max_queries,
            epsilon=self.epsilon,
            delta=delta,
            rng=np.random.default_rng(seed),
        )
        payload = torch.as_tensor(np.asarray(out.centers), dtype=torch.float64).reshape(-1, w.shape[1])
        public = list(getattr(out, "public_records", ()) or ())
        records = [
            {**base, "release": i, **dict(public[i] if i < len(public) else {})} for i in range(payload.shape[0])
        ]
        meta = {
            "rho": self.rho,
            "min_cluster_size": int(client_state.meta["min_cluster_size"]),
            "epsilon": self.epsilon,
            "delta": delta,
            "mechanism": "accountants.private_dplc",
            "end_to_end_private": bool(out.end_to_end_private),
            "noisy_counts": [float(c) for c in getattr(out, "noisy_counts", ())],
        }
        event = out.events[0] if len(out.events) == 1 else out.event
        return payload, event, records, meta, [list(m) for m in out.member_indices]

    def _others(self, client_state: ClientState, broadcast: list[Message]) -> torch.Tensor | None:
        if self.release_kind is None:
            return None
        relay = [m for m in broadcast if m.kind == self.release_kind and m.sender == SERVER]
        if not relay:
            return None
        if len(relay) > 1:
            raise ValueError(f"expected one relay of {self.release_kind!r}, got {len(relay)}")
        owners = relay[0].tensors["owners"]
        keep = owners != int(client_state.meta["client_id"])
        return relay[0].tensors["centers"][keep].to(torch.float32)

    def _train(
        self, client_state: ClientState, broadcast: list[Message], data: ClientData, rng: torch.Generator
    ) -> tuple[ClientState, list[Message]]:
        """Alg. 2 lines 6-8: optimise Eq. 5 locally, upload the backbone (W_k stays here)."""
        training = LocalTrainingConfig.from_dict(client_state.meta["training"])
        backbone_message = self.find(broadcast, "backbone")
        backbone = self.workspace.load(backbone_message, training.device)
        clusters = self._others(client_state, broadcast)
        model = self._consensus_model(client_state, backbone, clusters, training)
        public = self._public(int(backbone_message.meta["spec"]["resolution"]))
        tensors = dict(client_state.tensors)
        meta = dict(client_state.meta)
        rnd = int(client_state.meta["round"])
        ctx = _TrainContext(client_state, data, training, rng, backbone, model, public, tensors)
        if self.aggregation == "fedavg":
            upload, loss, steps = self._train_fedavg(ctx)
        else:
            upload, loss, steps = self._train_fedsgd(ctx)
        tensors["centers"] = model.centers.detach().cpu().clone()
        meta["last_update"] = {
            "round": rnd,
            "loss": loss,
            "steps": steps,
            "clusters_received": 0 if clusters is None else int(clusters.shape[0]),
        }
        return ClientState(tensors, meta), [upload]

    def _consensus_model(
        self,
        client_state: ClientState,
        backbone: nn.Module,
        clusters: torch.Tensor | None,
        training: LocalTrainingConfig,
    ) -> ConsensusClientModel:
        """Eq. 5's client model on ``W_k`` and the other clients' relayed cluster centers."""
        # the naive baseline's W̃ are single-class centers: plain negatives (rho = 0)
        rho = 0.0 if self.release == "noisy-class-centers" else self.rho
        return ConsensusClientModel(
            backbone,
            client_state.tensors["centers"].to(training.device),
            None if clusters is None else clusters.to(training.device),
            rho,
            self.loss,
            self.s,
            self.m,
        )

    def _public_model(self, ctx: _TrainContext) -> MarginClientModel:
        """The margin-loss model of §4's public fine-tuning set (the backbone with the public centers)."""
        return MarginClientModel(
            ctx.backbone,
            ctx.client_state.tensors["public_centers"].to(ctx.training.device),
            None,
            self.loss,
            self.s,
            self.m,
        )

    def _train_fedavg(self, ctx: _TrainContext) -> tuple[Message, float, int]:
        """FedAvg: local SGD on Eq. 5, §4's public fine-tuning, then the backbone upload.

        Returns ``(upload, mean_loss, steps)``."""
        result = train_local(ctx.model, ctx.data, ctx.training, ctx.rng)
        if ctx.public is not None:  # §4: fine-tune the local model on the public set before upload
            self._fine_tune_public(ctx, ctx.public)
        upload = self.backbone_upload(ctx.client_state, ctx.backbone, "train", result.event, len(ctx.data))
        return upload, result.mean_loss, result.steps

    def _fine_tune_public(self, ctx: _TrainContext, public: ClientData) -> None:
        """§4: fine-tune the local model on the public set; keeps the public centers in ``ctx.tensors``."""
        pub_model = self._public_model(ctx)
        if self.public_set is None:
            raise ValueError("a public set was rendered without its spec (public_set is None)")
        pub_training = LocalTrainingConfig(
            **{
                **ctx.training.to_dict(),
                "local_epochs": int(self.public_set.get("epochs", 1)),
                "noise_multiplier": None,
                "max_grad_norm": None,
            }
        )
        train_local(pub_model, public, pub_training, ctx.rng)
        ctx.tensors["public_centers"] = pub_model.centers.detach().cpu().clone()

    def _train_fedsgd(self, ctx: _TrainContext) -> tuple[Message, float, int]:
        """FedSGD (App. A.2.1): the average gradient at the frozen global model is uploaded; ``W_k``
        (and the public centers) take their own SGD step here.

        Returns ``(upload, mean_loss, steps)``."""
        grads, loss, examples = _average_gradients(
            ctx.model,
            ctx.data,
            ctx.training,
            ctx.rng,
            public_model=None if ctx.public is None else self._public_model(ctx),
            public=ctx.public,
        )
        _step_local_centers(ctx, grads)
        upload = make_message(
            "backbone_gradient",
            self.party(ctx.client_state),
            (SERVER,),
            int(ctx.client_state.meta["round"]),
            "train",
            grads,
            event=None,
            meta={"num_samples": int(len(ctx.data))},
        )
        return upload, loss, 1


@dataclass
class _ClientRelease:
    """What one client releases in the ``"clusters"`` phase, before it is put on the wire."""

    payload: torch.Tensor
    event: Any
    records: list[dict[str, Any]]
    meta: dict[str, Any]
    members: list[list[int]]


@dataclass
class _TrainContext:
    """One client's ``"train"`` phase: its state, data, models, and the tensors it keeps."""

    client_state: ClientState
    data: ClientData
    training: LocalTrainingConfig
    rng: torch.Generator
    backbone: nn.Module
    model: ConsensusClientModel
    public: ClientData | None
    tensors: dict[str, torch.Tensor]


def _step_local_centers(ctx: _TrainContext, grads: dict[str, torch.Tensor]) -> None:
    """FedSGD's local step on ``W_k`` (and the public centers), popping their gradients from ``grads``."""
    training = ctx.training
    with torch.no_grad():
        g_w = grads.pop("centers")
        ctx.model.centers.sub_(training.lr * (g_w + training.weight_decay * ctx.model.centers))
        if "public_centers" in grads:
            pc = ctx.tensors["public_centers"].to(training.device)
            ctx.tensors["public_centers"] = (
                pc - training.lr * (grads.pop("public_centers") + training.weight_decay * pc)
            ).cpu()


def _average_gradients(
    model: ConsensusClientModel,
    data: ClientData,
    training: LocalTrainingConfig,
    rng: torch.Generator,
    public_model: MarginClientModel | None = None,
    public: ClientData | None = None,
) -> tuple[dict[str, torch.Tensor], float, int]:
    """FedSGD's local pass (App. A.2.1): the model stays frozen; the gradient of the mean loss
    over all local examples (and the public set, when given) is accumulated batch by batch.

    Returns ``(grads, mean_loss, examples)``; ``grads`` holds the backbone's parameter gradients
    under their state-dict names plus ``"centers"`` (and ``"public_centers"``)."""
    device = torch.device(training.device)
    model.to(device).train()
    total = len(data) + (0 if public is None else len(public))
    parts: list[tuple[nn.Module, ClientData]] = [(model, data)]
    if public_model is not None and public is not None:
        public_model.to(device).train()
        parts.append((public_model, public))
    for module, _ in parts:
        for p in module.parameters():
            p.grad = None
    loss_sum = 0.0
    for module, part in parts:
        order = torch.randperm(len(part), generator=rng)
        for start in range(0, len(part), training.batch_size):
            idx = order[start : start + training.batch_size]
            x = part.faces.images[idx].to(device).float().div_(127.5).sub_(1.0)
            if training.flip:
                flip = (torch.rand(len(idx), generator=rng) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            losses = module(x, part.local_labels[idx].to(device))
            (losses.sum() / total).backward()
            loss_sum += float(losses.detach().sum())
    grads = {
        name: (p.grad.detach().cpu().clone() if p.grad is not None else torch.zeros_like(p).cpu())
        for name, p in model.backbone.named_parameters()
    }
    if model.centers.grad is None:
        raise ValueError("the client's centers got no gradient (centers.grad is None): it has no local batch")
    grads["centers"] = model.centers.grad.detach().clone()
    if public_model is not None:
        if public_model.centers.grad is None:
            raise ValueError("the public centers got no gradient (public_centers.grad is None): no public batch")
        grads["public_centers"] = public_model.centers.grad.detach().clone()
    for module, _ in parts:
        for p in module.parameters():
            p.grad = None
    return grads, loss_sum / max(1, total), total
