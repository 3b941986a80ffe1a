"""FedAvg + local fine-tuning: the personalisation baseline of FedFS (Kim et al. 2024, § Experiments,
"FedAvg + fine-tuning") and of FedFR's Table 2 ("Fine-tune", the local adaptation of Yu et al.
2020, "Salvaging federated learning by local adaptation").

**Federated part.** FedAvg of the backbone (weights ``n_k / n``); only the backbone leaves the
client. Each client trains against its private class embeddings ``W_k``, fixed at the normalised
mean φ0 feature of each of its identities (`init_centers` ``"mean-feature"``): with positives only
a trainable ``W_k`` and the backbone can collapse onto one point together. A client holding one
identity trains on FedAwS's positive-only loss ``max(0, ν − cos(f, w))²`` (Yu et al. 2020, Eq. 3;
the client loss FedFace builds on, so FedFace − this baseline isolates FedFace's server-side
spreadout regulariser); a client with several identities on the margin softmax over its fixed
``W_k``.

**Personalisation** (`personalised_model`): the run's *final* global backbone fine-tuned on the
client's own training images with the same loss, for the run's local epochs, batch size and
optimiser (the client's recorded training config), seeded per client. Nothing of it leaves the
client, so it costs no privacy; the fine-tuned model is what the personalised protocols score.

Mean-feature ``W_k`` reads the client's images without noise, so the method is refused with
DP-SGD (as every mean-feature initialisation is, `resolve_center_init`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from federated_core.engine.config import FederatedConfig, LocalTrainingConfig
from federated_core.engine.local_sgd import train_local
from federated_core.engine.state import ClientData, ClientState
from federated_core.methods._centers import CenterMethod, MarginClientModel, resolve_center_init
from federated_core.methods.base import register_method

FINETUNE_PURPOSE = "finetune"  # the seed stream of the local fine-tuning (`federated_core.engine.simulation.generator`)


@register_method("fedavg-finetune")
class FedAvgFineTune(CenterMethod):
    """FedAvg of the backbone with fixed private ``W_k``; personalised by local fine-tuning.

    Hyper-parameters: ``positive_margin`` (ν of the positive-only loss of one-identity clients,
    default 0.9 as FedFace's), ``finetune_epochs`` (local epochs of the fine-tuning; None: the
    run's local epochs), and ``loss`` / ``s`` / ``m`` of `CenterMethod` (the margin softmax of
    multi-identity clients).
    """

    uploads_centers = False
    train_centers = False

    def __init__(
        self,
        positive_margin: float = 0.9,
        finetune_epochs: int | None = None,
        loss: str = "cosface",
        s: float = 30.0,
        m: float = 0.35,
        fidelity: str = "default",
    ) -> None:
        super().__init__(loss=loss, s=s, m=m, center_init="mean-feature", fidelity=fidelity)
        if isinstance(positive_margin, bool) or not (-1.0 < float(positive_margin) <= 1.0):
            raise ValueError(
                f"positive_margin (ν of the positive-only loss) must be in (-1, 1], got {positive_margin!r}"
            )
        if finetune_epochs is not None and (
            isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 1
        ):
            raise ValueError(
                f"finetune_epochs must be None (the run's local epochs) or an integer >= 1, got {finetune_epochs!r}"
            )
        self.positive_margin = float(positive_margin)
        self.finetune_epochs = finetune_epochs

    @classmethod
    def fidelity_note_for(cls, name: str, fidelity: str) -> str:
        return (
            f"{name} (default, no paper preset): FedFS's 'FedAvg + fine-tuning' baseline — FedAvg of the backbone "
            "with fixed mean-feature W_k (positive-only FedAwS loss ν = 0.9 for one-identity clients), "
            "personalised by fine-tuning the final global model on each client's own images."
        )

    def resolved_center_init(self, config: FederatedConfig) -> str:
        """Always ``"mean-feature"`` (refused with DP-SGD): fixed random ``W_k`` would give a
        one-identity client an arbitrary target."""
        return resolve_center_init("mean-feature", config)

    def personalised_model(
        self, client_state: ClientState, data: ClientData, global_backbone: nn.Module, seed: int
    ) -> nn.Module:
        """``global_backbone`` fine-tuned on ``data`` (this client's training images) with the
        client's loss and recorded local-training config; CPU, eval mode. ``global_backbone`` is
        left untouched."""
        if list(data.identities) != list(client_state.meta["row_identities"]):
            raise ValueError(
                f"data holds identities {list(data.identities)}, this client trained on {client_state.meta['row_identities']}"
            )
        training = LocalTrainingConfig.from_dict(client_state.meta["training"])
        if self.finetune_epochs is not None:
            training = LocalTrainingConfig.from_dict({**training.to_dict(), "local_epochs": self.finetune_epochs})
        backbone = copy.deepcopy(global_backbone).to(training.device).train()
        model = MarginClientModel(
            backbone,
            client_state.tensors["centers"].to(training.device),
            None,
            self.loss,
            self.s,
            self.m,
            train_centers=False,
            positive_margin=self.positive_margin,
        )
        with torch.enable_grad():  # callers may build the model lazily inside an evaluation's no_grad
            train_local(model, data, training, _finetune_generator(seed, int(client_state.meta["client_id"])))
        return backbone.cpu().eval()


def _finetune_generator(seed: int, client: int) -> torch.Generator:
    from federated_core.engine.simulation import generator

    return generator(seed, FINETUNE_PURPOSE, client)
