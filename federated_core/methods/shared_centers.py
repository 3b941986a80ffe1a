"""Shared centers: every client uploads its class embeddings ``W_k``; the server broadcasts all of
them, and each client uses the other clients' rows as extra negatives in its margin loss
(PrivacyFace's "φ+W" without noise). This is the privacy-leaking reference point: every client
receives every other client's raw class embeddings.

The broadcast is one ``"global_class_embeddings"`` message to all participants with the stacked
rows (``centers [R, d]``) and the client id owning each row (``owners [R]``); a client drops its
own rows (it uses its current local ``W_k`` instead). In round 1 the server holds no embeddings
yet, so clients train on their local loss only.
"""

from __future__ import annotations

import torch

from federated_core.engine.messages import SERVER, Message, make_message, non_private_event
from federated_core.engine.state import ClientState, ServerState
from federated_core.methods._centers import CenterMethod
from federated_core.methods.base import register_method


@register_method("shared-centers")
class SharedCenters(CenterMethod):
    """Upload W_k; broadcast all W as extra negatives. Hyper-parameters: see `CenterMethod`."""

    uploads_centers = True

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        return (
            f"{name} (default, no paper preset): PrivacyFace's φ+W reference point without noise — every client "
            "receives every other client's raw class embeddings (the privacy-leaking upper bound)."
        )

    def extra_broadcast(
        self, server_state: ServerState, round: int, phase: str, participants: list[str]
    ) -> list[Message]:
        parties, w, owners = self.stored_centers(server_state)
        if not parties:
            return []
        return [
            make_message(
                "global_class_embeddings",
                SERVER,
                tuple(participants),
                round,
                phase,
                {"centers": w, "owners": owners},
                event=non_private_event(),
                meta={"clients": len(parties)},
            )
        ]

    def negatives_for(self, client_state: ClientState, broadcast: list[Message]) -> torch.Tensor | None:
        message = self.find(broadcast, "global_class_embeddings", required=False)
        if message is None:
            return None
        owners = message.tensors["owners"]
        keep = owners != int(client_state.meta["client_id"])
        return message.tensors["centers"][keep]
