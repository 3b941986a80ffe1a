"""The federated engine: messages, the wire log, explicit party state, local training (with
optional DP-SGD), checkpoints and the in-process simulation (`run_federated`).

Run folder layout (written by `run_federated(..., out_dir=RUN)` and `privaudit train --out RUN`)::

    RUN/
      config.json                 the run's FederatedConfig + data/scale description (train command)
      metrics.json                per-round records: sampled/offline clients, "failed" (tolerated
                                  client failures [{client, phase, error}]), "rejected" (uploads
                                  the server rejected [{client, phase, kind, reason}]), client
                                  losses, bytes (uploaded / broadcast / by kind), evaluation of the
                                  global model on unseen identities (verification accuracy, AUROC,
                                  TAR@FAR, rank-1, TPIR@FPIR) after the chosen rounds; "evaluation"
                                  keyed by round ("0" = the initial model); wire summary;
                                  bytes_per_round; client_failures {count, rounds: {round: [ids]}}
      timings.json                wall-clock timings: init_seconds, per round {clients, server,
                                  evaluation, round} seconds (the only file that differs between
                                  two runs with the same seed and thread count)
      checkpoint/
        backbone.safetensors      the global backbone after the last completed round
                                  (federated_core.models.load_backbone reads it)
        config.json               round, method, hyper-parameters, config
      wire/                       the WireLog: what crossed the wire (WireLog.load(RUN))
        index.json                one record per message: index, round, phase, kind, sender,
                                  receivers, event (DP event dict or null), meta, nbytes, tensors,
                                  rejected (null or the server's reason); SHA-256 of every chunk
        chunk-<a>-<b>.safetensors payloads, keys "<message index>/<tensor name>"
      state/                      the engine's resumable checkpoint (server + client states,
                                  undelivered messages, progress.json)
      ground_truth/               GROUND TRUTH - observed by NO party; for scoring attacks only
        README.txt
        partition.json            {"client:<id>": {"identities": [global ids in local-class
                                  order], "num_images": n_k}}
        client_states.safetensors each client's final private state, keys "client:<id>/<name>"
                                  (e.g. "client:3/centers": its true class embeddings W_k [n_k, d])
        client_states.json        {"client:<id>": {"row_identities": [global identity id of each
                                  row of its 2-d tensors], "tensors": {name: shape}, "meta": ...}}
        data_spec.json            how to regenerate each client's images: for synthetic data
                                  {"source": "synthetic", "generator": {seed, resolution, groups,
                                  difficulty}, "clients": {"client:<id>": {"identities": [...],
                                  "images_per_identity": n, "start_index": i}}, "test": {...}}

Parties are ``"server"`` and ``"client:<id>"``; ``WireLog.load(RUN).observed_by(party)`` gives
the messages a party sent or received (each with ``.kind``, ``.sender``, ``.receivers``,
``.round``, ``.tensors``, ``.event``).
"""

from federated_core.engine.config import DpSgdConfig, EvaluationConfig, FederatedConfig, LocalTrainingConfig
from federated_core.engine.messages import (
    MESSAGE_KINDS,
    SERVER,
    Message,
    client_id_of,
    client_party,
    make_message,
    register_message_kind,
)
from federated_core.engine.simulation import ClientFailureError, FederatedResult, run_federated
from federated_core.engine.state import ClientData, ClientState, ServerState
from federated_core.engine.validation import AllUploadsRejectedError, UploadExpectation, validate_upload
from federated_core.engine.wire import WireLog, WireLogIntegrityError

__all__ = [
    "MESSAGE_KINDS",
    "SERVER",
    "AllUploadsRejectedError",
    "ClientData",
    "ClientFailureError",
    "ClientState",
    "DpSgdConfig",
    "EvaluationConfig",
    "FederatedConfig",
    "FederatedResult",
    "LocalTrainingConfig",
    "Message",
    "ServerState",
    "UploadExpectation",
    "WireLog",
    "WireLogIntegrityError",
    "client_id_of",
    "client_party",
    "make_message",
    "register_message_kind",
    "run_federated",
    "validate_upload",
]
