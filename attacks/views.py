"""What each party observed, read from the wire log — and the ground truth kept aside for scoring.

Every attack runs from a named observer's position on exactly the tensors that observer received
(`WireLog.observed_by(party)`):

* ``"server"``: the honest-but-curious server — every upload and every broadcast;
* ``"client:<id>"``: a curious client — the broadcasts addressed to it (and its own uploads, which
  reveal nothing new and are excluded from the attack inputs by default);
* ``"outsider"``: a party on no wire — it sees only the released final global model
  (``RUN/checkpoint/backbone.safetensors``), and attacks with a public face gallery.

`ObserverView` groups the observed tensors by kind and by round: ``backbone``,
``class_centers``, ``noisy_class_centers``, ``cluster_centers``, ``noisy_cluster_centers``,
``global_class_embeddings``, and ``backbone_update`` — the difference of consecutive backbones
the party saw: a client's upload minus the broadcast that client started from (what the server
learns about one client), or a broadcast minus the previous broadcast this party received (what a
client learns about the others' aggregate).

`load_ground_truth` reads ``RUN/ground_truth/`` (observed by no party): the identities each client
holds (in local-class order), each client's final private tensors (true class centers ``W_k``
with the identity of each row) and the spec to regenerate the clients' images. It maps every
observed center-like row to the identities it stands for.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = [
    "OUTSIDER",
    "CENTER_KINDS",
    "VIEW_KINDS",
    "Observed",
    "BackboneUpdate",
    "CenterVectors",
    "ObserverView",
    "observer_view",
    "backbone_from_state",
    "GroundTruth",
    "load_ground_truth",
    "open_run_folder",
]

OUTSIDER = "outsider"
CENTER_KINDS = (
    "class_centers",
    "noisy_class_centers",
    "cluster_centers",
    "noisy_cluster_centers",
    "global_class_embeddings",
)
VIEW_KINDS = ("backbone", "backbone_update", *CENTER_KINDS)
CLUSTER_KINDS = ("cluster_centers", "noisy_cluster_centers")


def _check_observer(party: str) -> str:
    from federated_core.engine.messages import is_party

    if party == OUTSIDER or is_party(party):
        return party
    raise ValueError(f"observer must be 'server', 'client:<id>' (id an integer >= 0) or 'outsider', got {party!r}")


@dataclass(frozen=True)
class Observed:
    """One observed message (a thin copy of `federated_core.engine.Message`; tensors load lazily)."""

    index: int
    kind: str
    round: int
    phase: str
    sender: str
    receivers: tuple[str, ...]
    tensors: Mapping[str, torch.Tensor]
    event: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackboneUpdate:
    """``delta = after − base`` over the floating-point tensors of two backbones a party saw."""

    round: int
    phase: str
    sender: str
    base_round: int
    base_sender: str
    delta: dict[str, torch.Tensor]
    num_samples: int | None = None
    event: Any = None


@dataclass
class CenterVectors:
    """Center-like rows of one kind seen in one round, with where each row came from.

    ``sources[i]`` is the party whose data row ``i`` describes (the sender, or the owner of a row
    of ``global_class_embeddings``) and ``rows[i]`` its row within that party's block (its local
    class index for class centers, its query index for clusters).
    """

    observer: str
    kind: str
    round: int
    vectors: torch.Tensor
    sources: list[str]
    rows: torch.Tensor
    events: list[Any]
    metas: list[dict[str, Any]] = field(default_factory=list)
    row_rounds: list[int] = field(default_factory=list)


class ObserverView:
    """The tensors one party observed, grouped by kind and round (see the module docstring)."""

    def __init__(self, party: str, messages: Sequence[Observed], note: str = "") -> None:
        self.party = _check_observer(party)
        self.messages = sorted(messages, key=lambda m: m.index)
        self.note = note
        self._updates: list[BackboneUpdate] | None = None

    def __repr__(self) -> str:
        return f"ObserverView(party={self.party!r}, kinds={self.kinds()}, rounds={self.rounds()})"

    # ------------------------------------------------------------------ grouping
    @property
    def by_kind(self) -> dict[str, dict[int, list[Observed]]]:
        """``{kind: {round: [observed messages]}}`` (backbone updates under ``"backbone_update"``)."""
        out: dict[str, dict[int, list[Any]]] = {}
        for m in self.messages:
            out.setdefault(m.kind, {}).setdefault(m.round, []).append(m)
        for u in self.backbone_updates(required=False):
            out.setdefault("backbone_update", {}).setdefault(u.round, []).append(u)
        return out

    def kinds(self) -> list[str]:
        return sorted(self.by_kind)

    def rounds(self, kind: str | None = None) -> list[int]:
        if kind is None:
            return sorted({m.round for m in self.messages})
        return sorted(self.by_kind.get(kind, {}))

    def _missing(self, kind: str, detail: str = "") -> ValueError:
        return ValueError(
            f"observer {self.party!r} observed no tensor of kind {kind!r}{detail}; it observed kinds "
            f"{self.kinds() or 'none'}" + (f" ({self.note})" if self.note else "")
        )

    def of_kind(
        self, kind: str, round: int | None = None, sender: str | None = None, include_own: bool = True
    ) -> list[Observed]:
        """Observed messages of ``kind`` (optionally one round / one sender). Raises a
        ``ValueError`` naming the observer and the kind when there are none."""
        if kind not in VIEW_KINDS or kind == "backbone_update":
            raise ValueError(f"kind must be one of {[k for k in VIEW_KINDS if k != 'backbone_update']}, got {kind!r}")
        found = [
            m
            for m in self.messages
            if m.kind == kind
            and (round is None or m.round == round)
            and (sender is None or m.sender == sender)
            and (include_own or m.sender != self.party)
        ]
        if not found:
            where = "" if round is None else f" in round {round}"
            where += "" if sender is None else f" from {sender!r}"
            raise self._missing(kind, where)
        return found

    # ------------------------------------------------------------------ backbones
    def backbone_updates(
        self, round: int | None = None, sender: str | None = None, required: bool = True
    ) -> list[BackboneUpdate]:
        """Differences of consecutive backbones this party saw (see the module docstring)."""
        if self._updates is None:
            self._updates = self._compute_updates()
        found = [
            u for u in self._updates if (round is None or u.round == round) and (sender is None or u.sender == sender)
        ]
        if required and not found:
            raise self._missing("backbone_update", "" if round is None else f" in round {round}")
        return found

    def _compute_updates(self) -> list[BackboneUpdate]:
        from federated_core.engine.messages import SERVER

        backbones = [m for m in self.messages if m.kind == "backbone"]
        updates: list[BackboneUpdate] = []
        last_broadcast_to: dict[str, Observed] = {}
        previous_seen_broadcast: Observed | None = None
        for m in backbones:
            if m.sender == SERVER:
                if (
                    previous_seen_broadcast is not None
                    and previous_seen_broadcast.round < m.round
                    and (self.party == SERVER or self.party in m.receivers or self.party == OUTSIDER)
                ):
                    updates.append(_difference(m, previous_seen_broadcast))
                for r in m.receivers:
                    last_broadcast_to[r] = m
                previous_seen_broadcast = m
            else:
                base = last_broadcast_to.get(m.sender)
                if base is not None:
                    updates.append(_difference(m, base))
        return updates

    def latest_backbone(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The last backbone state dict this party received from the server (the model it would
        use to embed a gallery) and its build spec (``meta["spec"]``)."""
        from federated_core.engine.messages import SERVER

        received = [m for m in self.messages if m.kind == "backbone" and m.sender == SERVER]
        if not received:
            raise self._missing("backbone", " from the server")
        m = received[-1]
        return {k: m.tensors[k] for k in m.tensors}, dict(m.meta.get("spec", {}))

    def build_latest_backbone(self, spec: Mapping[str, Any] | None = None) -> torch.nn.Module:
        """`latest_backbone` rebuilt as a module (``spec`` overrides a missing ``meta["spec"]``)."""
        state, saved = self.latest_backbone()
        spec = dict(spec or saved)
        if not spec:
            raise ValueError(f"observer {self.party!r}: the backbone message carries no build spec; pass spec=")
        return backbone_from_state(state, spec)

    # ------------------------------------------------------------------ center-like vectors
    def center_vectors(self, kind: str, round: int | str = "last", include_own: bool = False) -> CenterVectors:
        """Stack the center-like rows of ``kind`` seen in ``round`` (``"last"``: the last round
        with any; ``"all"``: every round) with their sources. The observer's own rows are
        excluded unless ``include_own``."""
        from federated_core.engine.messages import SERVER, client_party

        if kind not in CENTER_KINDS:
            raise ValueError(f"kind must be one of {list(CENTER_KINDS)}, got {kind!r}")
        msgs = self.of_kind(kind)
        if round == "last":
            last = max(m.round for m in msgs)
            msgs = [m for m in msgs if m.round == last]
        elif round != "all":
            msgs = [m for m in msgs if m.round == round]
            if not msgs:
                raise self._missing(kind, f" in round {round}")
        vectors, sources, rows, events, metas, row_rounds = [], [], [], [], [], []
        for m in msgs:
            name = "centers" if "centers" in m.tensors else _only_matrix(m, self.party)
            v = m.tensors[name]
            if v.dim() != 2:
                raise ValueError(
                    f"observer {self.party!r}, kind {kind!r}: tensor {name!r} must be [n, d], got {tuple(v.shape)}"
                )
            if "owners" in m.tensors:  # rows of several clients (global_class_embeddings)
                owners = m.tensors["owners"].to(torch.int64).tolist()
                counts: dict[int, int] = {}
                for i, o in enumerate(owners):
                    counts[o] = counts.get(o, 0) + 1
                    vectors.append(v[i : i + 1])
                    sources.append(client_party(o))
                    rows.append(counts[o] - 1)
                    events.append(m.event)
                    metas.append(m.meta)
                    row_rounds.append(m.round)
            else:
                # a client's upload describes the sender; the server's copy of one client's own
                # centers (FedGC) describes its single receiver
                source = m.sender if m.sender != SERVER else (m.receivers[0] if len(m.receivers) == 1 else SERVER)
                vectors.append(v)
                sources += [source] * v.shape[0]
                rows += list(range(v.shape[0]))
                events += [m.event] * v.shape[0]
                metas += [m.meta] * v.shape[0]
                row_rounds += [m.round] * v.shape[0]
        # a relayed copy (the server forwarding uploads, as PrivacyFace's train phase does) repeats
        # rows the observer already saw: keep the first copy of each (source, round, row)
        seen: set[tuple[str, int, int]] = set()
        keep = []
        for i, (src, r, rnd) in enumerate(zip(sources, rows, row_rounds)):
            if (src, rnd, r) in seen or not (include_own or src != self.party):
                continue
            seen.add((src, rnd, r))
            keep.append(i)
        if not keep:
            raise self._missing(kind, " about another party (every row describes the observer's own data)")
        stacked = torch.cat(vectors).float()[keep]
        return CenterVectors(
            self.party,
            kind,
            -1 if round == "all" else msgs[0].round,
            stacked,
            [sources[i] for i in keep],
            torch.tensor([rows[i] for i in keep], dtype=torch.int64),
            [events[i] for i in keep],
            [metas[i] for i in keep],
            [row_rounds[i] for i in keep],
        )


def backbone_from_state(state: Mapping[str, torch.Tensor], spec: Mapping[str, Any]) -> torch.nn.Module:
    """A backbone message's tensors rebuilt as a module (eval mode) from its build spec
    (``{"name", "embedding_dim", "resolution", "kwargs"}``, what the engine puts in ``meta["spec"]``),
    without touching torch's global random state."""
    from federated_core.models import build_backbone

    if not spec:
        raise ValueError("the backbone message carries no build spec (meta['spec'])")
    with torch.random.fork_rng(devices=[]):
        model = build_backbone(
            spec["name"], embedding_dim=spec["embedding_dim"], resolution=spec["resolution"], **spec.get("kwargs", {})
        )
    model.load_state_dict({k: state[k] for k in state}, strict=True)
    return model.eval()


def _only_matrix(m: Observed, party: str) -> str:
    names = [k for k in m.tensors if m.tensors[k].dim() == 2]
    if len(names) != 1:
        raise ValueError(f"observer {party!r}, kind {m.kind!r}: expected one [n, d] tensor, got {sorted(m.tensors)}")
    return names[0]


def _difference(after: Observed, base: Observed) -> BackboneUpdate:
    delta = {}
    for k in after.tensors:
        a = after.tensors[k]
        if not a.is_floating_point():
            continue
        if k not in base.tensors:
            raise ValueError(f"backbone of round {after.round} from {after.sender!r} has tensor {k!r} the base lacks")
        delta[k] = a.float() - base.tensors[k].float()
    n = after.meta.get("num_samples")
    return BackboneUpdate(
        after.round,
        after.phase,
        after.sender,
        base.round,
        base.sender,
        delta,
        None if n is None else int(n),
        after.event,
    )


def observer_view(source: Any, party: str) -> ObserverView:
    """The view of ``party`` from a run folder (or its ``wire/`` folder) or a `WireLog`.

    ``"outsider"`` needs a run folder: it sees only ``checkpoint/backbone.safetensors`` (the
    released final model), nothing on the wire.
    """
    from federated_core.engine.wire import WireLog

    party = _check_observer(party)
    if party == OUTSIDER:
        if isinstance(source, WireLog):
            return ObserverView(
                party, [], note="an outsider observes no message; give the run folder to see the released model"
            )
        return _outsider_view(Path(source))
    log = source if isinstance(source, WireLog) else WireLog.load(source)
    observed = []
    for i, m in enumerate(log):
        if m.observed_by(party):
            observed.append(
                Observed(i, m.kind, m.round, m.phase, m.sender, tuple(m.receivers), m.tensors, m.event, dict(m.meta))
            )
    note = "" if observed else f"{party!r} took part in no message of this run"
    return ObserverView(party, observed, note=note)


def _outsider_view(run_dir: Path) -> ObserverView:
    from safetensors.torch import load_file

    from federated_core.models import read_checkpoint_config

    path = run_dir / "checkpoint" / "backbone.safetensors"
    if not path.is_file():
        return ObserverView(OUTSIDER, [], note=f"no released model at {str(path)!r}")
    config = read_checkpoint_config(path)
    spec = {k: config[k] for k in ("name", "embedding_dim", "resolution", "kwargs") if k in config}
    rounds = int(config.get("round", config.get("federated", {}).get("round", 0)))
    msg = Observed(
        0,
        "backbone",
        rounds,
        "release",
        "server",
        (OUTSIDER,),
        load_file(str(path)),
        None,
        {"spec": spec, "release": True},
    )
    return ObserverView(OUTSIDER, [msg], note="an outsider sees only the released final model")


# ---------------------------------------------------------------------- ground truth
@dataclass
class GroundTruth:
    """``RUN/ground_truth/``: observed by no party; for scoring only.

    Attributes:
        identities: party -> global identity ids of its local classes (local-class order).
        num_images: party -> number of training images.
        private: party -> its final private tensors (e.g. ``"centers"``: true ``W_k``).
        row_identities: party -> identity of each row of its 2-d private tensors.
        data_spec: how to regenerate the images (``{"source": "synthetic", ...}``).
        hyperparameters: the method's hyper-parameters (from ``metrics.json``), e.g. DPLC's rho.
    """

    identities: dict[str, list[int]]
    num_images: dict[str, int]
    private: dict[str, dict[str, torch.Tensor]]
    row_identities: dict[str, list[int]]
    data_spec: dict[str, Any]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    client_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _folder: Any = field(default=None, repr=False, compare=False)  # the opened FolderFaceSource

    @property
    def is_folder(self) -> bool:
        """Whether the run trained on an identity-per-folder tree (``data_spec["source"] == "folder"``)."""
        return self.data_spec.get("source") == "folder"

    def folder_source(self) -> Any:
        """The run's `FolderFaceSource`, reopened from the data spec (its fingerprint checked: a folder
        changed since the run is refused with a ``ValueError`` naming both fingerprints) or taken from
        `open_run_folder`'s cache while the tree is unchanged."""
        if not self.is_folder:
            raise ValueError(f"no face folder: the data spec says {self.data_spec.get('source')!r}")
        if self._folder is None:
            self._folder = open_run_folder(self.data_spec)
        return self._folder

    def face_source(self) -> Callable[[torch.Tensor, int, int], Any]:
        """``render(identities, images_per_identity, start_index) -> FaceSet`` of the run's data:
        the synthetic generator's ``make_set``, or the folder's `FolderFaceSource.render`."""
        if self.is_folder:
            source = self.folder_source()

            def render_folder(ids: torch.Tensor, per_identity: int, start_index: int) -> Any:
                return source.render(torch.as_tensor(ids, dtype=torch.int64), per_identity, start_index)

            return render_folder
        gen = self.generator()

        def render(ids: torch.Tensor, per_identity: int, start_index: int) -> Any:
            return gen.make_set(torch.as_tensor(ids, dtype=torch.int64), per_identity, start_index=start_index)

        return render

    def image_ranges(self) -> dict[int, tuple[int, int]]:
        """Per client identity ``(training end, held-out end)``: its client trained on image indices
        ``start_index .. training end - 1``, and ``training end .. held-out end - 1`` are its held-out
        images (``data_spec["heldout"]``, the personalised protocols' test images; none without one)."""
        heldout = self.data_spec.get("heldout") or {}
        held_end = int(heldout.get("start_index", 0)) + int(heldout.get("per_identity", 0))
        out: dict[int, tuple[int, int]] = {}
        for spec in self.data_spec.get("clients", {}).values():
            end = int(spec.get("start_index", 0)) + int(spec.get("images_per_identity", 1))
            for i in spec.get("identities", []):
                train_end = max(out.get(int(i), (0, 0))[0], end)
                out[int(i)] = (train_end, max(train_end, held_end) if heldout else train_end)
        return out

    def split_parts(self) -> dict[str, list[int]] | None:
        """A folder run's identity split (``data_spec["split"]["identities"]``: public, clients, test,
        distractors), or None when the spec records no split."""
        split = self.data_spec.get("split") or {}
        parts = split.get("identities")
        return None if parts is None else {k: [int(i) for i in v] for k, v in parts.items()}

    def member_ids(self) -> torch.Tensor:
        """Every identity in some client's training set (sorted)."""
        ids = sorted({i for v in self.identities.values() for i in v})
        return torch.tensor(ids, dtype=torch.int64)

    def true_centers(self, party: str) -> tuple[torch.Tensor, list[int]]:
        """A client's final true class centers ``W_k`` and the identity of each row."""
        priv = self.private.get(party, {})
        if "centers" not in priv:
            raise ValueError(f"the ground truth holds no class centers for {party!r} (private tensors: {sorted(priv)})")
        return priv["centers"], self.row_identities.get(party) or self.identities[party]

    def observation_ids(self, vectors: CenterVectors) -> list[frozenset[int]]:
        """The identities each observed row stands for.

        Class-center kinds: the identity of that local class. Cluster kinds: the identities
        averaged into that release's neighbourhood ``S`` (DPLC lines 4–5, ``p = mean_{i∈S} w_i``),
        as the sender recorded it when it released (``release_members`` in its ground-truth
        state; never sent). A control release independent of the data stands for no identity
        (empty set). Runs written before releases were recorded fall back to an approximation
        (`approximate_cluster_ids`), and say so in `notes`.
        """
        if vectors.kind not in CLUSTER_KINDS:
            out = []
            for s, r in zip(vectors.sources, vectors.rows.tolist()):
                ids = self.row_identities.get(s) or self.identities.get(s)
                if ids is None:
                    raise ValueError(f"the ground truth has no partition entry for {s!r}")
                out.append(frozenset([int(ids[r])]) if r < len(ids) else frozenset())
            return out
        recorded = self._recorded_cluster_ids(vectors)
        if recorded is not None:
            return recorded
        self.notes.append(
            f"{vectors.kind}: the run recorded no release members; the identities behind each cluster were "
            "recomputed from the final class centers (approximate)"
        )
        return self.approximate_cluster_ids(vectors)

    def _recorded_cluster_ids(self, vectors: CenterVectors) -> list[frozenset[int]] | None:
        """Exact cluster membership from the senders' ``release_members`` records, or None when a
        sender recorded none (older runs)."""
        out = []
        for i, (s, q) in enumerate(zip(vectors.sources, vectors.rows.tolist())):
            records = self.client_meta.get(s, {}).get("release_members")
            if records is None:
                return None
            rnd = vectors.row_rounds[i] if i < len(vectors.row_rounds) else vectors.round
            match = [r for r in records if int(r["round"]) == int(rnd) and r.get("kind", vectors.kind) == vectors.kind]
            if len(match) != 1:
                raise ValueError(
                    f"the ground truth of {s!r} holds {len(match)} {vectors.kind} release records for round {rnd} "
                    "(expected exactly one)"
                )
            rows = match[0]["rows"]
            if q >= len(rows):
                raise ValueError(f"{s!r} released {len(rows)} {vectors.kind} rows in round {rnd}; row {q} was observed")
            ids = self.row_identities.get(s) or self.identities[s]
            out.append(frozenset(int(ids[j]) for j in rows[q]))
        return out

    def approximate_cluster_ids(self, vectors: CenterVectors) -> list[frozenset[int]]:
        """Cluster membership recomputed with the noise-free
        `federated_core.methods.dplc.local_clustering` on the sender's *final* true ``W_k`` with
        its ``rho``, ``T``, ``Q`` (`dplc_parameters`) — an approximation (a release of round r came
        from the ``W_k`` at the start of round r); rows beyond the recomputed clusters fall back to
        the true centers within angle ``rho`` of the observed vector."""
        from attacks.knn import covered_identities

        cache: dict[tuple[str, float, Any, int], list[frozenset[int]]] = {}
        out = []
        for i, (s, q) in enumerate(zip(vectors.sources, vectors.rows.tolist())):
            rho, t, queries = self.dplc_parameters(s, vectors.metas[i] if i < len(vectors.metas) else {})
            w, ids = self.true_centers(s)
            key = (s, rho, t, queries)
            if key not in cache:
                cache[key] = self._recompute_clusters(w, ids, rho, t, queries)
            clusters = cache[key]
            if q < len(clusters):
                out.append(clusters[q])
            else:
                out.append(covered_identities(vectors.vectors[i : i + 1], w, torch.tensor(ids), margin=rho)[0])
        return out

    def dplc_parameters(self, party: str, meta: Mapping[str, Any] | None = None) -> tuple[float, Any, int]:
        """``(rho, T, Q)`` of a client's DPLC: from the release's own meta when it carries them,
        else the client's resolved ``min_cluster_size`` and the method's hyper-parameters."""
        meta = dict(meta or {})
        hp, cm = self.hyperparameters, self.client_meta.get(party, {})
        rho = float(meta.get("rho", hp.get("rho", 1.3)))
        t = meta.get("min_cluster_size", cm.get("min_cluster_size", hp.get("min_cluster_size", 1)))
        queries = int(meta.get("max_queries", hp.get("max_queries", 1)))
        return rho, t, queries

    @staticmethod
    def _recompute_clusters(w: torch.Tensor, ids: list[int], rho: float, t: Any, queries: int) -> list[frozenset[int]]:
        from federated_core.methods.dplc import local_clustering

        try:
            clustering = local_clustering(w, rho, t, queries)
        except ValueError:
            return []
        return [frozenset(int(ids[j]) for j in c.tolist()) for c in clustering.members]

    def faces(self, parties: Sequence[str] | None = None) -> Any:
        """Regenerate the training images of ``parties`` (all clients by default) from the data
        spec (synthetic data, or the run's face folder)."""
        from federated_core.data.faceset import FaceSet

        spec = self.data_spec
        if spec.get("source") not in ("synthetic", "folder"):
            raise ValueError(
                "images can be regenerated only for synthetic data or a face folder, the data spec says "
                f"{spec.get('source')!r}"
            )
        render = self.face_source()
        parties = list(parties) if parties is not None else sorted(spec["clients"])
        sets = []
        for p in parties:
            c = spec["clients"].get(p)
            if c is None:
                raise ValueError(f"the data spec has no client {p!r}")
            ids = torch.tensor(c["identities"], dtype=torch.int64)
            sets.append(render(ids, int(c["images_per_identity"]), int(c.get("start_index", 0))))
        return FaceSet.concat(sets)

    def generator(self) -> Any:
        """The synthetic generator of the run (for galleries and reference images)."""
        if self.data_spec.get("source") != "synthetic":
            raise ValueError(f"no synthetic generator: the data spec says {self.data_spec.get('source')!r}")
        return _synthetic_generator(self.data_spec["generator"])


def open_run_folder(data_spec: Mapping[str, Any]) -> Any:
    """`FolderFaceSource.from_data_spec(data_spec)`: the source is opened (every image checked) once
    per process and reused while the tree is unchanged (`federated_core.data.folder_source.open_source`),
    so an audit attacking several runs of one folder does not check it per run; its fingerprint is
    checked against the spec's."""
    from federated_core.data.folder_source import FolderFaceSource

    return FolderFaceSource.from_data_spec(data_spec)


def _synthetic_generator(spec: Mapping[str, Any]) -> Any:
    from federated_core.data import SyntheticFaces

    kwargs = {k: spec[k] for k in ("seed", "resolution", "groups", "difficulty") if spec.get(k) is not None}
    return SyntheticFaces(**kwargs)


def load_ground_truth(run_dir: str | Path) -> GroundTruth:
    """Read ``run_dir/ground_truth/`` (see `federated_core.engine`'s run-folder layout)."""
    from safetensors.torch import load_file

    folder = Path(run_dir) / "ground_truth"
    if not (folder / "partition.json").is_file():
        raise FileNotFoundError(f"no ground truth at {str(folder)!r} (missing partition.json)")
    partition = json.loads((folder / "partition.json").read_text())
    identities = {p: [int(i) for i in v["identities"]] for p, v in partition.items()}
    num_images = {p: int(v.get("num_images", 0)) for p, v in partition.items()}
    private: dict[str, dict[str, torch.Tensor]] = {}
    rows: dict[str, list[int]] = {}
    client_meta: dict[str, dict[str, Any]] = {}
    if (folder / "client_states.safetensors").is_file():
        flat = load_file(str(folder / "client_states.safetensors"))
        for key, t in flat.items():
            party, name = key.split("/", 1)
            private.setdefault(party, {})[name] = t
    if (folder / "client_states.json").is_file():
        for party, info in json.loads((folder / "client_states.json").read_text()).items():
            if info.get("row_identities") is not None:
                rows[party] = [int(i) for i in info["row_identities"]]
            client_meta[party] = dict(info.get("meta") or {})
    spec = json.loads((folder / "data_spec.json").read_text()) if (folder / "data_spec.json").is_file() else {}
    hp: dict[str, Any] = {}
    metrics = Path(run_dir) / "metrics.json"
    if metrics.is_file():
        hp = dict(json.loads(metrics.read_text()).get("method", {}).get("hyperparameters", {}))
    for name in ("rho",):
        if name in hp and not (isinstance(hp[name], (int, float)) and 0 < hp[name] <= math.pi):
            raise ValueError(f"the run's {name}={hp[name]!r} is not a margin in (0, pi]")
    return GroundTruth(identities, num_images, private, rows, spec, hp, client_meta)
