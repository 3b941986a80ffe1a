"""FedFS (Kim, Choi & Kwak, "Federated Learning for Face Recognition via Intra-subject
Self-supervised Learning", arXiv 2407.16289, 2024).

Three models per client: the fixed pre-trained model φ0 (an off-the-shelf model; here the run's
initial backbone), the global model (trained locally, FedAvg on the server) and a personalised
model that never leaves the client. Clients hold one identity each: positive-only data.

Each round (one phase, ``"train"``): the server sends the global backbone; each participant
trains its local copy of the global model and its personalised model together for the run's
local epochs (FedFS: SGD, 2 local epochs) on

    F_total = λ·F_insub + (1 − λ)·F_reg,   λ = 0.7

and uploads only the global model's backbone; the server averages it (FedAvg, weights = image
counts). The personalised model stays in the client's state.

Only a summary of the paper is available to us. Our reading of it, each choice a named option:

* **aggregated features** (``aggregate``): ``a = (g + l)/2`` of the global model's feature ``g``
  and the personalised model's ``l`` (``"mean"``, default: keeps magnitudes for the dot products),
  or of their L2-normalised features (``"normalized-mean"``). Cosines do not see the difference
  between a sum and a mean.
* **adaptive soft labels** (``label_features``, ``label_weighting``, ``label_temperature``,
  ``top_k_fraction``): dot products between the instances of the batch, between the aggregated
  features and the pre-trained representations (``"aggregated-pretrained"``, default: the summary
  says both components make the aggregated features "cooperate with representations of an
  off-the-shelf model"), or among the pre-trained representations (``"pretrained"``) or among the
  aggregated features (``"aggregated"``); each row keeps its top-K (K = batch/4:
  ``top_k_fraction=0.25``) and weights them by a softmax of the dot products over
  ``label_temperature`` (1.0; or ``"linear"``: their normalised positive parts). The labels are
  targets (no gradient). "Dot product" (labels) vs. "cosine" (loss) follows the summary: the dot
  product sees magnitudes, the cosine only angles.
* **intra-subject loss** F_insub (``temperature``): cross-entropy between the soft labels and the
  softmax over the batch of ``cos(a_i, p_j) / temperature`` (0.1; the summary gives no value).
* **regulariser** F_reg: ``1 − cos(g_i, l_i)`` between the global and personalised models'
  outputs on the same image (the summary: "cosine similarity between the global and personalised
  models' outputs"; 1 − cos makes it a loss ≥ 0).
* the **personalised model** starts as a copy of φ0; both trainable models get the gradient of
  F_total. At inference (`personalised_model`) the personalised feature is ``l`` (``"personal"``)
  or the aggregated ``a`` of the final global model and ``l`` (``"aggregated"``).
* a client with several identities (not FedFS's setting) is handled positive-only per identity:
  the soft labels and the softmax of F_insub range over the instances of the same identity only.

Memory: every client keeps its personalised model and a copy of φ0 in its state (on a device, φ0
ships with the app); thousands of clients need thousands of copies in the in-process engine.
DP-SGD is refused: F_insub couples the examples of a batch (the soft labels and the softmax range
over it), so per-example clipping would not bound one example's influence.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from federated_core.engine.config import FederatedConfig, LocalTrainingConfig
from federated_core.engine.local_sgd import train_local
from federated_core.engine.messages import Message
from federated_core.engine.state import ClientData, ClientState, ServerState
from federated_core.methods.base import BackboneMethod, BackboneWorkspace, FedAvg, GlobalModel, register_method
from federated_core.methods.fedfr import FrozenBackbone
from federated_core.methods.fedfs_losses import (
    AGGREGATIONS,
    LABEL_WEIGHTINGS,
    adaptive_soft_labels,
    aggregate_features,
    cosine_regulariser,
    intra_subject_loss,
    top_k_count,
)

PERSONAL = "personal."  # client-state prefix of the personalised model
PRETRAINED = "pretrained."  # client-state prefix of the fixed pre-trained model φ0
LABEL_FEATURES = ("aggregated-pretrained", "pretrained", "aggregated")
PERSONALISED_MODELS = ("personal", "aggregated")


class AggregatedBackbone(nn.Module):
    """Inference model ``x -> aggregate(global(x), personal(x))``."""

    def __init__(self, global_backbone: nn.Module, personal: nn.Module, how: str) -> None:
        super().__init__()
        self.global_backbone = global_backbone
        self.personal = personal
        self.how = how
        self.embedding_dim = getattr(personal, "embedding_dim", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aggregate_features(self.global_backbone(x), self.personal(x), self.how)


class FedFSClientModel(nn.Module):
    """``forward(x, y) -> [B]`` per-example ``λ·F_insub + (1 − λ)·F_reg`` (the batch couples the
    examples through the soft labels). Running sums of both terms are kept in ``parts``."""

    def __init__(self, global_copy: nn.Module, personal: nn.Module, pretrained: nn.Module, hp: "FedFS") -> None:
        super().__init__()
        self.global_copy = global_copy
        self.personal = personal
        self.pretrained = FrozenBackbone(pretrained)
        self.hp = hp
        self.parts: dict[str, torch.Tensor] = {}

    def _add(self, name: str, value: torch.Tensor) -> None:
        v = value.detach().sum()
        self.parts[name] = self.parts[name] + v if name in self.parts else v

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        g = self.global_copy(x)
        l = self.personal(x)  # noqa: E741
        p = self.pretrained(x)
        a = aggregate_features(g, l, hp.aggregate)
        allowed = y.unsqueeze(0) == y.unsqueeze(1)
        if hp.label_features == "aggregated-pretrained":
            dots = a.detach() @ p.t()
        elif hp.label_features == "pretrained":
            dots = p @ p.t()
        else:
            dots = a.detach() @ a.detach().t()
        labels = adaptive_soft_labels(
            dots, top_k_count(int(x.shape[0]), hp.top_k_fraction), allowed, hp.label_weighting, hp.label_temperature
        )
        insub = intra_subject_loss(a, p, labels, hp.temperature, allowed)
        reg = cosine_regulariser(g, l)
        self._add("insub", insub)
        self._add("reg", reg)
        self._add("examples", torch.ones_like(reg))
        return hp.lam * insub + (1.0 - hp.lam) * reg


def _number(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and v <= high
    if not ok:
        raise ValueError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}], got {value!r}")
    return float(value)


def _build(spec: dict[str, Any]) -> nn.Module:
    from federated_core.models import build_backbone

    with torch.random.fork_rng(devices=[]):
        return build_backbone(
            spec["name"], embedding_dim=spec["embedding_dim"], resolution=spec["resolution"], **spec.get("kwargs", {})
        )


@register_method("fedfs")
class FedFS(BackboneMethod):
    """FedFS (see the module docstring for the reading of each term).

    Hyper-parameters: ``lam`` (λ = 0.7), ``top_k_fraction`` (K = batch·0.25), ``aggregate``
    (``"mean"`` or ``"normalized-mean"``), ``label_features`` (``"aggregated-pretrained"``,
    ``"pretrained"``, ``"aggregated"``), ``label_weighting`` (``"softmax"`` or ``"linear"``),
    ``label_temperature`` (1.0), ``temperature`` (0.1, of F_insub's cosine logits), ``fidelity``
    (only ``"default"``: with no full text or code there is no paper preset to be faithful to).
    """

    phases = ("train",)
    fidelities = ("default",)

    def __init__(
        self,
        lam: float = 0.7,
        top_k_fraction: float = 0.25,
        aggregate: str = "mean",
        label_features: str = "aggregated-pretrained",
        label_weighting: str = "softmax",
        label_temperature: float = 1.0,
        temperature: float = 0.1,
        fidelity: str = "default",
    ) -> None:
        super().__init__()
        self.apply_fidelity(fidelity, {}, {}, {})
        self.lam = _number("lam (λ of F_total)", lam, 0.0, 1.0)
        self.top_k_fraction = _number("top_k_fraction (K / batch size)", top_k_fraction, 0.0, 1.0, low_open=True)
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        if label_features not in LABEL_FEATURES:
            raise ValueError(f"label_features must be one of {LABEL_FEATURES}, got {label_features!r}")
        if label_weighting not in LABEL_WEIGHTINGS:
            raise ValueError(f"label_weighting must be one of {LABEL_WEIGHTINGS}, got {label_weighting!r}")
        self.label_temperature = _number("label_temperature", label_temperature, 0.0, 1e6, low_open=True)
        self.temperature = _number("temperature (of F_insub)", temperature, 0.0, 1e6, low_open=True)
        self.aggregate, self.label_features, self.label_weighting = aggregate, label_features, label_weighting
        self._personal_ws = BackboneWorkspace()  # scratch copies, fully overwritten on every load
        self._pretrained_ws = BackboneWorkspace()

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        return (
            f"{name} (default): reconstruction from the paper's summary (fedfs-summary.md): not verified against the "
            "paper's full text or code; the aggregation, soft-label features and weighting, F_insub temperature and "
            "the 1 − cos regulariser are our readings (named options)."
        )

    # ------------------------------------------------------------------------------- server side
    def init(self, global_model: GlobalModel, config: FederatedConfig, rng: torch.Generator) -> ServerState:
        self._refuse_dp(config)
        return super().init(global_model, config, rng)

    def configure(self, phase: str, server_state: ServerState, round: int, participants: list[str]) -> list[Message]:
        return [self.backbone_broadcast(server_state, round, phase, participants)]

    def server_step(
        self, phase: str, server_state: ServerState, uploads: list[Message]
    ) -> tuple[ServerState, list[Message]]:
        avg = FedAvg()
        for message in uploads:
            if message.kind != "backbone":
                raise ValueError(
                    f"method {self.name!r} expects only 'backbone' uploads, got {message.kind!r} from {message.sender}"
                )
            avg.accumulate(message.tensors, weight=message.meta["num_samples"])
        return self.with_backbone(server_state, avg.finalize()), []

    # ------------------------------------------------------------------------------- client side
    @staticmethod
    def _refuse_dp(config: FederatedConfig) -> None:
        if config.dp_sgd is not None:
            raise ValueError(
                "fedfs does not support dp_sgd: its intra-subject loss couples the examples of a batch (soft labels "
                "and softmax over the batch), so per-example clipping does not bound one example's influence"
            )

    def client_init(
        self,
        client_id: int,
        data: ClientData,
        global_model: GlobalModel,
        config: FederatedConfig,
        rng: torch.Generator,
    ) -> ClientState:
        self._refuse_dp(config)
        state = self.base_client_state(client_id, data, config)
        state.meta["spec"] = dict(global_model.spec)
        for name, value in global_model.backbone.state_dict().items():
            state.tensors[PERSONAL + name] = value.detach().cpu().clone()
            state.tensors[PRETRAINED + name] = value.detach().cpu().clone()
        return state

    def private_state(self, client_state: ClientState) -> dict[str, torch.Tensor]:
        """Nothing row-per-identity: FedFS keeps no class embeddings (the personalised model is a
        whole backbone, see `personalised_model`)."""
        return {}

    def client_update(
        self,
        phase: str,
        client_state: ClientState,
        broadcast: list[Message],
        data: ClientData,
        rng: torch.Generator,
    ) -> tuple[ClientState, list[Message]]:
        training = LocalTrainingConfig.from_dict(client_state.meta["training"])
        device = training.device
        spec = client_state.meta["spec"]
        global_copy = self.workspace.load(self.find(broadcast, "backbone"), device)
        personal = self._personal_ws.build(spec, device)
        personal.load_state_dict(client_state.with_prefix(PERSONAL), strict=True)
        for p in personal.parameters():
            p.requires_grad_(True)
        pretrained = self._pretrained_ws.build(spec, device)
        pretrained.load_state_dict(client_state.with_prefix(PRETRAINED), strict=True)
        model = FedFSClientModel(global_copy, personal, pretrained, self)
        result = train_local(model, data, training, rng)
        model.train(False)

        tensors = dict(client_state.tensors)
        for name, value in personal.state_dict().items():
            tensors[PERSONAL + name] = value.detach().cpu().clone()
        rnd = int(client_state.meta["round"])
        examples = float(model.parts["examples"]) if "examples" in model.parts else 0.0
        meta = dict(client_state.meta)
        meta["last_update"] = {
            "round": rnd,
            "loss": result.mean_loss,
            "steps": result.steps,
            "examples": result.examples,
            "loss_terms": {k: float(v) / examples for k, v in model.parts.items() if k != "examples" and examples},
        }
        upload = self.backbone_upload(client_state, global_copy, phase, result.event, len(data))
        return ClientState(tensors, meta), [upload]

    # ------------------------------------------------------------------------------- evaluation
    def personalised_model(
        self, client_state: ClientState, which: str = "personal", global_backbone: nn.Module | None = None
    ) -> nn.Module:
        """The client's model for the personalised protocol: ``"personal"`` (its personalised
        model) or ``"aggregated"`` (the aggregate of ``global_backbone``'s and the personalised
        model's features; FedFS's "aggregated features"). CPU, eval mode."""
        if which not in PERSONALISED_MODELS:
            raise ValueError(f"which must be one of {PERSONALISED_MODELS}, got {which!r}")
        personal = _build(client_state.meta["spec"])
        personal.load_state_dict(client_state.with_prefix(PERSONAL), strict=True)
        if which == "personal":
            return personal.eval()
        if global_backbone is None:
            raise ValueError("which='aggregated' needs global_backbone (the run's final global model, result.backbone)")
        return AggregatedBackbone(global_backbone, personal, self.aggregate).eval()

    def pretrained_model(self, client_state: ClientState) -> nn.Module:
        """The fixed pre-trained model φ0 this client holds (CPU, eval mode)."""
        model = _build(client_state.meta["spec"])
        model.load_state_dict(client_state.with_prefix(PRETRAINED), strict=True)
        return model.eval()
