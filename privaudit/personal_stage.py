"""Personalised utility of a trained run: the per-client protocols of FedFR (Liu et al., AAAI 2022,
§ "Evaluation Metrics") and FedFS (Kim et al. 2024) on held-out images of each client's own
identities (`federated_core.personalised`).

**Held-out images.** The training data are left untouched (every run's numbers and cache keys stay
as they are). For every client the synthetic generator renders ``h`` more images of each of its
identities at image indices *after* its training images: the data spec says the client trained on
indices ``start_index .. start_index + images_per_identity - 1``, the held-out images are
``start_index + images_per_identity .. + h - 1`` (`HeldOut`). Enrolment = the client's training
images, test = its held-out images (a `PersonalisedSplit`), as in FedFR's per-identity
train / test split of each client's data.

**Model per client** (recorded as ``model`` and in `MethodResult.params["personalised_model"]`):

* FedFR: the personalised model ``[Θ_l, Π_l]`` (``"local+dfc"``, FedFR Table 3, the paper's
  choice; ``"local"`` when the run has no DFC module);
* FedFS: the personalised model (``"personal"``); its aggregated-features model is reported too,
  under the FedFS protocol, with the key suffix ``" [aggregated]"``;
* FedAvg + fine-tuning (``fedavg-finetune``): the final global backbone fine-tuned on the client's
  training images (``"finetuned"``, `federated_core.methods.fedavg_finetune`), seeded per client;
* every other method: the run's final global backbone Θ_g (``"global"``): nothing personal exists.

A FedFR client that never took part in a round has no local model; it is evaluated with Θ_g and
named in ``clients_on_global_model``.

**Keys** of the flat result (means over clients): ``"fedfr:auroc"``, ``"fedfr:tar@far=0.01"``,
``"fedfr:rank1"``, ``"fedfr:tpir@fpir=0.1"`` (FedFR protocol: per-client 1:1 and 1:N with the
local gallery) and ``"fedfs:auroc"``, ``"fedfs:tpir@fpir=0.001"`` (FedFS protocol: own-identity
AUROC and TPIR@FPIR = 1e-3; its rank-1 is FedFR's, so it is not repeated). Targets the pair /
probe counts cannot support, and metrics that not every client can report, are left out (listed
under ``dropped`` in the cache file), never turned into numbers. Every value is a rate in [0, 1].

**Cache.** ``RUN/personalised.json`` holds the values, the per-client reports (also those of Θ_g
for methods with a personal model, FedFR Table 3's baseline) and the held-out index ranges, keyed
by a fingerprint of the run (its ``audit_stage.json`` key), the held-out count, the protocol
targets and the seed; a rerun with the same key reads it instead of recomputing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privaudit.code_version import fingerprint

STAGE_VERSION = 1
CACHE_NAME = "personalised.json"
HELDOUT_PER_IDENTITY = {"tiny": 3, "demo": 4, "bench": 4, "paper": 10}
FPIR_RULE = "nist"
MAX_IMPOSTOR_PAIRS = 1_000_000


def heldout_images_per_identity(scenario: Any) -> int:
    """Default held-out images per identity for the scenario's scale (tiny 3, demo and bench 4, paper 10)."""
    if scenario.scale not in HELDOUT_PER_IDENTITY:
        raise ValueError(f"scenario.scale must be one of {sorted(HELDOUT_PER_IDENTITY)}, got {scenario.scale!r}")
    return HELDOUT_PER_IDENTITY[scenario.scale]


def _check_per_identity(per_identity: Any) -> int:
    if isinstance(per_identity, bool) or not isinstance(per_identity, int) or per_identity < 2:
        raise ValueError(
            f"heldout_per_identity must be an integer >= 2 (genuine pairs need two held-out images of an identity), "
            f"got {per_identity!r}"
        )
    return per_identity


# ------------------------------------------------------------------------------- held-out images


@dataclass
class HeldOut:
    """Held-out images of every client's own identities, rendered on first use and shared by all
    methods of an audit (`split`). ``data`` is a `federated_core.scales.FederatedData`."""

    data: Any
    per_identity: int
    _split: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.per_identity = _check_per_identity(self.per_identity)
        spec = self.data.data_spec
        if spec.get("source") not in ("synthetic", "folder"):
            raise ValueError(
                "personalised utility renders held-out images with the synthetic generator or from a folder; the "
                f"data spec's source must be 'synthetic' or 'folder', got {spec.get('source')!r}"
            )
        heldout = spec.get("heldout")
        if spec.get("source") == "folder" and (heldout or {}).get("per_identity", 0) < self.per_identity:
            raise ValueError(
                f"the folder data keeps {(heldout or {}).get('per_identity', 0)} held-out images per client identity, "
                f"the personalised protocols need {self.per_identity}"
            )

    def index_ranges(self) -> dict[str, dict[str, list[int]]]:
        """Per client party: the half-open image-index ranges ``"train"`` and ``"heldout"``."""
        from federated_core.engine.messages import client_party

        out = {}
        for c in range(len(self.data.clients)):
            party = client_party(c)
            entry = self.data.data_spec["clients"].get(party)
            if entry is None:
                known = sorted(self.data.data_spec["clients"])
                raise ValueError(f"data spec has no entry for {party} (clients: {known})")
            start, count = int(entry["start_index"]), int(entry["images_per_identity"])
            stop = start + count
            out[party] = {"train": [start, stop], "heldout": [stop, stop + self.per_identity]}
        return out

    def split(self) -> Any:
        """A `federated_core.personalised.PersonalisedSplit`: enrolment = each client's training
        data, test = its held-out images."""
        if self._split is None:
            from federated_core.personalised import PersonalisedSplit

            generator = self._source()
            tests = []
            for c, (party, ranges) in enumerate(self.index_ranges().items()):
                ids = [int(i) for i in self.data.data_spec["clients"][party]["identities"]]
                if sorted(ids) != sorted(self.data.clients[c].identities):
                    raise ValueError(f"data spec identities of {party} differ from the client's training identities")
                tests.append(generator.make_set(ids, self.per_identity, start_index=ranges["heldout"][0]))
            self._split = PersonalisedSplit(list(self.data.clients), tests)
        return self._split

    def _source(self) -> Any:
        """What renders the held-out images: the synthetic generator of the data spec, or the
        folder it was built from (`FolderFaceSource.from_data_spec`, fingerprint checked)."""
        spec = self.data.data_spec
        if spec["source"] == "folder":
            from federated_core.data.folder_source import FolderFaceSource

            return FolderFaceSource.from_data_spec(spec)
        from federated_core.pretrain import SyntheticSpec

        return SyntheticSpec(**spec["generator"]).generator()


# ------------------------------------------------------------------------------- models per client


@dataclass
class RunModels:
    """What a finished run leaves on disk for the personalised protocols: the method object
    (rebuilt from the run's config), its final global backbone and every client's final state."""

    method: Any
    global_backbone: Any
    client_states: dict[int, Any]
    rounds: int


def load_run_models(run_dir: str | Path) -> RunModels:
    """Read ``RUN/checkpoint/`` (global backbone, safetensors) and ``RUN/state/`` (the engine's
    final client states, safetensors). Raises ValueError when the run is not finished."""
    from federated_core.engine.checkpoint import CHECKPOINT_DIRNAME, load_engine_state
    from federated_core.methods import get_method
    from federated_core.models import load_backbone

    run_dir = Path(run_dir)
    info_path = run_dir / CHECKPOINT_DIRNAME / "config.json"
    if not info_path.is_file():
        raise ValueError(f"run_dir {str(run_dir)!r} holds no global checkpoint ({CHECKPOINT_DIRNAME}/config.json)")
    info = json.loads(info_path.read_text())
    config = info["config"]
    if int(info["round"]) != int(config["rounds"]):
        raise ValueError(
            f"run {str(run_dir)!r} is not finished: checkpoint at round {info['round']} of {config['rounds']}"
        )
    state = load_engine_state(run_dir)
    if state.completed_rounds != int(config["rounds"]):
        raise ValueError(f"run {str(run_dir)!r}: client states at round {state.completed_rounds} of {config['rounds']}")
    method = get_method(config["method"], **config.get("method_params", {}))
    backbone, _ = load_backbone(run_dir / CHECKPOINT_DIRNAME / "backbone.safetensors")
    return RunModels(method, backbone, state.client_states, int(config["rounds"]))


@dataclass
class ModelPlan:
    """Which model each client evaluates with: ``own`` (what the method gives a client: its
    personalised model where one exists, else Θ_g), optional ``extra`` variants (FedFS's
    aggregated model) and the name of the own model."""

    own: Callable[[int], Any]
    own_name: str
    extra: dict[str, Callable[[int], Any]] = field(default_factory=dict)
    global_model: Callable[[int], Any] | None = None
    clients_on_global_model: list[int] = field(default_factory=list)


def model_plan(models: RunModels, clients: Sequence[Any] | None = None, seed: int = 0) -> ModelPlan:
    """The per-client models of the module docstring for ``models``' method. ``clients`` (each
    client's training `ClientData`, in client order) and ``seed`` are needed only by methods that
    personalise after training (``fedavg-finetune``)."""
    from federated_core.methods.fedavg_finetune import FedAvgFineTune
    from federated_core.methods.fedfr import DFC_WEIGHT, FedFR
    from federated_core.methods.fedfs import FedFS

    method, g = models.method, models.global_backbone

    def global_model(c: int) -> Any:
        return g  # one object: embedded once for all clients

    def memo(build: Callable[[int], Any]) -> Callable[[int], Any]:
        built: dict[int, Any] = {}
        return lambda c: built[c] if c in built else built.setdefault(c, build(c))

    def state(c: int) -> Any:
        if c not in models.client_states:
            raise ValueError(f"client {c} has no saved state (saved clients: {sorted(models.client_states)})")
        return models.client_states[c]

    if isinstance(method, FedFR):
        which = "local+dfc" if all(DFC_WEIGHT in s.tensors for s in models.client_states.values()) else "local"
        untrained = sorted(c for c, s in models.client_states.items() if "last_update" not in s.meta)
        own = memo(lambda c: g if c in untrained else method.personalised_model(state(c), which))
        return ModelPlan(own, which, global_model=global_model, clients_on_global_model=untrained)
    if isinstance(method, FedFS):
        own = memo(lambda c: method.personalised_model(state(c), "personal"))
        aggregated = memo(lambda c: method.personalised_model(state(c), "aggregated", global_backbone=g))
        return ModelPlan(own, "personal", {"aggregated": aggregated}, global_model=global_model)
    if isinstance(method, FedAvgFineTune):
        if clients is None:
            raise ValueError("fedavg-finetune's personalised models need the clients' training data (clients=...)")
        data = list(clients)
        own = memo(lambda c: method.personalised_model(state(c), data[c], g, seed))
        return ModelPlan(own, "finetuned", global_model=global_model)
    return ModelPlan(global_model, "global")


# ------------------------------------------------------------------------------- flat metrics


def metric_name(flat_key: str) -> str:
    """``average_over_clients`` key -> short name: ``"verification.tar_at_far.0.01"`` ->
    ``"tar@far=0.01"``, ``"identification.tpir_at_fpir.0.001"`` -> ``"tpir@fpir=0.001"``,
    ``"verification.auroc"`` / ``"auroc"`` -> ``"auroc"``, ``"identification.rank1"`` -> ``"rank1"``."""
    for prefix, short in (("verification.tar_at_far.", "tar@far="), ("identification.tpir_at_fpir.", "tpir@fpir=")):
        if flat_key.startswith(prefix):
            return f"{short}{float(flat_key[len(prefix) :]):g}"
    return {"verification.auroc": "auroc", "identification.rank1": "rank1"}.get(flat_key, flat_key)


def flatten_report(report: Any, num_clients: int, tag: str = "") -> tuple[dict[str, float], dict[str, str]]:
    """Means over clients of a `PersonalisedReport` as ``{"<protocol>:<metric><tag>": value}``.

    A metric is kept only when every client reports it (a FAR one client cannot support would make
    the mean range over a subset). Returns ``(values, dropped)``, ``dropped`` naming each left-out
    metric with the reason. Raises ValueError for a kept value outside [0, 1] (a bug, not noise).
    """
    values: dict[str, float] = {}
    dropped: dict[str, str] = {}
    for flat, stats in report.mean.items():
        name = metric_name(flat)
        if report.protocol == "fedfs" and name == "rank1":
            continue  # same gallery and probes as FedFR's 1:N: reported once, under fedfr
        key = f"{report.protocol}:{name}{tag}"
        if int(stats["clients"]) < num_clients:
            dropped[key] = f"reported by {int(stats['clients'])} of {num_clients} clients"
            continue
        value = float(stats["mean"])
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"personalised metric {key} must be a rate in [0, 1], got {value!r}")
        values[key] = value
    for c in report.per_client:
        ver = c.get("verification", {})
        for far in ver.get("unsupported_fars", []):
            dropped.setdefault(f"{report.protocol}:tar@far={float(far):g}{tag}", "unsupported at this impostor count")
        for fpir in c.get("identification", {}).get("unsupported_fpirs", []):
            dropped.setdefault(
                f"{report.protocol}:tpir@fpir={float(fpir):g}{tag}", "unsupported at this non-mated probe count"
            )
    return values, {k: v for k, v in sorted(dropped.items()) if k not in values}


# ------------------------------------------------------------------------------- the stage


@dataclass
class PersonalisedUtility:
    """The stage's output for one method: flat ``values`` (`MethodResult.personalised_utility`),
    the ``model`` each client used, and whether it came from the run folder's cache."""

    values: dict[str, float]
    model: str
    from_cache: bool
    details: dict[str, Any] = field(default_factory=dict)


def stage_key(run_dir: Path, per_identity: int, seed: int) -> str:
    """Fingerprint of what the stage's numbers depend on (the run's ``audit_stage.json`` key, the
    held-out count, the protocols' targets, the seed, the generator and stage versions)."""
    from federated_core.data.synthetic import GENERATOR_VERSION
    from federated_core.personalised import FEDFR_FARS, FEDFR_FPIRS, FEDFS_FPIRS

    stamp = run_dir / "audit_stage.json"
    saved = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if not saved.get("finished"):
        raise ValueError(f"run_dir {str(run_dir)!r} has no finished audit run (audit_stage.json with finished=true)")
    return fingerprint(
        {
            "run": saved["key"],
            "heldout_per_identity": per_identity,
            "seed": seed,
            "version": STAGE_VERSION,
            "generator": GENERATOR_VERSION,
            "fars": FEDFR_FARS,
            "fedfr_fpirs": FEDFR_FPIRS,
            "fedfs_fpirs": FEDFS_FPIRS,
            "fpir_rule": FPIR_RULE,
            "max_impostor": MAX_IMPOSTOR_PAIRS,
        }
    )


def personalised_utility(
    spec: Any,
    scenario: Any,
    data: Any,
    run_dir: str | Path,
    heldout_per_identity: int | None = None,
    heldout: HeldOut | None = None,
    progress: bool = False,
    cache: Any = None,
) -> PersonalisedUtility:
    """FedFR's and FedFS's personalised protocols on one finished run (module docstring).

    Args:
        spec: the variant's `MethodSpec` (for messages; the method is rebuilt from the run's config).
        scenario: the audit's `Scenario` (seed, device, scale).
        data: the audit's `FederatedData` (clients' training data and data spec).
        run_dir: the run folder written by `privaudit.pipeline.train_method`.
        heldout_per_identity: held-out images per identity (default by scale:
            `heldout_images_per_identity`); ignored when ``heldout`` is given.
        heldout: a `HeldOut` shared across methods (rendered once).
        progress: tqdm bars over clients.
        cache: a `privaudit.cache.StageCache`: the result is read back only when recorded there
            with this key and these bytes (without one, the stage always computes).
    """
    run_dir = Path(run_dir)
    if heldout is None:
        per = heldout_per_identity if heldout_per_identity is not None else heldout_images_per_identity(scenario)
        heldout = HeldOut(data, per)
    key = stage_key(run_dir, heldout.per_identity, scenario.seed)
    path = run_dir / CACHE_NAME
    saved = cache.load_json("personal", key, path) if cache is not None else None
    if saved is not None:
        return PersonalisedUtility(saved["values"], saved["model"], True, saved)

    split = heldout.split()
    plan = model_plan(_load_matching_run_models(run_dir, len(split.clients)), split.clients, scenario.seed)
    outcome = _evaluate_plan(plan, _ProtocolRunner(split, scenario, progress), len(split.clients))
    if not outcome.values:
        raise ValueError(
            f"method {spec.key!r}: no personalised metric is supported by every client ({outcome.dropped})"
        )
    details = _stage_details(key, spec, plan, outcome, heldout, split, scenario)
    if cache is not None:  # without a manifest nothing is written: an unrecorded file would never be trusted
        cache.save_json("personal", key, path, details)
    return PersonalisedUtility(details["values"], plan.own_name, False, details)


def _load_matching_run_models(run_dir: Path, n: int) -> RunModels:
    """`load_run_models`, checked to hold a saved state for exactly the data's clients 0..n-1."""
    models = load_run_models(run_dir)
    if sorted(models.client_states) != list(range(n)):
        raise ValueError(
            f"run {str(run_dir)!r} saved states of clients {sorted(models.client_states)}, but the data "
            f"has clients 0..{n - 1}"
        )
    return models


@dataclass
class _ProtocolRunner:
    """Runs one personalised protocol (`evaluate_personalised`) on the held-out split with the stage's settings."""

    split: Any
    scenario: Any
    progress: bool

    def __call__(self, model_for_client: Callable[[int], Any], protocol: str) -> Any:
        """The `PersonalisedReport` of ``protocol`` with ``model_for_client`` as each client's model."""
        from federated_core.personalised import evaluate_personalised

        return evaluate_personalised(
            model_for_client,
            self.split,
            protocol=protocol,
            fpir_rule=FPIR_RULE,
            max_impostor=MAX_IMPOSTOR_PAIRS,
            seed=self.scenario.seed,
            device=self.scenario.device,
            progress=self.progress,
        )


@dataclass
class _PlanOutcome:
    """Flat values, dropped metrics and the per-model protocol reports of one `ModelPlan`."""

    values: dict[str, float]
    dropped: dict[str, str]
    reports: dict[str, dict[str, Any]]


def _evaluate_plan(plan: ModelPlan, run: _ProtocolRunner, n: int) -> _PlanOutcome:
    """Both protocols on the own model, FedFS's protocol on each extra model, both on Θ_g (file only)."""
    values: dict[str, float] = {}
    dropped: dict[str, str] = {}
    reports: dict[str, dict[str, Any]] = {plan.own_name: {}}
    for protocol in ("fedfr", "fedfs"):
        report = run(plan.own, protocol)
        reports[plan.own_name][protocol] = report.to_dict()
        v, d = flatten_report(report, n)
        values.update(v)
        dropped.update(d)
    for name, model_for_client in plan.extra.items():
        report = run(model_for_client, "fedfs")
        reports[name] = {"fedfs": report.to_dict()}
        v, d = flatten_report(report, n, f" [{name}]")
        values.update(v)
        dropped.update(d)
    if plan.global_model is not None:  # Θ_g under the same protocols: FedFR Table 3's baseline (file only)
        reports["global"] = {p: run(plan.global_model, p).to_dict() for p in ("fedfr", "fedfs")}
    return _PlanOutcome(values, dropped, reports)


def _stage_details(
    key: str,
    spec: Any,
    plan: ModelPlan,
    outcome: _PlanOutcome,
    heldout: HeldOut,
    split: Any,
    scenario: Any,
) -> dict[str, Any]:
    """The cache file's content: values, dropped metrics, held-out ranges and every report (no
    timing: the pipeline records it in the results' ``timings``, so this file is reproducible)."""
    return {
        "key": key,
        "method": spec.key,
        "model": plan.own_name,
        "values": dict(sorted(outcome.values.items())),
        "dropped": outcome.dropped,
        "clients": len(split.clients),
        "clients_on_global_model": plan.clients_on_global_model,
        "heldout": {
            "images_per_identity": heldout.per_identity,
            "index_ranges": heldout.index_ranges(),
            "test_images": int(sum(len(t) for t in split.test)),
        },
        "fpir_rule": FPIR_RULE,
        "seed": scenario.seed,
        "reports": outcome.reports,
    }


__all__ = [
    "CACHE_NAME",
    "HELDOUT_PER_IDENTITY",
    "HeldOut",
    "ModelPlan",
    "PersonalisedUtility",
    "RunModels",
    "flatten_report",
    "heldout_images_per_identity",
    "load_run_models",
    "metric_name",
    "model_plan",
    "personalised_utility",
    "stage_key",
]
