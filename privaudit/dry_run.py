"""`privaudit audit --dry-run`: what an audit would do, computed without writing anything.

It prints the merged scenario (every default filled in), runs the pre-flight checks that need no
data (method parameters and DP-SGD compatibility, your backbone weights, the ``--force`` stage
names), says for each stage whether the output folder's manifest records it (it is then reused if
its key and checksums still match when the audit runs; a dry run does not hash the data to tell)
or whether it will run, and estimates time and disk:

* time: seconds per method-seed measured on this project's 2-core CPU machine (`SECONDS_PER_METHOD`,
  from the README's timings), times methods and seeds; no estimate where none was measured;
* disk: the wire log dominates — every round each participating client uploads a backbone and
  the server's broadcast is stored once (parameter count × 4 bytes each, from building the
  backbone), plus checkpoints and states (a few backbones per method). Measured against real
  folders: tiny 9.6 MiB estimated vs 9.8 MiB written per method, bench 658 vs 657 MiB.

The δ check needs the rendered data and runs when the audit starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from privaudit.cache import MANIFEST_NAME, STAGES
from privaudit.scenario import Scenario

# measured seconds per method and seed (2-core CPU, 2026-12-02): tiny audit 45 s and demo audit
# 283 s for 10 methods (README "Timing"); bench: seed 0 of its 13 variants took ~17 min with another
# audit sharing the cores (~80 s per method)
SECONDS_PER_METHOD = {"tiny": 4.5, "demo": 28.0, "bench": 80.0}
BYTES_PER_FLOAT = 4


@dataclass
class DryRunPlan:
    """What `plan_audit` found: the scenario, per stage and method what is recorded, estimates."""

    scenario: dict[str, Any]
    stages: list[tuple[str, str]] = field(default_factory=list)
    seconds: float | None = None
    disk_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The plan for a terminal."""
        lines = ["privaudit audit --dry-run: nothing was written", "", "scenario (every default filled in):"]
        lines += ["  " + line for line in json.dumps(self.scenario, indent=2, default=str).splitlines()]
        lines += ["", "stages:"] + [f"  {name}: {status}" for name, status in self.stages]
        when = "no measured reference for this scale" if self.seconds is None else f"about {self.seconds / 60:.0f} min"
        lines += ["", f"estimated time: {when} (2-core CPU reference)"]
        lines += [f"estimated disk: about {self.disk_bytes / 2**20:.0f} MiB in the output folder"]
        lines += [""] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _recorded(scenario: Scenario) -> dict[str, set[str]]:
    """stage -> relative paths the output folder's manifest records (read only)."""
    path = scenario.out_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    entries = document.get("entries", {}) if isinstance(document, dict) else {}
    out: dict[str, set[str]] = {}
    for rel, entry in entries.items() if isinstance(entries, dict) else []:
        if isinstance(entry, dict) and entry.get("stage") in STAGES:
            out.setdefault(entry["stage"], set()).add(str(rel))
    return out


def _stage_status(
    recorded: dict[str, set[str]], stage: str, prefix: str, force: tuple[str, ...], use_cache: bool
) -> str:
    if not use_cache or stage in force:
        return "will run (forced)"
    if any(p.startswith(prefix) for p in recorded.get(stage, ())):
        return "recorded in the manifest: reused if its key and checksums still match"
    return "will run"


def run_disk_bytes(backbone: str, embedding_dim: int, resolution: int, rounds: int, participants: int) -> int:
    """Bytes one federated run writes, dominated by its wire log: every round each participant's
    upload and one stored broadcast, plus checkpoints and states (4 backbones); the backbone is
    built once on the meta device to count its parameters."""
    import torch

    from federated_core.models import build_backbone

    with torch.device("meta"):
        model = build_backbone(backbone, embedding_dim=embedding_dim, resolution=resolution)
    backbone_bytes = sum(p.numel() for p in model.parameters()) * BYTES_PER_FLOAT
    return backbone_bytes * (rounds * (participants + 1) + 4)


def _backbone_of(scenario: Scenario) -> tuple[str, int]:
    """The architecture and embedding size the federation trains (your weights' where given)."""
    name, dim = scenario.pretrain.backbone, scenario.pretrain.embedding_dim
    if scenario.model.weights is not None and scenario.model.backbone is not None:
        from federated_core.models.weights import resolve_backbone_name

        name, dim = resolve_backbone_name(scenario.model.backbone), scenario.model.embedding_dim or dim
    return name, dim


def plan_audit(scenario: Scenario, force: tuple[str, ...] = (), use_cache: bool = True) -> DryRunPlan:
    """The dry run of ``scenario`` (module docstring). Raises what the audit's pre-flight would."""
    from privaudit.pipeline import check_method_params, imported_phi0_info, results_scenario

    unknown = sorted(set(force) - set(STAGES))
    if unknown:
        raise ValueError(f"--force: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    check_method_params(scenario)
    imported_phi0_info(scenario)
    seeds = scenario.seed_list()
    recorded = _recorded(scenario)
    plan = DryRunPlan({**results_scenario(scenario), "out": scenario.out})
    multi = len(seeds) > 1
    for s in seeds:
        base = f"seeds/seed-{s}/" if multi else ""
        phi0 = (
            "imported from model.weights"
            if scenario.model.weights
            else _stage_status(recorded, "phi0", base + "cache/phi0-", force, use_cache)
        )
        plan.stages.append((f"seed {s}: φ0", phi0))
        for spec in scenario.methods:
            status = _stage_status(recorded, "train", f"{base}runs/{spec.key}/", force, use_cache)
            plan.stages.append((f"seed {s}: {spec.key} (train, utility, ledger, audits, attacks)", status))
    per_method = SECONDS_PER_METHOD.get(scenario.scale)
    if per_method is not None:
        plan.seconds = per_method * len(scenario.methods) * len(seeds)
    f = scenario.federation
    participants = max(1, math.ceil(f.participation * f.num_clients))
    per_run = run_disk_bytes(*_backbone_of(scenario), scenario.data.resolution, f.rounds, participants)
    plan.disk_bytes = per_run * len(scenario.methods) * len(seeds)
    plan.notes.append("δ is checked against the privacy units of the rendered data when the audit starts")
    if scenario.data.source == "folder":
        plan.notes.append(
            f"the face folder {scenario.data.path} is read, checked and split when the audit starts, before "
            f"anything trains; `privaudit data check {scenario.data.path}` checks it now"
            + (" (align = true: MTCNN aligns it first, into the cache folder)" if scenario.data.align else "")
        )
    plan.notes.append(f"one run writes ≈ {per_run / 2**20:.0f} MiB ({f.rounds} rounds × {participants} uploads)")
    return plan
