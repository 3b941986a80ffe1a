"""FedGC (Niu & Deng, AAAI 2022): Federated Averaging with Gradient Correction, Algorithm 1.

No official code exists; this follows the paper. Per round (Alg. 1): the server sends each
participant ``θ^t`` and its own ``W_k^t`` (line 4); the client runs local SGD on its softmax-family
loss (lines 6–7: Softmax, CosFace m = 0.35, ArcFace s = 64, m = 0.5) and sends
``(θ_k^{t+1}, W_k^{t+1})`` (line 8); the server averages θ with weights ``n_k/n`` (line 11),
stacks every client's class embeddings ``W̃`` (line 12) and applies the gradient correction
``W ← W̃ − λη ∇Reg(W̃)`` (line 14), η the clients' learning rate and λ = 20 by default (Table 2).

``Reg`` (``regularizer``):

* ``"softmax"`` — Eq. 5, with a stop-gradient on the query ``W'`` and cross-client negatives only
  (`federated_core.methods.regularizers.softmax_regularizer`).
* ``"cosine"`` — the cosine regulariser of the Remark (``fedgc-cos``, "FedCos" of Table 4).

``reg_form``: ``"dot"`` (default) uses raw dot products ``W^T W'`` exactly as Eq. 5 is written
(and as a third-party port does), whatever the local loss; ``"scaled-cosine"`` is the Remark's
"minor modification" for CosFace/ArcFace: ``s·cos`` logits with the head's margin on the positive.
Note the scaled form's gradient is about ``s`` times larger than the dot form's on unit-norm
embeddings, so λ = 20 (tuned in Table 2 for the dot form with Softmax) is a much stronger
correction there. The form used is recorded in the server state (``meta["reg_form"]``) and so in
every round's metrics (``rounds[i]["server"]["reg_form"]``).

The server holds the latest ``W_k`` of every client that has taken part; the correction runs over
all of them (with a participation fraction below 1, absent clients' rows are corrected too and
returned when they next take part).

``fidelity`` (`federated_core.methods.fidelity`): ``"default"`` keeps this package's CosFace head
(s = 30, m = 0.35) with the dot form — the regulariser's strength then depends on the norms of W,
which a CosFace head leaves free (as they grow the dot-form softmax saturates and the correction
fades); ``"paper"`` (`fedgc_paper_preset`) is Softmax with the dot form (Eq. 5), or with
``loss="cosface"``/``"arcface"`` the Remark's normalised form at the head's scale.

``shared_identities=True`` implements § "Extend FedGC to More General Case": clients also upload
the global identity id of each row (so the server learns which identities each client holds —
that is the price of the extension), the server averages the rows of an identity held by several
clients and regularises it only against classes of clients outside that group
(`merge_shared_identities`); the averaged, corrected row is returned to each holder.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from federated_core.engine.state import ServerState
from federated_core.methods._centers import CENTERS_PREFIX, CenterMethod
from federated_core.methods.base import register_method
from federated_core.methods.fidelity import UNSET, Preset
from federated_core.methods.regularizers import (
    cosine_regularizer,
    cross_client_mask,
    merge_shared_identities,
    server_gradient_step,
    softmax_regularizer,
)

FEDGC_REGULARIZERS = ("softmax", "cosine")
FEDGC_REG_FORMS = ("dot", "scaled-cosine")


FEDGC_DEFAULTS: dict[str, Any] = {"lam": 20.0, "reg_form": "dot", "loss": "cosface", "s": 30.0, "m": 0.35}


def fedgc_paper_preset(explicit: Mapping[str, Any]) -> Preset:
    """FedGC's paper (Niu & Deng 2022): Softmax local loss with Eq. 5's dot-product regulariser
    and λ = 20 (Table 2). Table 5 also trains CosFace (m = 0.35) and ArcFace (s = 64, m = 0.5);
    with those heads the Remark's "minor modification" applies: the regulariser in the head's own
    normalised form, ``s·cos`` logits with the head's margin on the positive
    (``reg_form="scaled-cosine"``, `regularizers.softmax_regularizer`), at the head's scale s."""
    loss = explicit.get("loss", "softmax")
    values: dict[str, Any] = {"lam": 20.0, "loss": "softmax", "reg_form": "dot"}
    if loss == "cosface":
        values.update(reg_form="scaled-cosine", m=0.35)  # FedGC gives no CosFace scale: s is free
    elif loss == "arcface":
        values.update(reg_form="scaled-cosine", s=64.0, m=0.5)
    return Preset(values, also_faithful={"loss": ("cosface", "arcface")})


@register_method("fedgc")
@register_method("fedgc-cos", regularizer="cosine")
class FedGC(CenterMethod):
    """FedGC, Algorithm 1. Hyper-parameters: ``lam`` (λ, default 20), ``regularizer``
    (``"softmax"`` Eq. 5 / ``"cosine"`` Remark), ``reg_form`` (``"dot"`` default or
    ``"scaled-cosine"``), ``shared_identities`` (False), ``fidelity`` (``"default"``: CosFace
    s = 30, m = 0.35 with the dot form; ``"paper"``: `fedgc_paper_preset`), and those of
    `CenterMethod` (``loss``, ``s``, ``m``, ``center_init``). ``lam``, ``reg_form``, ``loss``,
    ``s`` and ``m`` default to the fidelity preset's values."""

    uploads_centers = True
    returns_centers = True
    fidelities = ("default", "paper")

    def __init__(
        self,
        lam: float = UNSET,
        regularizer: str = "softmax",
        reg_form: str = UNSET,
        shared_identities: bool = False,
        loss: str = UNSET,
        s: float = UNSET,
        m: float = UNSET,
        center_init: str = "auto",
        fidelity: str = "default",
    ) -> None:
        hp = self.apply_fidelity(
            fidelity,
            {"lam": lam, "reg_form": reg_form, "loss": loss, "s": s, "m": m},
            FEDGC_DEFAULTS,
            {"paper": fedgc_paper_preset},
        )
        lam, reg_form = hp["lam"], hp["reg_form"]
        super().__init__(loss=hp["loss"], s=hp["s"], m=hp["m"], center_init=center_init, fidelity=fidelity)
        if regularizer not in FEDGC_REGULARIZERS:
            raise ValueError(f"regularizer must be one of {FEDGC_REGULARIZERS}, got {regularizer!r}")
        if reg_form not in FEDGC_REG_FORMS:
            raise ValueError(f"reg_form must be one of {FEDGC_REG_FORMS}, got {reg_form!r}")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam (λ) must be a finite number >= 0, got {lam!r}")
        if not isinstance(shared_identities, bool):
            raise ValueError(f"shared_identities must be True or False, got {shared_identities!r}")
        self.lam, self.regularizer = float(lam), regularizer
        self.reg_form = reg_form
        self.shared_identities = shared_identities
        self.uploads_identity_keys = shared_identities

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        reg = (
            "the Remark's cosine regulariser (FedCos, Table 4)"
            if name == "fedgc-cos"
            else "Eq. 5's softmax regulariser"
        )
        if fidelity == "paper":
            return (
                f"{name} (paper: FedGC, Niu & Deng AAAI 2022, Alg. 1): Softmax local loss with {reg} in Eq. 5's "
                "dot-product form, λ = 20 (Table 2); with loss='cosface' (m = 0.35) or 'arcface' (s = 64, m = 0.5) "
                "the regulariser takes the Remark's normalised s·cos form at the head's scale s (its gradient is "
                "about s times the dot form's on unit rows, and λ = 20 was tuned for Softmax). No official code "
                "exists; the Remark's 'minor modification' for margin heads is our reading."
            )
        return (
            f"{name} (default): CosFace local loss (s = 30, m = 0.35) with {reg} in Eq. 5's raw dot-product "
            "form, λ = 20 — a mix the paper does not run: the CosFace head leaves the norms of W free, and as "
            "they grow the dot-form softmax saturates, so the cross-client correction fades; fidelity='paper' "
            "uses Softmax + dot form, or the normalised form with CosFace/ArcFace."
        )

    def regularizer_value(self, w: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        if self.regularizer == "softmax":
            return softmax_regularizer(w, negatives, form=self.reg_form, s=self.s, kind=self.loss, m=self.m)
        return cosine_regularizer(w, negatives, form=self.reg_form, s=self.s)

    def process_centers(self, server_state: ServerState) -> ServerState:
        parties, w, owners = self.stored_centers(server_state)
        server_state.meta = {**server_state.meta, "reg_form": self.reg_form, "regularizer": self.regularizer}
        if len(parties) < 2 or self.lam == 0.0:
            return server_state
        device = server_state.meta.get("device", "cpu")
        lr = self.lam * float(server_state.meta["lr"])  # λη of Alg. 1 line 14
        if not self.shared_identities:
            negatives = cross_client_mask(owners)
            new_w, values = server_gradient_step(
                w.to(device), lambda v: self.regularizer_value(v, negatives), lr=lr, weight=1.0
            )
        else:
            keys = torch.cat([server_state.tensors["identities/" + p] for p in parties])
            classes, negatives, assignment = merge_shared_identities(w, owners, keys)
            new_classes, values = server_gradient_step(
                classes.to(device), lambda v: self.regularizer_value(v, negatives), lr=lr, weight=1.0
            )
            new_w = new_classes.cpu()[assignment]
        state = self.write_back(server_state, parties, new_w)
        state.meta = {**state.meta, "last_regularizer": values[0]}
        return state


__all__ = ["FedGC", "CENTERS_PREFIX", "fedgc_paper_preset"]
