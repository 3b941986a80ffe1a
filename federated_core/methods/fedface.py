"""FedFace (Aggarwal, Zhou & Jain 2021), as re-implemented for multi-identity clients by FedFR and
PrivacyFace (App. A.2.5).

Each client trains backbone + ``W_k`` on its local margin loss and uploads both; the server FedAvgs
the backbone, stores every client's ``W_k`` and applies the spreadout regulariser to all stored
class embeddings, pairs of rows of *different* clients only (PrivacyFace A.2.5 counts 7K×7K×3×4
cross-client pairs), then returns each participant its own corrected ``W_k`` at the start of its
next round.

Two forms (``form``):

* ``"distance"`` (default): Yu et al. 2020's spreadout regulariser as FedFace's paper uses it,
  ``λ·Σ_{(a,b)} max(0, ν − ‖ŵ_a − ŵ_b‖)²`` over ordered cross-client pairs of normalised rows, one
  server step ``W ← W − η·∇`` (η the clients' learning rate; FedAwS's ``W ← W − λη∇reg_sp``).
  Defaults λ = 10, ν = 0.9 (the authors' recommendation quoted in PrivacyFace A.2.5, which sweeps
  λ ∈ {0.5, 1, 1.5, 5, 10, 15} and ν ∈ {0.3, 0.6, 0.9}).
* ``"cosine"``: FedFace's public code, ``λ·mean_{(a,b)} max(0, cos − τ)²`` with τ =
  ``cos_threshold`` (0.3 there); FedFR's re-implementation uses τ = 0.4 with ``server_steps=20``
  at ``server_lr_multiplier=10``.

In every form the server runs ``server_steps`` steps of ``W ← W − (server_lr_multiplier·η)·∇(λ·reg)``.

``fidelity`` (`federated_core.methods.fidelity`): ``"default"`` is the re-implementation above
(PrivacyFace A.2.5: multi-identity clients train and upload ``W_k``, distance form λ = 10, ν = 0.9);
``"official-code"`` follows FedFace's public code: the cosine form with τ = 0.3, ``W_k`` fixed on
the client (``train_centers=False``; the client trains the backbone with the positive-only loss
against it, and only the server's regulariser moves it) and one identity per client
(``single_identity=True``: a client with more identities is refused at ``client_init``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from federated_core.engine.config import FederatedConfig
from federated_core.engine.state import ClientData, ClientState, ServerState
from federated_core.methods._centers import CenterMethod, resolve_center_init
from federated_core.methods.base import GlobalModel, register_method
from federated_core.methods.fidelity import UNSET, Preset
from federated_core.methods.regularizers import (
    cross_client_mask,
    server_gradient_step,
    spreadout_cosine,
    spreadout_distance,
)

FEDFACE_FORMS = ("distance", "cosine")


FEDFACE_DEFAULTS: dict[str, Any] = {
    "form": "distance",
    "cos_threshold": 0.3,
    "train_centers": True,
    "single_identity": False,
}


def fedface_official_code_preset(explicit: Mapping[str, Any]) -> Preset:
    """FedFace's public code: the spreadout regulariser ``mean_{(a,b)} relu(cos(w_a, w_b) − 0.3)²``
    over pairs of class centers (`spreadout_cosine`), ``W`` fixed on the client (only the server's
    regulariser moves it), one identity per client."""
    return Preset({"form": "cosine", "cos_threshold": 0.3, "train_centers": False, "single_identity": True})


@register_method("fedface")
class FedFace(CenterMethod):
    """Upload W_k; spreadout regulariser on all W at the server; W_k returned to its client.

    Hyper-parameters: ``lam`` (λ, default 10), ``margin`` (ν, default 0.9, distance form),
    ``form`` (``"distance"`` or ``"cosine"``), ``cos_threshold`` (τ, default 0.3, cosine form),
    ``server_steps`` (1), ``server_lr_multiplier`` (1), ``positive_margin`` (0.9: a client holding
    one identity — FedFace's own setting — trains on the positive-only loss
    ``max(0, 0.9 − cos(f, w))²`` of FedAwS, which FedFace builds on; a margin softmax over one class
    would train nothing), ``train_centers`` (True: the client trains its ``W_k``; False: ``W_k`` is
    fixed on the client and only the server's regulariser moves it), ``single_identity`` (False;
    True refuses at ``client_init`` a client holding more than one identity), ``fidelity``
    (``"default"``: PrivacyFace A.2.5's re-implementation; ``"official-code"``:
    `fedface_official_code_preset`), and those of `CenterMethod`. ``form``, ``cos_threshold``,
    ``train_centers`` and ``single_identity`` default to the fidelity preset's values.
    """

    uploads_centers = True
    returns_centers = True
    fidelities = ("default", "official-code")

    def __init__(
        self,
        lam: float = 10.0,
        margin: float = 0.9,
        form: str = UNSET,
        cos_threshold: float = UNSET,
        server_steps: int = 1,
        server_lr_multiplier: float = 1.0,
        loss: str = "cosface",
        s: float = 30.0,
        m: float = 0.35,
        center_init: str = "auto",
        positive_margin: float = 0.9,
        train_centers: bool = UNSET,
        single_identity: bool = UNSET,
        fidelity: str = "default",
    ) -> None:
        hp = self.apply_fidelity(
            fidelity,
            {
                "form": form,
                "cos_threshold": cos_threshold,
                "train_centers": train_centers,
                "single_identity": single_identity,
            },
            FEDFACE_DEFAULTS,
            {"official-code": fedface_official_code_preset},
        )
        form, cos_threshold = hp["form"], hp["cos_threshold"]
        super().__init__(loss=loss, s=s, m=m, center_init=center_init, fidelity=fidelity)
        for name in ("train_centers", "single_identity"):
            if not isinstance(hp[name], bool):
                raise ValueError(f"{name} must be True or False, got {hp[name]!r}")
        self.train_centers, self.single_identity = hp["train_centers"], hp["single_identity"]
        if not (-1.0 < positive_margin <= 1.0):
            raise ValueError(
                f"positive_margin (ν of the positive-only loss) must be in (-1, 1], got {positive_margin!r}"
            )
        self.positive_margin = float(positive_margin)
        if form not in FEDFACE_FORMS:
            raise ValueError(f"form must be one of {FEDFACE_FORMS}, got {form!r}")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam (λ) must be a finite number >= 0, got {lam!r}")
        if not (0.0 < margin <= 2.0):
            raise ValueError(f"margin (ν) must be in (0, 2], got {margin!r}")
        if not (-1.0 <= cos_threshold < 1.0):
            raise ValueError(f"cos_threshold (τ) must be in [-1, 1), got {cos_threshold!r}")
        if isinstance(server_steps, bool) or not isinstance(server_steps, int) or server_steps < 1:
            raise ValueError(f"server_steps must be an integer >= 1, got {server_steps!r}")
        if not (server_lr_multiplier > 0 and math.isfinite(server_lr_multiplier)):
            raise ValueError(f"server_lr_multiplier must be a finite number > 0, got {server_lr_multiplier!r}")
        self.lam, self.margin, self.form = float(lam), float(margin), form
        self.cos_threshold, self.server_steps = float(cos_threshold), server_steps
        self.server_lr_multiplier = float(server_lr_multiplier)

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        if fidelity == "official-code":
            return (
                f"{name} (official-code: FedFace's public code, Aggarwal, Zhou & Jain 2021; no paper file here): one "
                "identity per client (others refused), class center W_k fixed on the client (positive-only "
                "FedAwS loss on the backbone), server spreadout mean relu(cos − 0.3)² over pairs of class centers; "
                "λ, server steps and server lr keep this package's defaults (not checked against that code)."
            )
        return (
            f"{name} (default): PrivacyFace App. A.2.5's re-implementation of FedFace for multi-identity clients — "
            "W_k trained locally and uploaded, server spreadout Σ max(0, ν − ‖ŵ_a − ŵ_b‖)² over cross-client pairs "
            "with the authors' recommended λ = 10, ν = 0.9 (A.2.5 samples 1K of 7K centers per client; we use all), "
            "not FedFace's own one-identity code."
        )

    def resolved_center_init(self, config: FederatedConfig) -> str:
        """``center_init`` resolved for ``config`` (a fixed ``W_k`` starts there too: the server moves it)."""
        return resolve_center_init(self.center_init, config)

    def client_init(
        self,
        client_id: int,
        data: ClientData,
        global_model: GlobalModel,
        config: FederatedConfig,
        rng: torch.Generator,
    ) -> ClientState:
        if self.single_identity and data.num_classes != 1:
            raise ValueError(
                f"client {client_id} holds {data.num_classes} identities, but fedface with single_identity=True "
                f"(fidelity={self.fidelity!r}: FedFace's official code) takes exactly one identity per client; "
                "partition one identity per client, or use fidelity='default' (PrivacyFace A.2.5's multi-identity "
                "re-implementation)"
            )
        return super().client_init(client_id, data, global_model, config, rng)

    def regularizer(self, w: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """The server's spreadout regulariser (without λ) on ``w [R, d]`` over cross-client pairs
        (``owners [R]``): `spreadout_distance` (Yu et al. 2020) or, with ``form="cosine"``,
        FedFace's public-code `spreadout_cosine` ``mean relu(cos − τ)²``."""
        pairs = cross_client_mask(owners)
        if self.form == "distance":
            return spreadout_distance(w, pairs.to(w.device), self.margin)
        return spreadout_cosine(w, pairs.to(w.device), self.cos_threshold)

    def process_centers(self, server_state: ServerState) -> ServerState:
        parties, w, owners = self.stored_centers(server_state)
        if len(parties) < 2 or self.lam == 0.0:
            return server_state
        lr = self.server_lr_multiplier * float(server_state.meta["lr"])
        new_w, values = server_gradient_step(
            w.to(server_state.meta.get("device", "cpu")),
            lambda v: self.regularizer(v, owners),
            lr=lr,
            weight=self.lam,
            steps=self.server_steps,
        )
        state = self.write_back(server_state, parties, new_w)
        state.meta = {**state.meta, "last_regularizer": values[0]}
        return state
