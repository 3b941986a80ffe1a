"""Shared machinery of the methods whose clients train a backbone and private class embeddings
``W_k`` with a margin-softmax loss (FedPE, shared centers, FedFace, FedGC).

Each client keeps ``W_k [n_k, d]`` (one row per local class, ``meta["row_identities"]`` the
global identity of each row) in its state. Per round: the server sends the global backbone (and,
depending on the method, the client's server-side ``W_k`` or other clients' embeddings); the
client trains backbone + ``W_k`` locally on its loss (`train_local`); it uploads the backbone
(and ``W_k`` when the method shares it); the server FedAvgs the backbone (weights ``n_k``) and may
process the uploaded embeddings.

Class-embedding initialisation (``center_init``): ``"random"`` (``N(0, 1/d)`` rows, unit norm
in expectation; FedGC trains from random W) or ``"mean-feature"`` (each row is the normalised
mean embedding of the class's images under the initial global model; FedFace's initialisation,
and the natural one when starting from a pre-trained φ0). ``"auto"`` picks ``"mean-feature"``
when the run starts from an initial backbone and ``"random"`` when it trains from scratch or with
DP-SGD (mean-feature initialisation reads the data without noise, which would void DP-SGD's
guarantee, so it is refused with DP-SGD).

DP events: a client's ``"class_centers"`` upload carries ``NonPrivateEvent()`` (raw embeddings),
or, with DP-SGD from a random initialisation, the DP-SGD event of the steps behind it. What the
server sends back (``"class_centers"`` after its correction, ``"global_class_embeddings"``) is
tagged ``NonPrivateEvent()`` conservatively: it mixes several clients' embeddings, and the
ledger charges each client for its own uploads.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from federated_core.engine.config import FederatedConfig, LocalTrainingConfig
from federated_core.engine.local_sgd import train_local
from federated_core.engine.messages import SERVER, Message, client_id_of, make_message, non_private_event
from federated_core.engine.state import ClientData, ClientState, ServerState
from federated_core.methods.base import BackboneMethod, FedAvg, GlobalModel

CENTER_INITS = ("auto", "random", "mean-feature")
LOSSES = ("softmax", "cosface", "arcface")
CENTERS_PREFIX = "centers/"


class MarginClientModel(nn.Module):
    """``forward(x, y) -> per-example loss``: margin softmax of the backbone's embeddings against
    the client's own class embeddings, plus fixed extra negatives (other clients' embeddings in
    `shared-centers`) that are never a target.

    Args:
        backbone: the local copy of the global backbone (trained).
        centers: ``W_k [n_k, d]`` (trained unless ``train_centers`` is False: FedGC's "Fixed").
        negatives: optional ``[E, d]`` fixed negatives (a buffer, no gradient).
        kind, s, m: the head (`federated_core.models.heads.margin_logits`).
        positive_margin: ν of the positive-only loss ``max(0, ν − cos(f, w_y))²`` (FedAwS, Yu et al.
            2020, Eq. 3; the client loss of FedFace's one-identity clients), used when the client
            holds a single class and has no negatives: a margin softmax over one class is
            identically zero and trains nothing. None keeps the margin softmax.
    """

    negatives: torch.Tensor | None  # a buffer (None when there are none)

    def __init__(
        self,
        backbone: nn.Module,
        centers: torch.Tensor,
        negatives: torch.Tensor | None,
        kind: str,
        s: float,
        m: float,
        train_centers: bool = True,
        positive_margin: float | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.centers = nn.Parameter(centers.detach().clone(), requires_grad=train_centers)
        self.register_buffer("negatives", None if negatives is None else negatives.detach().clone())
        self.kind, self.s, self.m = kind, s, m
        alone = centers.shape[0] == 1 and (negatives is None or negatives.shape[0] == 0)
        self.positive_margin = positive_margin if alone else None

    @property
    def positive_only(self) -> bool:
        """Whether this client trains with the positive-only loss (see ``positive_margin``)."""
        return self.positive_margin is not None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from federated_core.models.heads import margin_logits

        emb = self.backbone(x)
        if self.positive_margin is not None:
            cos = F.cosine_similarity(emb, self.centers[y], dim=1)
            return torch.clamp(self.positive_margin - cos, min=0.0).pow(2)
        logits = margin_logits(emb, self.centers, y, self.kind, self.s, self.m, check_labels=False)
        if self.negatives is not None and self.negatives.shape[0] > 0:
            extra = margin_logits(emb, self.negatives, None, self.kind, self.s, self.m, check_labels=False)
            logits = torch.cat([logits, extra], dim=1)
        return F.cross_entropy(logits, y, reduction="none")


def resolve_center_init(center_init: str, config: FederatedConfig) -> str:
    if center_init not in CENTER_INITS:
        raise ValueError(f"center_init must be one of {CENTER_INITS}, got {center_init!r}")
    if center_init == "mean-feature" and config.dp_sgd is not None:
        raise ValueError(
            "center_init='mean-feature' reads the client's images without noise, which voids DP-SGD's "
            "guarantee; use center_init='random' (or 'auto') with dp_sgd"
        )
    if center_init != "auto":
        return center_init
    if config.dp_sgd is not None or config.initial_backbone is None:
        return "random"
    return "mean-feature"


def init_centers(
    how: str, data: ClientData, global_model: GlobalModel, rng: torch.Generator, device: str
) -> torch.Tensor:
    """``W_k [n_k, d]`` initialised ``"random"`` or ``"mean-feature"`` (see the module docstring)."""
    d = int(global_model.spec["embedding_dim"])
    if how == "random":
        return torch.randn(data.num_classes, d, generator=rng) / math.sqrt(d)
    if how == "mean-feature":
        from federated_core.models import embed

        emb = embed(global_model.backbone, data.faces, device=device)
        sums = torch.zeros(data.num_classes, d).index_add_(0, data.local_labels, emb)
        return F.normalize(sums, dim=1)
    raise ValueError(f"center initialisation must be 'random' or 'mean-feature', got {how!r}")


class CenterMethod(BackboneMethod):
    """Base of FedPE, shared centers, FedFace and FedGC.

    Hyper-parameters common to all: ``loss`` (``"cosface"``, ``"arcface"`` or ``"softmax"``),
    ``s``/``m`` (scale and margin; defaults 30 and 0.35 as φ0's pre-training, ArcFace FedGC: 64,
    0.5), ``center_init`` (see the module docstring), ``fidelity`` (only ``"default"`` unless a
    subclass has presets, see `federated_core.methods.fidelity`).
    """

    positive_margin: float | None = None  # FedFace sets ν: positive-only loss for one-class clients
    uploads_centers: ClassVar[bool] = False  # W_k leaves the client
    returns_centers: ClassVar[bool] = False  # the server sends each participant its own W_k back
    train_centers: bool = True  # a class default; FedFace sets it per instance

    def __init__(
        self,
        loss: str = "cosface",
        s: float = 30.0,
        m: float = 0.35,
        center_init: str = "auto",
        fidelity: str = "default",
    ) -> None:
        super().__init__()
        from federated_core.methods.fidelity import check_fidelity

        self.fidelity = check_fidelity(self.name or type(self).__name__, fidelity, self.fidelities)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if center_init not in CENTER_INITS:
            raise ValueError(f"center_init must be one of {CENTER_INITS}, got {center_init!r}")
        from federated_core.models.heads import margin_logits

        # validate s and m through the head itself (its error names the range)
        margin_logits(torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, dtype=torch.long), loss, s, m)
        self.loss, self.s, self.m, self.center_init = loss, float(s), float(m), center_init

    # ---------------------------------------------------------------- server side
    def init(self, global_model: GlobalModel, config: FederatedConfig, rng: torch.Generator) -> ServerState:
        state = super().init(global_model, config, rng)
        state.meta["lr"] = float(config.lr)
        state.meta["device"] = str(config.device)
        return state

    def configure(self, phase: str, server_state: ServerState, round: int, participants: list[str]) -> list[Message]:
        messages = [self.backbone_broadcast(server_state, round, phase, participants)]
        if self.returns_centers:
            for party in participants:
                key = CENTERS_PREFIX + party
                if key in server_state.tensors:
                    # After the server's correction this row block depends on every client's raw
                    # class embeddings (through the regulariser's gradient): not private.
                    messages.append(
                        make_message(
                            "class_centers",
                            SERVER,
                            (party,),
                            round,
                            phase,
                            {"centers": server_state.tensors[key]},
                            event=non_private_event(),
                            meta={
                                "note": "the server's corrected copy of this client's own class embeddings; "
                                "it depends on all clients' class embeddings"
                            },
                        )
                    )
        messages += self.extra_broadcast(server_state, round, phase, participants)
        return messages

    def extra_broadcast(
        self, server_state: ServerState, round: int, phase: str, participants: list[str]
    ) -> list[Message]:
        return []

    def server_step(
        self, phase: str, server_state: ServerState, uploads: list[Message]
    ) -> tuple[ServerState, list[Message]]:
        avg = FedAvg()
        tensors = dict(server_state.tensors)
        meta = dict(server_state.meta)
        for message in uploads:
            if message.kind == "backbone":
                avg.accumulate(message.tensors, weight=message.meta["num_samples"])
            elif message.kind == "class_centers" and self.uploads_centers:
                tensors[CENTERS_PREFIX + message.sender] = message.tensors["centers"].clone()
                if "identities" in message.tensors:
                    tensors["identities/" + message.sender] = message.tensors["identities"].clone()
            else:
                raise ValueError(
                    f"method {self.name!r} does not expect uploads of kind {message.kind!r} from {message.sender}"
                )
        state = self.with_backbone(ServerState(tensors, meta), avg.finalize())
        state = self.process_centers(state)
        return state, []

    def process_centers(self, server_state: ServerState) -> ServerState:
        """Hook: the server's work on the stored class embeddings after FedAvg (FedFace, FedGC)."""
        return server_state

    @staticmethod
    def stored_centers(server_state: ServerState) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """All class embeddings the server holds, stacked in client-id order:
        ``(parties, W [R, d], owners [R])``."""
        parties = sorted(
            (k[len(CENTERS_PREFIX) :] for k in server_state.tensors if k.startswith(CENTERS_PREFIX)),
            key=client_id_of,
        )
        if not parties:
            return [], torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
        blocks = [server_state.tensors[CENTERS_PREFIX + p] for p in parties]
        owners = torch.cat(
            [torch.full((b.shape[0],), client_id_of(p), dtype=torch.int64) for p, b in zip(parties, blocks)]
        )
        return parties, torch.cat(blocks), owners

    @staticmethod
    def write_back(server_state: ServerState, parties: list[str], w: torch.Tensor) -> ServerState:
        tensors = dict(server_state.tensors)
        start = 0
        for party in parties:
            n = tensors[CENTERS_PREFIX + party].shape[0]
            tensors[CENTERS_PREFIX + party] = w[start : start + n].detach().cpu().clone()
            start += n
        return ServerState(tensors, server_state.meta)

    # ---------------------------------------------------------------- client side
    def client_init(
        self,
        client_id: int,
        data: ClientData,
        global_model: GlobalModel,
        config: FederatedConfig,
        rng: torch.Generator,
    ) -> ClientState:
        state = self.base_client_state(client_id, data, config)
        how = self.resolved_center_init(config)
        state.tensors["centers"] = init_centers(how, data, global_model, rng, config.device)
        state.meta["center_init"] = how
        return state

    def resolved_center_init(self, config: FederatedConfig) -> str:
        """How ``W_k`` starts: ``"random"`` when it stays fixed on the client (FedPE+Fixed), else
        ``center_init`` resolved for ``config``."""
        return "random" if not self.train_centers else resolve_center_init(self.center_init, config)

    def _refuse_dp(self, config: Any) -> None:
        """Raise ValueError when this method cannot run under ``config.dp_sgd`` (checked from the
        config alone, so the pipeline refuses the scenario before any training)."""
        if config.dp_sgd is not None:
            self.resolved_center_init(config)

    def negatives_for(self, client_state: ClientState, broadcast: list[Message]) -> torch.Tensor | None:
        """Hook: fixed extra negatives for the local loss (shared centers)."""
        return None

    def client_update(
        self,
        phase: str,
        client_state: ClientState,
        broadcast: list[Message],
        data: ClientData,
        rng: torch.Generator,
    ) -> tuple[ClientState, list[Message]]:
        training = LocalTrainingConfig.from_dict(client_state.meta["training"])
        backbone = self.workspace.load(self.find(broadcast, "backbone"), training.device)
        centers = client_state.tensors["centers"]
        returned = self.find(broadcast, "class_centers", required=False)
        if returned is not None:
            centers = returned.tensors["centers"]
            if centers.shape != client_state.tensors["centers"].shape:
                raise ValueError(
                    f"the server returned class embeddings of shape {tuple(centers.shape)}, this client has "
                    f"{tuple(client_state.tensors['centers'].shape)}"
                )
        negatives = self.negatives_for(client_state, broadcast)
        model = MarginClientModel(
            backbone,
            centers.to(training.device),
            None if negatives is None else negatives.to(training.device),
            self.loss,
            self.s,
            self.m,
            train_centers=self.train_centers,
            positive_margin=self.positive_margin,
        )
        result = train_local(model, data, training, rng)
        new_centers = model.centers.detach().cpu().clone()
        meta = dict(client_state.meta)
        meta["last_update"] = {
            "round": int(client_state.meta["round"]),
            "loss": result.mean_loss,
            "steps": result.steps,
            "examples": result.examples,
            "positive_only": model.positive_only,
        }
        uploads = [self.backbone_upload(client_state, backbone, phase, result.event, len(data))]
        if self.uploads_centers:
            uploads.append(self.centers_upload(client_state, new_centers, data, phase, result.event))
        return ClientState({**client_state.tensors, "centers": new_centers}, meta), uploads

    def centers_upload(
        self, client_state: ClientState, centers: torch.Tensor, data: ClientData, phase: str, dp_event: Any
    ) -> Message:
        """``"class_centers"`` upload: raw W_k (``NonPrivateEvent``), or with DP-SGD from a
        random initialisation the DP-SGD event of the steps behind it (example-level DP)."""
        if dp_event is not None and client_state.meta.get("center_init") == "random":
            event, unit = dp_event, "example (DP-SGD)"
        else:
            event, unit = non_private_event(), "none: raw class embeddings"
        tensors = {"centers": centers}
        if self.uploads_identity_keys:
            tensors["identities"] = torch.tensor(data.identities, dtype=torch.int64)
        return make_message(
            "class_centers",
            self.party(client_state),
            (SERVER,),
            int(client_state.meta["round"]),
            phase,
            tensors,
            event=event,
            meta={"protection": unit},
        )

    uploads_identity_keys: bool = False  # a class default; FedGC sets it per instance
