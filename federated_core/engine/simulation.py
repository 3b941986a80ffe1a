"""The in-process federated engine: `run_federated`.

Each round ``r = 1..R``: sample ``max(1, round(C·K))`` clients (participation fraction C, FedGC
Table 1), take some offline (PrivacyFace App. A.2.7), then for every phase of the method: the
server's ``configure`` messages go to the participants, each participant runs ``client_update``
on its own state, data and inbox, its uploads go to the server, and ``server_step`` aggregates.
Every message is validated (sender, explicit receivers, round, phase) and appended to the
`WireLog`; nothing else passes between parties.

Failing clients: a client whose ``client_update`` raises (or returns something that breaks the
protocol) stops the run with a `ClientFailureError` naming the client, round and phase (the
original exception is its ``__cause__``). With ``FederatedConfig.tolerate_client_failures`` it is
instead dropped from the rest of that round, its state left as it was, and recorded (log warning,
``metrics["rounds"][i]["failed"]`` = ``[{client, phase, error}]``, ``metrics["client_failures"]``
= ``{"count", "rounds": {round: [clients]}}``); a phase with no surviving client is an error.

Bad uploads: before ``server_step`` the server checks every upload (`engine.validation`): a kind
the method accepts from clients in that phase (`Method.upload_kinds`), ``backbone`` uploads with
exactly the global backbone's entries, shapes and dtypes, finite values, and the update norm
bound ``FederatedConfig.max_update_norm``. A rejected upload (and the same client's other uploads
of that phase) is not aggregated; it stays in the wire log marked with its reason
(`WireLog.rejection`) and in ``metrics["rounds"][i]["rejected"]`` = ``[{client, phase, kind,
reason}]``. A phase whose uploads were all rejected raises `AllUploadsRejectedError`.

Randomness: every draw comes from a generator seeded by ``(config.seed, purpose, round, ...)``
(`derive_seed`), so the same seed gives the same numbers and ``resume`` (continuing from the
checkpoint written after every round) gives exactly the result of an uninterrupted run.

Artifacts are byte-reproducible: the same seed and thread count give identical bytes in every
file of the run folder except ``timings.json`` (`TIMINGS_NAME`), which holds all wall-clock
timings (``init_seconds`` and per round ``seconds``; in memory they stay in the returned
metrics). No file holds an absolute path of the run folder.

Evaluation of the global model on unseen identities after the rounds of
`FederatedConfig.eval_rounds` (`GenericEvaluator`), recorded per round with losses and bytes on
the wire.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from federated_core.data.faceset import FaceSet
from federated_core.engine.checkpoint import (
    EngineState,
    has_engine_state,
    load_engine_state,
    save_engine_state,
    save_global_checkpoint,
)
from federated_core.engine.config import FederatedConfig
from federated_core.engine.evaluate import GenericEvaluator
from federated_core.engine.messages import SERVER, Message, client_party
from federated_core.engine.state import ClientData, ClientState, ServerState
from federated_core.engine.validation import AllUploadsRejectedError, UploadExpectation, validate_client_uploads
from federated_core.engine.wire import WireLog

if TYPE_CHECKING:
    from federated_core.methods.base import GlobalModel

logger = logging.getLogger("federated_core.engine")

METRICS_NAME = "metrics.json"
TIMINGS_NAME = "timings.json"
GROUND_TRUTH_DIRNAME = "ground_truth"
_PURPOSES = {"model": 1, "server_init": 2, "client_init": 3, "sample": 4, "offline": 5, "client": 6, "finetune": 7}


def derive_seed(seed: int, purpose: str, *parts: int) -> int:
    """A 63-bit seed for ``(seed, purpose, *parts)`` (numpy ``SeedSequence``)."""
    entropy = [int(seed), _PURPOSES[purpose], *(int(p) for p in parts)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) >> 1


def generator(seed: int, purpose: str, *parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *parts))


def sample_participants(client_ids: Sequence[int], fraction: float, seed: int, round: int) -> list[int]:
    """``max(1, round(C·K))`` distinct clients, uniformly, sorted."""
    k = len(client_ids)
    m = max(1, int(round_half_up(fraction * k)))
    if m >= k:
        return sorted(client_ids)
    rng = np.random.default_rng(derive_seed(seed, "sample", round))
    return sorted(int(c) for c in rng.choice(np.asarray(client_ids), size=m, replace=False))


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def offline_clients(sampled: Sequence[int], probability: float, policy: str, seed: int, round: int) -> list[int]:
    """Clients of ``sampled`` that are offline this round (PrivacyFace App. A.2.7)."""
    if probability <= 0.0 or not sampled:
        return []
    rng = np.random.default_rng(derive_seed(seed, "offline", round))
    if policy == "one-client":
        if rng.random() < probability:
            return [int(sampled[int(rng.integers(len(sampled)))])]
        return []
    if policy == "independent":
        return [int(c) for c, u in zip(sampled, rng.random(len(sampled))) if u < probability]
    raise ValueError(f"offline_policy must be 'one-client' or 'independent', got {policy!r}")


@dataclass
class FederatedResult:
    """What `run_federated` returns: the final global backbone (CPU, eval mode), the metrics
    (also in ``out_dir/metrics.json``), the wire log, and the parties' final states."""

    backbone: nn.Module
    metrics: dict[str, Any]
    wire: WireLog
    out_dir: Path | None
    server_state: ServerState
    client_states: dict[int, ClientState]
    completed_rounds: int


def _initial_model(config: FederatedConfig, initial_model: nn.Module | None) -> tuple[nn.Module, dict[str, Any]]:
    from federated_core.models import build_backbone, load_backbone

    if initial_model is not None:
        spec = getattr(initial_model, "build_config", None)
        if spec is None:
            raise ValueError(
                "initial_model must be made by federated_core.models.build_backbone (it needs .build_config)"
            )
        import copy

        return copy.deepcopy(initial_model).cpu().eval(), dict(spec)
    if config.initial_backbone is not None:
        model, saved = load_backbone(config.initial_backbone, device="cpu")
        spec = {k: saved[k] for k in ("name", "embedding_dim", "resolution", "kwargs")}
        return model.eval(), spec
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "model"))
        model = build_backbone(config.backbone, embedding_dim=config.embedding_dim, resolution=config.resolution)
    return model.eval(), dict(cast(dict[str, Any], model.build_config))  # set by build_backbone


def _as_client_map(clients: Sequence[ClientData] | Mapping[int, ClientData]) -> dict[int, ClientData]:
    if isinstance(clients, Mapping):
        out = {}
        for cid, data in clients.items():
            client_party(cid)  # validates the id
            out[int(cid)] = data
    else:
        out = {i: data for i, data in enumerate(clients)}
    if not out:
        raise ValueError("clients must hold at least one client, got none")
    for cid, data in out.items():
        if not isinstance(data, ClientData):
            raise ValueError(f"clients[{cid}] must be a ClientData, got {type(data).__name__}")
    return dict(sorted(out.items()))


def _check_broadcasts(messages: list[Message], round: int, phase: str, allowed: set[str], who: str) -> None:
    for m in messages:
        if not isinstance(m, Message):
            raise TypeError(f"{who} must return Message objects, got {type(m).__name__}")
        if m.sender != SERVER:
            raise ValueError(f"{who} returned a message from {m.sender!r}; the server's messages have sender 'server'")
        if m.round != round or m.phase != phase:
            raise ValueError(
                f"{who} returned a message for round {m.round} phase {m.phase!r} during round {round} phase {phase!r}"
            )
        outside = [r for r in m.receivers if r not in allowed]
        if outside:
            raise ValueError(
                f"{who} addressed {outside[:3]} which are not clients of this run"
                + (" taking part in this phase" if who.endswith("configure") else "")
            )


def _check_uploads(messages: Any, party: str, round: int, phase: str) -> list[Message]:
    if not isinstance(messages, list):
        raise TypeError(
            f"client_update must return (ClientState, list[Message]), got uploads of type {type(messages).__name__}"
        )
    for m in messages:
        if not isinstance(m, Message):
            raise TypeError(f"client_update must return Message uploads, got {type(m).__name__}")
        if m.sender != party:
            raise ValueError(f"{party} uploaded a message with sender {m.sender!r}")
        if m.receivers != (SERVER,):
            raise ValueError(f"{party} addressed {m.receivers}; clients send only to the server (star topology)")
        if m.round != round or m.phase != phase:
            raise ValueError(
                f"{party} uploaded a message for round {m.round} phase {m.phase!r} during round {round} phase {phase!r}"
            )
    return messages


def _copy_client_state(state: ClientState, client_id: int, round: int) -> ClientState:
    copy = ClientState({k: v.clone() for k, v in state.tensors.items()}, json.loads(json.dumps(state.meta)))
    copy.meta["client_id"] = int(client_id)
    copy.meta["round"] = int(round)
    return copy


def _write_ground_truth_start(out_dir: Path, clients: dict[int, ClientData], data_spec: dict[str, Any] | None) -> None:
    folder = out_dir / GROUND_TRUTH_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.txt").write_text(
        "GROUND TRUTH - observed by no party of the federated run.\n"
        "Written by the simulator for evaluating attacks and audits: which identities each client holds,\n"
        "each client's final private state (e.g. its true class embeddings W_k) and how to regenerate\n"
        "each client's images. Nothing here crossed the wire; see ../wire/ for what was observed.\n"
    )
    partition = {
        client_party(cid): {"identities": data.identities, "num_images": len(data)} for cid, data in clients.items()
    }
    (folder / "partition.json").write_text(json.dumps(partition))
    (folder / "data_spec.json").write_text(
        json.dumps(data_spec or {"source": "in-memory FaceSet (no regeneration spec given)"})
    )


def _write_ground_truth_final(out_dir: Path, method: Any, client_states: dict[int, ClientState]) -> None:
    from safetensors.torch import save_file

    folder = out_dir / GROUND_TRUTH_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, Any] = {}
    for cid, state in client_states.items():
        party = client_party(cid)
        private = method.private_state(state)
        index[party] = {
            "row_identities": state.meta.get("row_identities"),
            "tensors": {name: list(t.shape) for name, t in private.items()},
            "meta": {k: v for k, v in state.meta.items() if k not in ("training",)},
        }
        for name, t in private.items():
            tensors[f"{party}/{name}"] = t.detach().cpu().contiguous().clone()
    save_file(tensors, str(folder / "client_states.safetensors"))
    (folder / "client_states.json").write_text(json.dumps(index))


class ClientFailureError(RuntimeError):
    """A client's ``client_update`` raised (or broke the protocol) while
    ``FederatedConfig.tolerate_client_failures`` is off. The original exception is
    ``__cause__`` (and ``error``).

    Attributes:
        client: the client id.
        round: the round (1-based).
        phase: the method phase (e.g. ``"train"``).
        error: the original exception.
    """

    def __init__(self, client: int, round: int, phase: str, error: BaseException) -> None:
        self.client, self.round, self.phase, self.error = int(client), int(round), str(phase), error
        super().__init__(
            f"{client_party(int(client))} failed in round {round} phase {phase!r}: {type(error).__name__}: {error} "
            "(set FederatedConfig.tolerate_client_failures=True to drop failing clients from the round instead)"
        )


@dataclass
class _Run:
    """What the phases of a run share (the engine's mutable state between rounds)."""

    config: FederatedConfig
    method: Any
    client_data: dict[int, ClientData]
    parties: set[str]
    wire: WireLog
    pending: dict[str, list[Message]]
    client_states: dict[int, ClientState]
    # how the participants' client_update runs: `_update_clients` (here, one after another) unless
    # an engine gives its own with the same signature and effects (privaudit.flower)
    executor: Any = None


@dataclass
class _RoundLog:
    """What went wrong in one round: tolerated client failures and rejected uploads."""

    failed: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _update_clients(
    run: _Run,
    r: int,
    phase_index: int,
    phase: str,
    participants: list[int],
    broadcasts: list[Message],
    log: _RoundLog,
) -> list[tuple[int, list[Message]]]:
    """Run ``client_update`` on each participant; returns each surviving client's uploads.

    A client that raises stops the run (`ClientFailureError`) unless failures are tolerated: it
    is then recorded in ``log.failed`` and left out, its state unchanged."""
    config = run.config
    out: list[tuple[int, list[Message]]] = []
    for cid in tqdm(participants, desc=f"round {r} {phase}", disable=not config.progress, leave=False):
        inbox = client_inbox(run, cid, broadcasts)
        try:
            new_state, ups = run_client_update(
                run.method, config, cid, run.client_states[cid], inbox, run.client_data[cid], r, phase_index, phase
            )
        except Exception as exc:
            client_failed(run, log, cid, r, phase, exc)
            continue
        run.client_states[cid] = new_state
        out.append((cid, ups))
    return out


def client_inbox(run: _Run, client_id: int, broadcasts: list[Message]) -> list[Message]:
    """What client ``client_id`` receives now: its pending messages (taken out of
    ``run.pending``), then this phase's broadcasts addressed to it."""
    party = client_party(client_id)
    return run.pending.pop(party, []) + [m for m in broadcasts if party in m.receivers]


def run_client_update(
    method: Any,
    config: FederatedConfig,
    client_id: int,
    state: ClientState,
    inbox: list[Message],
    data: ClientData,
    r: int,
    phase_index: int,
    phase: str,
) -> tuple[ClientState, list[Message]]:
    """One client's ``client_update`` of round ``r``'s phase ``phase`` on a copy of ``state``, with
    its generator ``(seed, "client", r, phase_index, client_id)``; the uploads checked. Raises
    whatever the method raises, or TypeError/ValueError for a reply that breaks the protocol.
    Every engine runs a client through this function, so they all compute the same numbers."""
    party = client_party(client_id)
    copy = _copy_client_state(state, client_id, r)
    new_state, ups = method.client_update(
        phase, copy, inbox, data, generator(config.seed, "client", r, phase_index, client_id)
    )
    ups = _check_uploads(ups, party, r, phase)
    if not isinstance(new_state, ClientState):
        raise TypeError(f"client_update must return a ClientState, got {type(new_state).__name__}")
    return new_state, ups


def client_failed(run: _Run, log: _RoundLog, client_id: int, r: int, phase: str, exc: BaseException) -> None:
    """A client's update raised ``exc``: a `ClientFailureError` unless failures are tolerated;
    then it is recorded in ``log.failed`` (its state unchanged) and the run goes on."""
    if not run.config.tolerate_client_failures:
        raise ClientFailureError(client_id, r, phase, exc) from exc
    party = client_party(client_id)
    error = f"{type(exc).__name__}: {exc}"
    log.failed.append({"client": client_id, "phase": phase, "error": error})
    logger.warning("round %d phase %s: %s failed and is dropped from this round: %s", r, phase, party, error)
    if run.config.progress:
        tqdm.write(f"round {r} phase {phase}: {party} failed and is dropped from this round: {error}")


def _expectation(run: _Run, phase: str, server_state: ServerState) -> UploadExpectation:
    """What the server accepts from clients in ``phase``: the method's kinds, ``backbone``
    uploads shaped like the global backbone now broadcast, the update norm bound."""
    kinds = run.method.upload_kinds(phase)
    return UploadExpectation(
        phase=phase,
        kinds=None if kinds is None else frozenset(kinds),
        references={"backbone": run.method.global_backbone_state(server_state)},
        max_update_norm=run.config.max_update_norm,
    )


def _screen_uploads(
    run: _Run,
    r: int,
    phase: str,
    per_client: list[tuple[int, list[Message]]],
    expected: UploadExpectation,
    log: _RoundLog,
) -> list[Message]:
    """Validate every upload, append all of them to the wire log (rejected ones marked with their
    reason) and return those the server aggregates."""
    accepted: list[Message] = []
    rejected_here = []
    for cid, ups in per_client:
        reasons = validate_client_uploads(ups, expected)
        for i, m in enumerate(ups):
            reason = reasons.get(i)
            run.wire.append(m, rejected=reason)
            if reason is None:
                accepted.append(m)
                continue
            entry = {"client": cid, "phase": phase, "kind": m.kind, "reason": reason}
            log.rejected.append(entry)
            rejected_here.append(entry)
            logger.warning(
                "round %d phase %s: the server rejected %s's %r upload: %s", r, phase, m.sender, m.kind, reason
            )
    if rejected_here and not accepted:
        detail = "; ".join(f"client:{e['client']} {e['kind']}: {e['reason']}" for e in rejected_here[:5])
        raise AllUploadsRejectedError(
            f"round {r} phase {phase!r}: every upload was rejected, nothing is left to aggregate ({detail})"
        )
    return accepted


def _run_phase(
    run: _Run,
    r: int,
    phase_index: int,
    phase: str,
    participants: list[int],
    server_state: ServerState,
    seconds: dict[str, float],
    log: _RoundLog,
    context: str,
) -> tuple[ServerState, list[int]]:
    """One exchange: configure, client updates, upload checks, server step. Returns the new server
    state and the participants that did not fail."""
    method = run.method
    if not participants:
        raise RuntimeError(
            f"round {r} phase {phase!r}: no client survived ({context}); lower offline_probability or raise participation"
        )
    names = [client_party(c) for c in participants]
    expected = _expectation(run, phase, server_state)
    broadcasts = method.configure(phase, server_state, r, names)
    _check_broadcasts(broadcasts, r, phase, set(names), f"{method.name}.configure")
    for m in broadcasts:
        run.wire.append(m)
    t_clients = time.perf_counter()
    execute = run.executor if run.executor is not None else _update_clients
    per_client = execute(run, r, phase_index, phase, participants, broadcasts, log)
    seconds["clients"] += time.perf_counter() - t_clients
    failed = {e["client"] for e in log.failed}
    participants = [c for c in participants if c not in failed]
    if not participants:
        raise RuntimeError(f"round {r} phase {phase!r}: no client survived ({context}, failed {log.failed})")
    uploads = _screen_uploads(run, r, phase, per_client, expected, log)
    t_server = time.perf_counter()
    server_state, outgoing = method.server_step(phase, server_state, uploads)
    seconds["server"] += time.perf_counter() - t_server
    _check_broadcasts(outgoing, r, phase, run.parties, f"{method.name}.server_step")
    for m in outgoing:
        run.wire.append(m)
        for receiver in m.receivers:
            run.pending.setdefault(receiver, []).append(m)
    return server_state, participants


def _summarise_round(
    round: int,
    sampled: list[int],
    offline: list[int],
    log: _RoundLog,
    participants: list[int],
    client_states: dict[int, ClientState],
    wire: WireLog,
    first_message: int,
    seconds: dict[str, float],
    server_state: ServerState,
) -> dict[str, Any]:
    losses = {}
    for cid in participants:
        last = client_states[cid].meta.get("last_update")
        if isinstance(last, dict) and last.get("round") == round and last.get("loss") is not None:
            losses[str(cid)] = float(last["loss"])
    finite = [v for v in losses.values() if np.isfinite(v)]
    uploads = broadcast = 0
    by_kind: dict[str, int] = {}
    for m in list(wire)[first_message:]:
        copies = len(m.receivers)
        if m.sender == SERVER:
            broadcast += m.nbytes * copies
        else:
            uploads += m.nbytes
        by_kind[m.kind] = by_kind.get(m.kind, 0) + m.nbytes * copies
    server_info = {
        k: v for k, v in server_state.meta.items() if k.startswith("last_") or k in ("reg_form", "regularizer")
    }
    return {
        "round": round,
        "sampled": sampled,
        "offline": offline,
        "failed": list(log.failed),
        "rejected": list(log.rejected),
        "participants": participants,
        "client_loss": float(np.mean(finite)) if finite else None,
        "client_losses": losses,
        "seconds": seconds,
        "bytes": {
            "uploaded": uploads,
            "broadcast": broadcast,
            "uploaded_per_participant": uploads / len(participants) if participants else 0,
            "broadcast_per_participant": broadcast / len(participants) if participants else 0,
            "by_kind": by_kind,
        },
        "server": server_info,
        "evaluation": None,
    }


def _upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A round record of an older run folder in today's form (``failed`` was ``{client: error}``)."""
    if isinstance(record.get("failed"), dict):
        record["failed"] = [{"client": int(c), "phase": None, "error": e} for c, e in record["failed"].items()]
    record.setdefault("rejected", [])
    return record


def _failure_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"count": failures, "rounds": {round: [clients that failed]}}`` over the round records."""
    per_round = {}
    count = 0
    for record in rounds:
        failed = record.get("failed") or []
        count += len(failed)
        if failed:
            per_round[str(record["round"])] = sorted({int(e["client"]) for e in failed})
    return {"count": count, "rounds": per_round}


@dataclass
class _Evaluation:
    """The run's generic evaluation: the evaluator (None: no evaluation), the rounds after which
    it runs (round 0: the initial model) and the device it runs on."""

    evaluator: GenericEvaluator | None
    rounds: set[int]
    device: torch.device


def run_federated(
    config: FederatedConfig,
    clients: Sequence[ClientData] | Mapping[int, ClientData],
    out_dir: str | Path | None = None,
    eval_faces: FaceSet | None = None,
    initial_model: nn.Module | None = None,
    data_spec: dict[str, Any] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    method: Any = None,
    client_executor: Any = None,
) -> FederatedResult:
    """Train ``config.method`` over ``clients``.

    Args:
        config: the run's `FederatedConfig`.
        clients: a list (client ids 0..K-1) or a mapping id -> `ClientData`.
        out_dir: the run folder (checkpoint, metrics, timings, wire log, ground truth; see
            `federated_core.engine`); None keeps everything in memory (no resume).
        eval_faces: images of unseen identities for the generic evaluation (None: no evaluation).
        initial_model: a backbone made by `build_backbone` to start from (overrides
            ``config.initial_backbone``).
        data_spec: how to regenerate the clients' images (written to ``ground_truth/``).
        resume: continue from ``out_dir``'s checkpoint (same config required) instead of
            starting over; without a checkpoint there, start from round 1.
        stop_after: return after this round (the run can then be resumed), e.g. to split a run.
        method: a method object to use instead of ``get_method(config.method, **config.method_params)``.
        client_executor: runs a phase's ``client_update`` calls instead of this process (called like
            `_update_clients`; it must use `client_inbox`, `run_client_update` and `client_failed`
            so that every engine computes the same numbers); the Flower engines pass theirs.

    Raises:
        ClientFailureError: a client's update raised (unless ``config.tolerate_client_failures``).
        AllUploadsRejectedError: every upload of a phase failed the server's checks.
    """
    from federated_core.methods import GlobalModel, get_method

    client_data = _as_client_map(clients)
    out = None if out_dir is None else Path(out_dir)
    _check_run_arguments(config, out, resume, stop_after)
    method = method if method is not None else get_method(config.method, **config.method_params)
    device = torch.device(config.device)
    model, spec = _initial_model(config, initial_model)
    global_model = GlobalModel(model, spec)
    evaluator = GenericEvaluator(eval_faces, config.evaluation) if eval_faces is not None else None
    evaluation = _Evaluation(evaluator, set(config.eval_rounds()) if evaluator is not None else set(), device)

    if resume and out is not None and has_engine_state(out):
        server_state, run, metrics, start = _resume(out, config, method, client_data)
    else:
        start = 1
        server_state, run, metrics = _start_run(
            config, method, client_data, global_model, model, spec, evaluation, out, data_spec
        )

    run.executor = client_executor
    last = config.rounds if stop_after is None else stop_after
    server_state = _run_rounds(run, server_state, metrics, spec, evaluation, out, start, last)
    return _finish_run(run, server_state, metrics, spec, out, last if last >= start else start - 1)


def _check_run_arguments(config: FederatedConfig, out: Path | None, resume: bool, stop_after: int | None) -> None:
    """Reject ``resume`` without a run folder and a ``stop_after`` outside the configured rounds."""
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (the run folder holding the checkpoint)")
    if stop_after is not None and not (1 <= stop_after <= config.rounds):
        raise ValueError(f"stop_after must be in [1, {config.rounds}] (the configured rounds), got {stop_after}")


def _start_run(
    config: FederatedConfig,
    method: Any,
    client_data: dict[int, ClientData],
    global_model: GlobalModel,
    model: nn.Module,
    spec: dict[str, Any],
    evaluation: _Evaluation,
    out: Path | None,
    data_spec: dict[str, Any] | None,
) -> tuple[ServerState, _Run, dict[str, Any]]:
    """A fresh run: the parties' initial states (from ``global_model``, whose backbone is ``model``
    built from ``spec``), the initial metrics (with the round-0 evaluation) and, with a run
    folder, the ground truth's start."""
    client_ids = list(client_data)
    t0 = time.perf_counter()
    server_state = method.init(global_model, config, generator(config.seed, "server_init"))
    client_states = {
        cid: method.client_init(cid, client_data[cid], global_model, config, generator(config.seed, "client_init", cid))
        for cid in tqdm(
            client_ids, desc="client init", disable=not config.progress or len(client_ids) < 50, leave=False
        )
    }
    run = _Run(
        config,
        method,
        client_data,
        {client_party(c) for c in client_ids},
        WireLog(keep_tensors=config.keep_wire_tensors),
        {},
        client_states,
    )
    metrics = _initial_metrics(config, method, spec, client_data, time.perf_counter() - t0)
    if evaluation.evaluator is not None and 0 in evaluation.rounds:  # rounds is empty without an evaluator
        metrics["evaluation"]["0"] = evaluation.evaluator.evaluate(model, evaluation.device)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_ground_truth_start(out, client_data, data_spec)
    return server_state, run, metrics


def _run_rounds(
    run: _Run,
    server_state: ServerState,
    metrics: dict[str, Any],
    spec: dict[str, Any],
    evaluation: _Evaluation,
    out: Path | None,
    start: int,
    last: int,
) -> ServerState:
    """Rounds ``start..last``: each round, its evaluation, its metrics record and (with a run
    folder) its checkpoint. Returns the final server state."""
    config, method = run.config, run.method
    bar = tqdm(range(start, last + 1), desc=f"{method.name} rounds", disable=not config.progress)
    for r in bar:
        t_round = time.perf_counter()
        server_state, record = _run_round(run, r, server_state)
        _evaluate_round(evaluation, method, server_state, spec, r, record, metrics)
        record["seconds"]["round"] = time.perf_counter() - t_round
        metrics["rounds"].append(record)
        metrics["client_failures"] = _failure_summary(metrics["rounds"])
        if config.progress:
            acc = record["evaluation"]["verification"]["accuracy"] if record["evaluation"] else None
            bar.set_postfix(loss=record["client_loss"], acc=acc)
        if out is not None:
            _save_round(out, run, server_state, spec, metrics, r)
    bar.close()
    return server_state


def _evaluate_round(
    evaluation: _Evaluation,
    method: Any,
    server_state: ServerState,
    spec: dict[str, Any],
    r: int,
    record: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    """Evaluate the global backbone after round ``r`` when due (into ``metrics`` and ``record``)."""
    if evaluation.evaluator is not None and r in evaluation.rounds:
        t_eval = time.perf_counter()
        result = evaluation.evaluator.evaluate(_backbone_of(method, server_state, spec), evaluation.device)
        metrics["evaluation"][str(r)] = result
        record["evaluation"] = result
        record["seconds"]["evaluation"] = time.perf_counter() - t_eval


def _save_round(
    out: Path, run: _Run, server_state: ServerState, spec: dict[str, Any], metrics: dict[str, Any], r: int
) -> None:
    """Write round ``r``'s wire log, global checkpoint, metrics and, last, the engine state."""
    config, method = run.config, run.method
    # The engine state is written last: it is the commit point a resume starts from (a
    # wire log or metrics ahead of it are cut back to its round).
    run.wire.save(out)
    save_global_checkpoint(out, _backbone_of(method, server_state, spec), _checkpoint_info(config, method, r))
    _write_metrics(out, metrics, run.wire)
    save_engine_state(
        out,
        EngineState(r, server_state, run.client_states, run.pending, config.fingerprint_dict(), method.name),
    )


def _finish_run(
    run: _Run,
    server_state: ServerState,
    metrics: dict[str, Any],
    spec: dict[str, Any],
    out: Path | None,
    completed: int,
) -> FederatedResult:
    """The final metrics (and, once every round is done, the ground truth's end) and the result."""
    metrics["completed_rounds"] = completed
    metrics["bytes_per_round"] = _bytes_table(run.wire)
    metrics["client_failures"] = _failure_summary(metrics["rounds"])
    if out is not None:
        _write_metrics(out, metrics, run.wire)
        if completed == run.config.rounds:
            _write_ground_truth_final(out, run.method, run.client_states)
    backbone = _backbone_of(run.method, server_state, spec)
    return FederatedResult(backbone, metrics, run.wire, out, server_state, run.client_states, completed)


def _initial_metrics(
    config: FederatedConfig, method: Any, spec: dict[str, Any], client_data: dict[int, ClientData], init_seconds: float
) -> dict[str, Any]:
    return {
        "config": config.artifact_dict(),
        "method": {"name": method.name, "phases": list(method.phases), "hyperparameters": method.hyperparameters()},
        "backbone": spec,
        "num_clients": len(client_data),
        "num_train_images": int(sum(len(d) for d in client_data.values())),
        "init_seconds": init_seconds,
        "rounds": [],
        "evaluation": {},
        "client_failures": {"count": 0, "rounds": {}},
    }


def _resume(
    out: Path, config: FederatedConfig, method: Any, client_data: dict[int, ClientData]
) -> tuple[ServerState, _Run, dict[str, Any], int]:
    """The server state, run state, metrics and first round to run of a checkpointed run."""
    saved = load_engine_state(out)
    expected = config.fingerprint_dict()
    defaults = FederatedConfig().fingerprint_dict()
    # fields added after the checkpoint was written match when the run uses their defaults
    written = {**{k: v for k, v in defaults.items() if k not in saved.fingerprint}, **saved.fingerprint}
    if written != expected:
        diff = sorted(k for k in set(expected) | set(written) if written.get(k) != expected.get(k))
        raise ValueError(f"resume: the checkpoint in {str(out)!r} was written with a different config (fields {diff})")
    if set(saved.client_states) != set(client_data):
        raise ValueError("resume: the checkpoint's clients differ from the clients given")
    done = saved.completed_rounds
    wire = WireLog.load(out, upto_round=done)
    wire.keep_tensors = config.keep_wire_tensors
    metrics = json.loads((out / METRICS_NAME).read_text())
    timings_path = out / TIMINGS_NAME
    if timings_path.is_file():  # (runs written before timings moved out keep them in metrics.json)
        _merge_timings(metrics, json.loads(timings_path.read_text()))
    metrics["rounds"] = [_upgrade_record(r) for r in metrics["rounds"] if r["round"] <= done]
    metrics["evaluation"] = {k: v for k, v in metrics["evaluation"].items() if int(k) <= done}
    metrics["client_failures"] = _failure_summary(metrics["rounds"])
    run = _Run(
        config, method, client_data, {client_party(c) for c in client_data}, wire, saved.pending, saved.client_states
    )
    return saved.server_state, run, metrics, done + 1


def _run_round(run: _Run, r: int, server_state: ServerState) -> tuple[ServerState, dict[str, Any]]:
    """Round ``r``: sampling, offline clients, every phase, the divergence check. Returns the new
    server state and the round's metrics record (without evaluation)."""
    config, method = run.config, run.method
    first_message = len(run.wire)
    client_ids = list(run.client_data)
    sampled = sample_participants(client_ids, config.participation, config.seed, r)
    offline = offline_clients(sampled, config.offline_probability, config.offline_policy, config.seed, r)
    participants = [c for c in sampled if c not in offline]
    log = _RoundLog()
    seconds = {"clients": 0.0, "server": 0.0}
    context = f"sampled {sampled}, offline {offline}"
    for phase_index, phase in enumerate(method.phases):
        server_state, participants = _run_phase(
            run, r, phase_index, phase, participants, server_state, seconds, log, context
        )
    bad = [
        k
        for k, v in method.global_backbone_state(server_state).items()
        if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise RuntimeError(
            f"round {r}: the global backbone has non-finite weights ({bad[:3]}...): training diverged "
            f"(last client losses {_summarise_losses(run.client_states, participants, r)}); lower lr or the "
            f"method's step sizes. The checkpoint of round {r - 1} is kept."
        )
    record = _summarise_round(
        r,
        sampled,
        offline,
        log,
        participants,
        run.client_states,
        run.wire,
        first_message,
        seconds,
        server_state,
    )
    return server_state, record


def _summarise_losses(client_states: dict[int, ClientState], participants: list[int], round: int) -> dict[int, Any]:
    out = {}
    for cid in participants[:5]:
        last = client_states[cid].meta.get("last_update")
        if isinstance(last, dict) and last.get("round") == round:
            out[cid] = last.get("loss")
    return out


def _backbone_of(method: Any, server_state: ServerState, spec: dict[str, Any]) -> nn.Module:
    from federated_core.models import build_backbone

    with torch.random.fork_rng(devices=[]):
        model = build_backbone(
            spec["name"], embedding_dim=spec["embedding_dim"], resolution=spec["resolution"], **spec.get("kwargs", {})
        )
    model.load_state_dict(method.global_backbone_state(server_state), strict=True)
    return model.eval()


def _checkpoint_info(config: FederatedConfig, method: Any, round: int) -> dict[str, Any]:
    return {
        "round": round,
        "method": method.name,
        "hyperparameters": method.hyperparameters(),
        "config": config.artifact_dict(),
    }


def _bytes_table(wire: WireLog) -> dict[str, Any]:
    """Per round: bytes the server sent (counted once per receiver) and bytes all clients sent."""
    server = wire.bytes_per_round(SERVER)
    everyone = wire.bytes_per_round(None)
    return {
        str(r): {"server_sent": server.get(r, 0), "clients_sent": everyone.get(r, 0) - server.get(r, 0)}
        for r in sorted(everyone)
    }


def _split_timings(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metrics`` without its wall-clock timings, and the timings ``{"init_seconds",
    "rounds": {round: seconds}}`` (the round records are copied, ``metrics`` is unchanged)."""
    plain = {k: v for k, v in metrics.items() if k != "init_seconds"}
    plain["rounds"] = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["rounds"]]
    timings = {
        "init_seconds": metrics.get("init_seconds"),
        "rounds": {str(r["round"]): r["seconds"] for r in metrics["rounds"] if "seconds" in r},
    }
    return plain, timings


def _merge_timings(metrics: dict[str, Any], timings: dict[str, Any]) -> None:
    """Put the timings of `_split_timings` back into ``metrics`` (in place; missing ones: None)."""
    metrics["init_seconds"] = timings.get("init_seconds")
    per_round = timings.get("rounds", {})
    for record in metrics["rounds"]:
        record["seconds"] = per_round.get(str(record["round"]))


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=float))
    tmp.replace(path)


def _write_metrics(out: Path, metrics: dict[str, Any], wire: WireLog) -> None:
    """``metrics.json`` (byte-reproducible: no timings) and ``timings.json``."""
    metrics = dict(metrics)
    metrics["wire_summary"] = wire.summary()
    metrics["bytes_per_round"] = _bytes_table(wire)
    plain, timings = _split_timings(metrics)
    _write_json(out / TIMINGS_NAME, timings)
    _write_json(out / METRICS_NAME, plain)
