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
"""

from __future__ import annotations

import math

from federated_core.engine.state import ServerState
from federated_core.methods._centers import CenterMethod
from federated_core.methods.base import register_method
from federated_core.methods.regularizers import cross_client_mask, server_gradient_step, spreadout_cosine, spreadout_distance

FEDFACE_FORMS = ("distance", "cosine")


@register_method("fedface")
class FedFace(CenterMethod):
    """Upload W_k; spreadout regulariser on all W at the server; W_k returned to its client.

    Hyper-parameters: ``lam`` (λ, default 10), ``margin`` (ν, default 0.9, distance form),
    ``form`` (``"distance"`` or ``"cosine"``), ``cos_threshold`` (τ, default 0.3, cosine form),
    ``server_steps`` (1), ``server_lr_multiplier`` (1), ``positive_margin`` (0.9: a client holding
    one identity — FedFace's own setting — trains on the positive-only loss
    ``max(0, 0.9 − cos(f, w))²`` of FedAwS, which FedFace builds on; a margin softmax over one class
    would train nothing), and those of `CenterMethod`.
    """

    uploads_centers = True
    returns_centers = True

    def __init__(
        self,
        lam: float = 10.0,
        margin: float = 0.9,
        form: str = "distance",
        cos_threshold: float = 0.3,
        server_steps: int = 1,
        server_lr_multiplier: float = 1.0,
        loss: str = "cosface",
        s: float = 30.0,
        m: float = 0.35,
        center_init: str = "auto",
        positive_margin: float = 0.9,
    ) -> None:
        super().__init__(loss=loss, s=s, m=m, center_init=center_init)
        if not (-1.0 < positive_margin <= 1.0):
            raise ValueError(f"positive_margin (ν of the positive-only loss) must be in (-1, 1], got {positive_margin!r}")
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

    def process_centers(self, server_state: ServerState) -> ServerState:
        parties, w, owners = self.stored_centers(server_state)
        if len(parties) < 2 or self.lam == 0.0:
            return server_state
        pairs = cross_client_mask(owners)
        if self.form == "distance":
            reg = lambda v: spreadout_distance(v, pairs, self.margin)  # noqa: E731
        else:
            reg = lambda v: spreadout_cosine(v, pairs, self.cos_threshold)  # noqa: E731
        lr = self.server_lr_multiplier * float(server_state.meta["lr"])
        new_w, values = server_gradient_step(w.to(server_state.meta.get("device", "cpu")), reg, lr=lr, weight=self.lam, steps=self.server_steps)
        state = self.write_back(server_state, parties, new_w)
        state.meta = {**state.meta, "last_regularizer": values[0]}
        return state
