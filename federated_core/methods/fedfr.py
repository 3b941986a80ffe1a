"""FedFR (Liu, Wang, Chien & Lai, "FedFR: Joint Optimization Federated Framework for Generic and
Personalized Face Recognition", AAAI 2022), Algorithm 1.

Each round (one phase, ``"train"``):

1. The server sends the global backbone Θ_g and the public-class embeddings Φ_g (Alg. 1 line 5).
2. Each participant (``ClientTraining``, lines 13-27):

   * **hard-negative sampling** (§ "Hard Negative Sampling Strategy", `select_hard_negatives`):
     features of Θ_g for the public data D_g and the local data; keep the public samples whose
     cosine to any local sample exceeds ``t_hn`` (= the CosFace margin m = 0.4 in the paper).
     How much public data each client keeps is recorded in its state (``meta["hn_history"]``).
   * trains on batches of D_l ∪ D_HN with ``L_total = α1·L_cos + α2·L_con + α3·L_BCE`` (Eq. 7):

     - ``L_cos``: the balanced CosFace of Eq. 3 over the K_g public + K_l local classes, proxies
       ``[W_l; Φ]`` (s = 30, m = 0.4);
     - ``L_con``: the contrastive regulariser of Eq. 5 (`model_contrastive`; positive the feature
       of the global model Θ^t, negative that of the previous local model Θ^{t−1}_l, τ = 0.5);
     - ``L_BCE``: the Decoupled Feature Customisation (DFC): a transform Π (a d×d linear layer)
       and K_l one-vs-all branches Ω with the margin BCE of Eq. 6 (`margin_bce`; λ = 0.7,
       s′ = 30, m′ = 0.4, t′ = 3, a learned bias per branch), on local *and* public samples
       (public samples are negatives of every branch).

     Θ, Φ, W_l, Π, Ω and the biases are all updated (lines 20-24), with the run's local SGD
     settings (the paper: SGD, lr 1e-3, weight decay 5e-4, E = 4 local epochs, T = 30 rounds).
   * uploads Θ_l and Φ_l. W_l, Π, Ω, the biases and the local model Θ_l (kept as the next
     round's "previous model" and as the personalised backbone) never leave the client.
3. The server averages Θ (Eq. 2) and Φ (Eq. 4) with the same weights.

The public data D_g is shipped to every party at set-up (`fedfr_public`): it is public, so it is
not on the wire; the wire log shows only Θ and Φ leaving clients.

Evaluation (FedFR Table 3, `personalised_model`): Θ_g for the generic protocol; for the
personalised protocol Θ_g, the local backbone Θ_l, or ``[Θ_l, Π_l]`` (Θ_l followed by Π, the
paper's choice), see `federated_core.personalised`.

Ablation switches (Table 1 rows): ``public_data`` (HN-sampled global data with the balanced
CosFace and the shared Φ; off = the FedAvg baseline of row 2: local CosFace over K_l classes,
only Θ leaves the client), ``hard_negative`` (off = all of D_g every round; ``t_hn`` is Figure 3's
threshold), ``contrastive``, ``dfc``; ``dfc_loss="cosface"`` is Table 2's "Cosface" branch
variant (a multi-class CosFace with s′, m′ on the branches instead of the BCE). Figure 4 compares
with ``fedface`` (registered by `federated_core.methods.fedface`).

Where the paper is vague we follow the official code (github.com/jackie840129/FedFR): the DFC
transform is a d×d linear layer initialised to the identity (bias 0); the branch vectors start as
copies of the local class embeddings W_l, each with its own bias (0); public samples are negatives
of every branch; the BCE is summed over branches and averaged over the batch; the contrastive term
is the cross-entropy of cosine logits over τ with the global feature as target; the FedAvg weight
of a client is its number of local images plus the number of public images it selected
(``fedavg_weight="local+selected"``; ``"local"`` is Eq. 2/4 read literally, N_l(i) local images).
``fidelity="paper"`` selects ``"local"``, ``fidelity="official-code"`` (and ``"default"``, today's
behaviour) ``"local+selected"``; `FedFR.hyperparameters` then records
``leaks_public_selection_count: true``.

Where the official code differs from the paper and we follow the paper:

* the averaged public embeddings Φ are used: the official code's server resets them every round
  (a typo assigns the average to an attribute nothing reads), so there Φ is never shared;
* the round-0 "previous model": the official code contrasts against a randomly initialised
  network in a client's first round. Here a client that has never trained has no previous local
  model and its first round has no ``L_con`` term (using the global model as the previous model
  would give the constant log 2 with zero gradient: the same thing);
* model selection: the official code picks its checkpoint on a test set; nothing here looks at
  test data during training.

Other readings: the initial Φ_0 is "the pre-trained model's" class embeddings of D_g (Alg. 1
line 2); our φ0 checkpoints keep no head, so Φ_0 is the normalised mean feature of each public
class under the initial backbone (``public_init="mean-feature"``; or ``"random"``). W_l is
initialised as in `federated_core.methods._centers` (``center_init``). The DFC transform is
applied to the raw backbone feature f (f′ = Π(f), as the paper writes), and the gradient of every
term flows into Θ_l (the paper trains end to end). A client's momentum buffer starts at zero
every round (the engine's `train_local`).

Privacy notes: the upload weight ``local + selected`` tells the server how many public images were
within t_HN of the client's data (a function of the private data, not privatised);
``fedavg_weight="local"`` avoids that. DP-SGD is refused: the hard-negative selection and the
mean-feature initialisations read the client's images without noise, and the contrastive term
couples each example with two other models' features (DP-SGD's per-example clipping would still
apply, but the selection is outside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from federated_core.data.faceset import FaceSet
from federated_core.engine.config import FederatedConfig, LocalTrainingConfig
from federated_core.engine.local_sgd import LocalTrainingResult, train_local
from federated_core.engine.messages import SERVER, Message, make_message, register_message_kind
from federated_core.engine.state import ClientData, ClientState, ServerState
from federated_core.methods._centers import CENTER_INITS, init_centers, resolve_center_init
from federated_core.methods.base import BackboneMethod, BackboneWorkspace, FedAvg, GlobalModel, register_method
from federated_core.methods.fedfr_losses import margin_bce, model_contrastive, select_hard_negatives
from federated_core.methods.fedfr_public import PublicData, check_public_set, describe_public_set, tensors_digest
from federated_core.methods.fidelity import UNSET, Preset

PUBLIC_KIND = "public_class_embeddings"
register_message_kind(
    PUBLIC_KIND,
    "FedFR's Φ: class embeddings of the public identities D_g (server average down, a client's trained copy up; Eq. 4)",
)

PUBLIC_EMBEDDINGS = "public_embeddings"  # server-state tensor Φ_g [K_g, d]
LOCAL_BACKBONE = "local_backbone."  # client-state prefix of Θ_l (previous local model, personalised backbone)
DFC_WEIGHT, DFC_BIAS = "dfc.transform.weight", "dfc.transform.bias"
DFC_BRANCHES, DFC_BRANCH_BIAS = "dfc.branches", "dfc.branch_bias"
DFC_LOSSES = ("bce", "cosface")
FEDAVG_WEIGHTS = ("local+selected", "local")
PUBLIC_INITS = ("mean-feature", "random")
PERSONALISED_MODELS = ("local", "local+dfc")


class FrozenBackbone(nn.Module):
    """A backbone used only for features (Θ_g and Θ^{t−1}_l of Eq. 5): no gradient, always in
    eval mode (so BatchNorm statistics are not updated by the client's training)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone(x)


class TransformedBackbone(nn.Module):
    """``[Θ_l, Π_l]``: a backbone followed by the DFC transform (FedFR's personalised model)."""

    def __init__(self, backbone: nn.Module, transform: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.transform = transform
        self.embedding_dim = transform.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self.backbone(x))


def identity_transform(d: int) -> nn.Linear:
    """The DFC transform Π at initialisation: a d×d linear layer equal to the identity."""
    return linear_from(torch.eye(d), torch.zeros(d))


def linear_from(weight: torch.Tensor, bias: torch.Tensor, device: str | torch.device = "cpu") -> nn.Linear:
    """A linear layer holding copies of ``weight [out, in]`` and ``bias [out]`` (no random
    initialisation is drawn: the global RNG is left untouched)."""
    layer = torch.nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], device=device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


class FedFRClientModel(nn.Module):
    """``forward(x, y) -> [B]`` per-example ``α1·L_cos + α2·L_con + α3·L_BCE`` (Eq. 7).

    Labels ``y``: ``0..K_l−1`` local classes (rows of W_l), ``K_l..K_l+K_g−1`` public classes
    (rows of Φ). Running sums of each term (detached) are kept in ``parts`` for reporting.
    """

    def __init__(
        self,
        backbone: nn.Module,
        centers: torch.Tensor,
        public_embeddings: torch.Tensor | None,
        transform: nn.Linear | None,
        branches: torch.Tensor | None,
        branch_bias: torch.Tensor | None,
        global_model: nn.Module | None,
        previous_model: nn.Module | None,
        hp: "FedFR",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.centers = nn.Parameter(centers.detach().clone())
        self.public = None if public_embeddings is None else nn.Parameter(public_embeddings.detach().clone())
        self.transform = transform
        self.branches = None if branches is None else nn.Parameter(branches.detach().clone())
        self.branch_bias = None if branch_bias is None else nn.Parameter(branch_bias.detach().clone())
        self.global_model = None if global_model is None else FrozenBackbone(global_model)
        self.previous_model = None if previous_model is None else FrozenBackbone(previous_model)
        self.hp = hp
        self.num_local = int(centers.shape[0])
        self.parts: dict[str, torch.Tensor] = {}

    def _add(self, name: str, value: torch.Tensor) -> None:
        v = value.detach().sum()
        self.parts[name] = self.parts[name] + v if name in self.parts else v

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from federated_core.models.heads import margin_logits

        hp = self.hp
        f = self.backbone(x)
        proxies = self.centers if self.public is None else torch.cat([self.centers, self.public])
        logits = margin_logits(f, proxies, y, "cosface", hp.s, hp.m, check_labels=False)
        l_cos = F.cross_entropy(logits, y, reduction="none")
        total = hp.alpha_cos * l_cos
        self._add("cos", l_cos)
        self._add("examples", torch.ones_like(l_cos))
        if self.previous_model is not None and self.global_model is not None:
            l_con = model_contrastive(f, self.global_model(x), self.previous_model(x), hp.tau)
            total = total + hp.alpha_con * l_con
            self._add("con", l_con)
        if self.transform is not None:
            branches, branch_bias = self.branches, self.branch_bias
            if branches is None or branch_bias is None:
                raise ValueError("the DFC transform needs its branches and branch_bias; got None")
            local_target = torch.where(y < self.num_local, y, torch.full_like(y, -1))
            f_dfc = self.transform(f)
            if hp.dfc_loss == "bce":
                cos = F.normalize(f_dfc, dim=1) @ F.normalize(branches, dim=1).t()
                l_dfc = margin_bce(cos, local_target, branch_bias, hp.lam, hp.s_prime, hp.m_prime, hp.t_prime)
            else:  # Table 2's "Cosface" branch: multi-class CosFace on the branches, local samples only
                branch_logits = margin_logits(
                    f_dfc, branches, local_target, "cosface", hp.s_prime, hp.m_prime, check_labels=False
                )
                has = (local_target >= 0).to(branch_logits.dtype)
                l_dfc = F.cross_entropy(branch_logits, local_target.clamp(min=0), reduction="none") * has
            total = total + hp.alpha_bce * l_dfc
            self._add("dfc", l_dfc)
        return total


def _positive_finite(name: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or (float(value) < 0 if allow_zero else float(value) <= 0):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _in_range(name: str, value: Any, low: float, high: float, high_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or not (low <= float(value) and (float(value) < high if high_open else float(value) <= high)):
        raise ValueError(f"{name} must be a number in [{low}, {high}{')' if high_open else ']'}, got {value!r}")
    return float(value)


def _load_state(
    workspace: BackboneWorkspace, spec: dict[str, Any], state: dict[str, torch.Tensor], device: str
) -> nn.Module:
    """``workspace``'s model on ``device`` with every parameter and buffer overwritten from ``state``."""
    model = workspace.build(spec, device)
    model.load_state_dict(state, strict=True)
    return model


@dataclass
class _ClientModels:
    """The models of one FedFR local pass: Θ^t_l, Π, the previous local model and the Eq. 7 model."""

    local: nn.Module
    transform: nn.Linear | None
    previous: nn.Module | None
    model: FedFRClientModel


FEDFR_DEFAULTS: dict[str, Any] = {
    "public_data": True,
    "hard_negative": True,
    "t_hn": 0.4,
    "contrastive": True,
    "dfc": True,
    "dfc_loss": "bce",
    "s": 30.0,
    "m": 0.4,
    "tau": 0.5,
    "lam": 0.7,
    "s_prime": 30.0,
    "m_prime": 0.4,
    "t_prime": 3.0,
    "alpha_cos": 1.0,
    "alpha_con": 5.0,
    "alpha_bce": 10.0,
    "fedavg_weight": "local+selected",
}
FEDFR_PAPER_VALUES: dict[str, Any] = {
    **{k: v for k, v in FEDFR_DEFAULTS.items() if k != "fedavg_weight"},  # § Implementation, Table 1's full row
    "fedavg_weight": "local",  # Eq. 2 / Eq. 4: N_l(i), the client's own images
}


def fedfr_paper_preset(explicit: Mapping[str, Any]) -> Preset:
    """FedFR's paper: the full method of Table 1 (public data with hard-negative sampling at
    t_HN = m = 0.4, contrastive, DFC with the BCE of Eq. 6), m = m′ = 0.4, s = s′ = 30, τ = 0.5,
    λ = 0.7, t′ = 3, α = (1, 5, 10) (§ Implementation), and FedAvg weights N_l(i), the client's
    number of local images (Eq. 2, Eq. 4)."""
    return Preset(dict(FEDFR_PAPER_VALUES))


def fedfr_official_code_preset(explicit: Mapping[str, Any]) -> Preset:
    """FedFR's official code (github.com/jackie840129/FedFR): as the paper, but a client's FedAvg
    weight is its number of local images plus the number of public images it selected
    (``fedavg_weight="local+selected"``)."""
    return Preset({**FEDFR_PAPER_VALUES, "fedavg_weight": "local+selected"})


@register_method("fedfr")
class FedFR(BackboneMethod):
    """FedFR, Algorithm 1 (see the module docstring).

    Hyper-parameters (paper defaults): ``public_data`` (True), ``hard_negative`` (True), ``t_hn``
    (0.4), ``contrastive`` (True), ``dfc`` (True), ``dfc_loss`` (``"bce"`` or ``"cosface"``),
    ``s`` / ``m`` (30 / 0.4, Eq. 3), ``tau`` (0.5, Eq. 5), ``lam`` / ``s_prime`` / ``m_prime`` /
    ``t_prime`` (0.7 / 30 / 0.4 / 3, Eq. 6), ``alpha_cos`` / ``alpha_con`` / ``alpha_bce``
    (1 / 5 / 10, Eq. 7), ``fedavg_weight`` (``"local+selected"`` or ``"local"``), ``center_init``
    (W_l: ``"auto"``, ``"random"``, ``"mean-feature"``), ``public_init`` (Φ_0: ``"mean-feature"``
    or ``"random"``), ``public_set`` (None = the default synthetic spec, a spec dict, or a
    `FaceSet`; see `fedfr_public`), ``fidelity`` (``"default"`` = today's values, which are the
    official code's; ``"paper"``: `fedfr_paper_preset`; ``"official-code"``:
    `fedfr_official_code_preset`). The keys of `FEDFR_DEFAULTS` default to the preset's values.
    """

    phases = ("train",)
    fidelities = ("default", "paper", "official-code")

    def __init__(
        self,
        public_data: bool = UNSET,
        hard_negative: bool = UNSET,
        t_hn: float = UNSET,
        contrastive: bool = UNSET,
        dfc: bool = UNSET,
        dfc_loss: str = UNSET,
        s: float = UNSET,
        m: float = UNSET,
        tau: float = UNSET,
        lam: float = UNSET,
        s_prime: float = UNSET,
        m_prime: float = UNSET,
        t_prime: float = UNSET,
        alpha_cos: float = UNSET,
        alpha_con: float = UNSET,
        alpha_bce: float = UNSET,
        fedavg_weight: str = UNSET,
        center_init: str = "auto",
        public_init: str = "mean-feature",
        public_set: dict[str, Any] | FaceSet | None = None,
        fidelity: str = "default",
    ) -> None:
        given = {name: value for name, value in locals().items() if name in FEDFR_DEFAULTS}
        hp = self.apply_fidelity(
            fidelity,
            given,
            FEDFR_DEFAULTS,
            {"paper": fedfr_paper_preset, "official-code": fedfr_official_code_preset},
        )
        public_data, hard_negative, t_hn, contrastive = (
            hp["public_data"],
            hp["hard_negative"],
            hp["t_hn"],
            hp["contrastive"],
        )
        dfc, dfc_loss, s, m, tau, lam = hp["dfc"], hp["dfc_loss"], hp["s"], hp["m"], hp["tau"], hp["lam"]
        s_prime, m_prime, t_prime = hp["s_prime"], hp["m_prime"], hp["t_prime"]
        alpha_cos, alpha_con, alpha_bce, fedavg_weight = (
            hp["alpha_cos"],
            hp["alpha_con"],
            hp["alpha_bce"],
            hp["fedavg_weight"],
        )
        super().__init__()
        for name, value in (
            ("public_data", public_data),
            ("hard_negative", hard_negative),
            ("contrastive", contrastive),
            ("dfc", dfc),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        if dfc_loss not in DFC_LOSSES:
            raise ValueError(f"dfc_loss must be one of {DFC_LOSSES}, got {dfc_loss!r}")
        if fedavg_weight not in FEDAVG_WEIGHTS:
            raise ValueError(f"fedavg_weight must be one of {FEDAVG_WEIGHTS}, got {fedavg_weight!r}")
        if center_init not in CENTER_INITS:
            raise ValueError(f"center_init must be one of {CENTER_INITS}, got {center_init!r}")
        if public_init not in PUBLIC_INITS:
            raise ValueError(f"public_init must be one of {PUBLIC_INITS}, got {public_init!r}")
        self.public_data, self.hard_negative, self.contrastive, self.dfc = public_data, hard_negative, contrastive, dfc
        self.t_hn = _in_range("t_hn (the hard-negative threshold)", t_hn, -1.0, 1.0)
        self.dfc_loss = dfc_loss
        self.s = _positive_finite("s (CosFace scale of Eq. 3)", s)
        self.m = _in_range("m (CosFace margin of Eq. 3)", m, 0.0, 1.0, high_open=True)
        self.tau = _positive_finite("tau (τ of Eq. 5)", tau)
        self.lam = _in_range("lam (λ of Eq. 6)", lam, 0.0, 1.0)
        self.s_prime = _positive_finite("s_prime (s′ of Eq. 6)", s_prime)
        self.m_prime = _in_range("m_prime (m′ of Eq. 6)", m_prime, 0.0, 1.0, high_open=True)
        self.t_prime = _positive_finite("t_prime (t′ of Eq. 6)", t_prime)
        self.alpha_cos = _positive_finite("alpha_cos (α1 of Eq. 7)", alpha_cos, allow_zero=True)
        self.alpha_con = _positive_finite("alpha_con (α2 of Eq. 7)", alpha_con, allow_zero=True)
        self.alpha_bce = _positive_finite("alpha_bce (α3 of Eq. 7)", alpha_bce, allow_zero=True)
        self.fedavg_weight, self.center_init, self.public_init = fedavg_weight, center_init, public_init
        self.public_set = check_public_set(public_set)
        self._public = PublicData(self.public_set)  # public data only (see fedfr_public)
        self._global_ws = BackboneWorkspace()  # scratch copies, fully overwritten on every load
        self._previous_ws = BackboneWorkspace()

    def hyperparameters(self) -> dict[str, Any]:
        """The recorded hyper-parameters, with ``leaks_public_selection_count`` (True when the
        FedAvg weight tells the server, un-noised, how many public images were hard negatives of
        the client's faces: ``fedavg_weight="local+selected"`` with public data)."""
        params = super().hyperparameters()
        if "public_set" in params:
            params["public_set"] = describe_public_set(self.public_set)
        params["leaks_public_selection_count"] = self.fedavg_weight == "local+selected" and self.public_data
        return params

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        leak = (
            "the FedAvg weight (local + selected public images) tells the server, un-noised, how many public "
            "images resembled the client's faces"
        )
        if fidelity == "paper":
            return (
                f"{name} (paper: FedFR, Liu et al. AAAI 2022): the full method of Table 1 with § Implementation's "
                "values and FedAvg weights N_l(i), the client's own image count (Eq. 2, 4); the public set is "
                "synthetic and the paper's vague points follow the official code (see the module docstring)."
            )
        which = "official-code" if fidelity == "official-code" else "default, = the official code's weights"
        return (
            f"{name} ({which}): FedFR as the paper but with the official code's FedAvg weight, local + selected "
            f"public images; caveat: {leak}. The code's other quirks (Φ reset every round, a random 'previous "
            "model' in round 1, test-set model selection) are not reproduced."
        )

    # ------------------------------------------------------------------------------- server side
    def init(self, global_model: GlobalModel, config: FederatedConfig, rng: torch.Generator) -> ServerState:
        self._refuse_dp(config)
        state = super().init(global_model, config, rng)
        if self.public_data:
            resolution = int(global_model.spec["resolution"])
            faces = self._public.faces(resolution)
            data = ClientData.from_faces(faces)
            state.tensors[PUBLIC_EMBEDDINGS] = init_centers(self.public_init, data, global_model, rng, config.device)
            state.meta["public_identities"] = data.identities
        return state

    def configure(self, phase: str, server_state: ServerState, round: int, participants: list[str]) -> list[Message]:
        messages = [self.backbone_broadcast(server_state, round, phase, participants)]
        if self.public_data:
            messages.append(
                make_message(
                    PUBLIC_KIND,
                    SERVER,
                    tuple(participants),
                    round,
                    phase,
                    {"embeddings": server_state.tensors[PUBLIC_EMBEDDINGS]},
                    meta={"identities": server_state.meta["public_identities"]},
                )
            )
        return messages

    def server_step(
        self, phase: str, server_state: ServerState, uploads: list[Message]
    ) -> tuple[ServerState, list[Message]]:
        backbones, publics = FedAvg(), FedAvg()
        senders: dict[str, set[str]] = {"backbone": set(), PUBLIC_KIND: set()}
        for message in uploads:
            if message.kind == "backbone":
                backbones.accumulate(message.tensors, weight=message.meta["num_samples"])
            elif message.kind == PUBLIC_KIND and self.public_data:
                publics.accumulate({"embeddings": message.tensors["embeddings"]}, weight=message.meta["num_samples"])
            else:
                raise ValueError(
                    f"method {self.name!r} does not expect uploads of kind {message.kind!r} from {message.sender}"
                )
            senders[message.kind].add(message.sender)
        if self.public_data and senders["backbone"] != senders[PUBLIC_KIND]:
            raise ValueError(
                f"every FedFR client uploads Θ and Φ together; backbone from {sorted(senders['backbone'])}, "
                f"Φ from {sorted(senders[PUBLIC_KIND])}"
            )
        state = self.with_backbone(server_state, backbones.finalize())
        if self.public_data:
            state.tensors[PUBLIC_EMBEDDINGS] = publics.finalize()["embeddings"]  # Eq. 4
        return state, []

    # ------------------------------------------------------------------------------- client side
    @staticmethod
    def _refuse_dp(config: FederatedConfig) -> None:
        if config.dp_sgd is not None:
            raise ValueError(
                "fedfr does not support dp_sgd: its hard-negative selection and mean-feature initialisations read "
                "the client's images without noise, so DP-SGD's guarantee would not cover the upload"
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
        if self.public_data:
            overlap = sorted(set(data.identities) & set(self._public.identities(int(global_model.spec["resolution"]))))
            if overlap:
                raise ValueError(
                    f"client {client_id} holds identities of the public set D_g ({overlap[:10]}); public identities "
                    "must be disjoint from every client's (use federated_core.data.split.split_identities)"
                )
        how = resolve_center_init(self.center_init, config)
        centers = init_centers(how, data, global_model, rng, config.device)
        state.tensors["centers"] = centers
        state.meta["center_init"] = how
        if self.dfc:
            d = int(global_model.spec["embedding_dim"])
            transform = identity_transform(d)
            state.tensors[DFC_WEIGHT] = transform.weight.detach().clone()
            state.tensors[DFC_BIAS] = transform.bias.detach().clone()
            state.tensors[DFC_BRANCHES] = centers.clone()  # official code: branches start as copies of W_l
            state.tensors[DFC_BRANCH_BIAS] = torch.zeros(data.num_classes)
        state.meta["hn_history"] = []
        return state

    def private_state(self, client_state: ClientState) -> dict[str, torch.Tensor]:
        """W_l (``centers``) and the branch vectors Ω (rows = local identities)."""
        out = {"centers": client_state.tensors["centers"]}
        if DFC_BRANCHES in client_state.tensors:
            out[DFC_BRANCHES] = client_state.tensors[DFC_BRANCHES]
        return out

    def _training_data(
        self,
        data: ClientData,
        global_backbone: nn.Module,
        backbone_key: str,
        resolution: int,
        device: str,
    ) -> tuple[ClientData, dict[str, int]]:
        """D_l ∪ D_HN with labels ``0..K_l−1`` (local) and ``K_l + j`` (public class j)."""
        if not self.public_data:
            return data, {"kept": 0, "public_total": 0}
        from federated_core.models import embed

        public = self._public.faces(resolution)
        public_ids = self._public.identities(resolution)
        if self.hard_negative:
            public_features = self._public.features(global_backbone, backbone_key, resolution, device)
            local_features = embed(global_backbone, data.faces, device=device)
            keep = select_hard_negatives(public_features, local_features, self.t_hn).cpu()
        else:
            keep = torch.ones(len(public), dtype=torch.bool)
        label_map = dict(data.label_map)
        label_map.update({pid: data.num_classes + j for j, pid in enumerate(public_ids)})
        faces = FaceSet.concat([data.faces, public.subset(keep)]) if bool(keep.any()) else data.faces
        return ClientData(faces, label_map), {"kept": int(keep.sum()), "public_total": len(public)}

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
        backbone_message = self.find(broadcast, "backbone")
        backbone_key = tensors_digest(backbone_message.tensors)
        global_copy = self._global_ws.load(backbone_message, device)  # Θ^t_g, frozen
        train_data, hn = self._training_data(data, global_copy, backbone_key, int(spec["resolution"]), device)
        models = self._client_models(client_state, broadcast, backbone_message, global_copy, device)
        result = train_local(models.model, train_data, training, rng)
        models.model.train(False)
        tensors = self._kept_tensors(client_state, models)
        meta = self._updated_meta(client_state, models, result, hn, len(data))
        weight = len(data) + (hn["kept"] if self.fedavg_weight == "local+selected" else 0)
        return ClientState(tensors, meta), self._uploads(client_state, models, result, phase, weight)

    def _client_models(
        self,
        client_state: ClientState,
        broadcast: list[Message],
        backbone_message: Message,
        global_copy: nn.Module,
        device: str,
    ) -> _ClientModels:
        """The local pass's models: Φ_g, the previous local model, the DFC modules, Θ^t_l ← Θ^t_g, and
        the Eq. 7 client model over them."""
        public = None
        if self.public_data:
            public = self.find(broadcast, PUBLIC_KIND).tensors["embeddings"].to(device)
        previous_state = client_state.with_prefix(LOCAL_BACKBONE)
        previous = None
        if self.contrastive and previous_state:
            # Θ^{t−1}_l, frozen
            previous = _load_state(self._previous_ws, client_state.meta["spec"], previous_state, device)
        transform = branches = branch_bias = None
        if self.dfc:
            transform = linear_from(client_state.tensors[DFC_WEIGHT], client_state.tensors[DFC_BIAS], device)
            branches = client_state.tensors[DFC_BRANCHES].to(device)
            branch_bias = client_state.tensors[DFC_BRANCH_BIAS].to(device)
        local = self.workspace.load(backbone_message, device)  # Θ^t_l ← Θ^t_g (line 14), trained
        model = FedFRClientModel(
            local,
            client_state.tensors["centers"].to(device),
            public,
            transform,
            branches,
            branch_bias,
            global_copy if self.contrastive else None,
            previous,
            self,
        )
        return _ClientModels(local, transform, previous, model)

    def _kept_tensors(self, client_state: ClientState, models: _ClientModels) -> dict[str, torch.Tensor]:
        """The client's tensors after training: W_l, Θ_l and (with DFC) Π, Ω and the branch biases."""
        model, transform = models.model, models.transform
        tensors = dict(client_state.tensors)
        tensors["centers"] = model.centers.detach().cpu().clone()
        for name, value in models.local.state_dict().items():
            tensors[LOCAL_BACKBONE + name] = value.detach().cpu().clone()
        if self.dfc:
            if transform is None or model.branches is None or model.branch_bias is None:
                raise ValueError("FedFR's DFC state is incomplete (transform, branches or branch_bias is None)")
            tensors[DFC_WEIGHT] = transform.weight.detach().cpu().clone()
            tensors[DFC_BIAS] = transform.bias.detach().cpu().clone()
            tensors[DFC_BRANCHES] = model.branches.detach().cpu().clone()
            tensors[DFC_BRANCH_BIAS] = model.branch_bias.detach().cpu().clone()
        return tensors

    def _updated_meta(
        self,
        client_state: ClientState,
        models: _ClientModels,
        result: LocalTrainingResult,
        hn: dict[str, int],
        num_local: int,
    ) -> dict[str, Any]:
        """The client's meta after training: the hard-negative history and the round's loss terms."""
        rnd = int(client_state.meta["round"])
        model = models.model
        examples = float(model.parts["examples"]) if "examples" in model.parts else 0.0
        parts = {k: float(v) / examples for k, v in model.parts.items() if k != "examples" and examples}
        record = {"round": rnd, "kept": hn["kept"], "public_total": hn["public_total"], "local": num_local}
        meta = dict(client_state.meta)
        meta["hn_history"] = list(client_state.meta.get("hn_history", [])) + [record]
        meta["last_update"] = {
            "round": rnd,
            "loss": result.mean_loss,
            "steps": result.steps,
            "examples": result.examples,
            "loss_terms": parts,
            "hn_kept": hn["kept"],
            "hn_public_total": hn["public_total"],
            "contrastive_active": models.previous is not None,
        }
        return meta

    def _uploads(
        self,
        client_state: ClientState,
        models: _ClientModels,
        result: LocalTrainingResult,
        phase: str,
        weight: int,
    ) -> list[Message]:
        """The uploads: Θ_l and (with public data) Φ_l, both with FedAvg weight ``weight``."""
        rnd = int(client_state.meta["round"])
        uploads = [self.backbone_upload(client_state, models.local, phase, result.event, weight)]
        if self.public_data:
            if models.model.public is None:
                raise ValueError(
                    "public_data is on but the client model has no public embeddings (model.public is None)"
                )
            uploads.append(
                make_message(
                    PUBLIC_KIND,
                    self.party(client_state),
                    (SERVER,),
                    rnd,
                    phase,
                    {"embeddings": models.model.public},
                    event=result.event,
                    meta={"num_samples": int(weight)},
                )
            )
        return uploads

    # ------------------------------------------------------------------------------- evaluation
    def personalised_model(self, client_state: ClientState, which: str = "local+dfc") -> nn.Module:
        """The client's model for the personalised protocols (FedFR Table 3): ``"local"`` (its
        last local backbone Θ_l) or ``"local+dfc"`` (``[Θ_l, Π_l]``, the paper's choice). The
        global model Θ_g is the engine's ``result.backbone``. CPU, eval mode."""
        from federated_core.models import build_backbone

        if which not in PERSONALISED_MODELS:
            raise ValueError(f"which must be one of {PERSONALISED_MODELS}, got {which!r}")
        local_state = client_state.with_prefix(LOCAL_BACKBONE)
        if not local_state:
            raise ValueError(
                f"client {client_state.meta.get('client_id')} has not trained yet: it has no local backbone Θ_l"
            )
        spec = client_state.meta["spec"]
        with torch.random.fork_rng(devices=[]):
            backbone = build_backbone(
                spec["name"],
                embedding_dim=spec["embedding_dim"],
                resolution=spec["resolution"],
                **spec.get("kwargs", {}),
            )
        backbone.load_state_dict(local_state, strict=True)
        if which == "local":
            return backbone.eval()
        if DFC_WEIGHT not in client_state.tensors:
            raise ValueError("which='local+dfc' needs the DFC module (this run has dfc=False); use which='local'")
        transform = linear_from(client_state.tensors[DFC_WEIGHT], client_state.tensors[DFC_BIAS])
        return TransformedBackbone(backbone, transform).eval()
