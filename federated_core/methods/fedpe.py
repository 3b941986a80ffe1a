"""FedPE and FedPE+Fixed (FedGC, Niu & Deng 2022, § Problem Formulation and Table 5; PrivacyFace's
baseline "φ").

``fedpe``: Federated Averaging with Private Embedding. Each client trains the shared backbone θ and
its own class embeddings ``W_k`` on its local margin-softmax loss (Eq. 3/4); only the backbone
leaves the client; the server averages it with weights ``n_k / n`` (Alg. 1 line 11). ``W_k``
never leaves the client.

``fedpe-fixed``: the same with ``W_k`` frozen at its random initialisation ("Fixed": random
high-dimensional vectors are nearly orthogonal, so classes of different clients do not collapse
onto each other).
"""

from __future__ import annotations

from federated_core.methods._centers import CenterMethod
from federated_core.methods.base import register_method


@register_method("fedpe")
class FedPE(CenterMethod):
    """FedPE: FedAvg of the backbone; W_k private. Hyper-parameters: see `CenterMethod`."""

    uploads_centers = False

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        return (
            f"{name} (default, no paper preset): FedGC's FedPE baseline (PrivacyFace's φ) — FedAvg of the backbone, "
            "W_k private — with this package's local margin loss (CosFace s = 30, m = 0.35 unless set)."
        )


@register_method("fedpe-fixed")
class FedPEFixed(CenterMethod):
    """FedPE with W_k frozen at a random initialisation (FedGC "Fixed")."""

    uploads_centers = False
    train_centers = False

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        return (
            f"{name} (default, no paper preset): FedGC Table 5's FedPE+Fixed — W_k frozen at a random "
            "initialisation, backbone FedAvg — with this package's local margin loss (CosFace s = 30, m = 0.35 unless set)."
        )

    def __init__(
        self,
        loss: str = "cosface",
        s: float = 30.0,
        m: float = 0.35,
        center_init: str = "random",
        fidelity: str = "default",
    ) -> None:
        if center_init not in ("random", "auto"):
            raise ValueError(
                f"center_init of fedpe-fixed must be 'random' (W frozen at random init), got {center_init!r}"
            )
        super().__init__(loss=loss, s=s, m=m, center_init="random", fidelity=fidelity)
