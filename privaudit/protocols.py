"""Verification protocols of your own (issue #17): an LFW-style ``pairs.txt`` whose image paths are
relative to the face folder, or an insightface verification ``.bin``, scored on each method's final
global model and shown in the utility table under the protocol's own name (``<name>/accuracy``,
``<name>/tar@far=<f>``), beside the metrics of the audit's own test identities.

The 1:1 protocol is `federated_core.evaluation.report.verification_report`: cosine scores, the
LFW accuracy over the protocol's folds (consecutive blocks, as the files order them), AUROC, and
TAR at the FARs its impostor pairs support (an unsupported FAR gives no number).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privaudit.scenario import Scenario

PROTOCOL_FARS = (1e-3, 1e-2)


def protocol_files(scenario: Scenario) -> dict[str, tuple[str, Path]]:
    """Protocol name -> ``(kind, file)``: ``data.pairs`` (a path as given, else relative to ``data.path``)
    and ``data.bin``, named by their file stem. FileNotFoundError naming a missing file."""
    d = scenario.data
    out: dict[str, tuple[str, Path]] = {}
    for kind, given in (("pairs", d.pairs), ("bin", d.bin)):
        if given is None:
            continue
        path = Path(given).expanduser()
        if not path.is_file() and d.path is not None and (Path(d.path) / given).is_file():
            path = Path(d.path) / given
        if not path.is_file():
            raise FileNotFoundError(f"data.{kind} {given!r} is not a file (looked as given and under data.path)")
        name = path.stem if path.stem not in out else f"{path.stem}-{kind}"
        out[name] = (kind, path)
    return out


def load_protocols(scenario: Scenario, progress: bool = False) -> dict[str, Any]:
    """Protocol name -> `federated_core.data.PairSet` at the scenario's resolution (every image
    decoded now, so a pairs file naming a missing image stops the audit before anything trains)."""
    from federated_core.data.pairs import load_insightface_bin, load_lfw_pairs

    out = {}
    for name, (kind, path) in protocol_files(scenario).items():
        if kind == "pairs":
            assert scenario.data.path is not None  # DataSpec allows pairs only with a folder
            out[name] = load_lfw_pairs(path, scenario.data.path, scenario.data.resolution, progress=progress)
        else:
            out[name] = load_insightface_bin(path, scenario.data.resolution, progress=progress)
        if len(out[name]) == 0:
            raise ValueError(f"data.{kind} {str(path)!r} holds no pairs")
    return out


def protocol_utility(
    backbone: Any, protocols: dict[str, Any], device: str = "cpu"
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Utility of ``backbone`` on every protocol: ``<name>/accuracy``, ``<name>/auroc`` and
    ``<name>/tar@far=<f>`` for each supported FAR of `PROTOCOL_FARS`; and the 95% t interval of
    each accuracy over the protocol's folds (LFW's folds hold disjoint people: the independent units
    the file defines; AUROC and TAR get no interval)."""
    import torch
    from scipy import stats

    from federated_core.evaluation.report import verification_report
    from federated_core.models import embed

    out: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    for name, pairs in protocols.items():
        n = len(pairs)
        emb = embed(backbone, torch.cat([pairs.first, pairs.second]), device=device)
        index = torch.arange(n)
        report = verification_report(
            emb, None, pairs=(index, index + n, pairs.is_same), fars=PROTOCOL_FARS, folds=max(2, pairs.num_folds)
        )
        out[f"{name}/accuracy"] = float(report["accuracy"])
        folds = max(2, pairs.num_folds)
        half = stats.t.ppf(0.975, folds - 1) * float(report["accuracy_std"]) / (folds - 1) ** 0.5
        intervals[f"{name}/accuracy"] = [float(report["accuracy"]) - half, float(report["accuracy"]) + half]
        out[f"{name}/auroc"] = float(report["auroc"])
        for far, tar in report["tar_at_far"].items():
            out[f"{name}/tar@far={float(far):g}"] = float(tar)
    return out, intervals


def training_overlap_flags(scenario: Scenario, data: Any) -> list[str]:
    """One flag per pairs protocol naming identities this audit trained on (φ0's public part or the
    clients'): such a protocol overstates accuracy on unseen faces. A ``.bin`` names no identities
    and cannot be checked (said in its flag-free note by the README)."""
    from federated_core.data.folders import list_folder_tree
    from federated_core.data.pairs import read_lfw_pairs

    spec = data.data_spec
    if spec.get("source") != "folder" or scenario.data.pairs is None:
        return []
    ids_of = {name: i for i, name in enumerate(list_folder_tree(spec["root"], spec["folder"]["extensions"]))}
    split = spec["split"]["identities"]
    trained = set(split["public"]) | set(split["clients"])
    flags = []
    for name, (kind, path) in protocol_files(scenario).items():
        if kind != "pairs":
            continue
        pairs = read_lfw_pairs(path)
        people = sorted({p.name1 for p in pairs} | {p.name2 for p in pairs})
        overlap = [n for n in people if ids_of.get(n) in trained]
        if overlap:
            flags.append(
                f"protocol {name}: {len(overlap)} of its {len(people)} identities are training identities of this "
                f"audit (φ0's public part or the clients'), e.g. {', '.join(overlap[:3])}: its numbers overstate "
                "accuracy on unseen faces"
            )
    return flags
