"""A folder audit's data (issue #17): the scenario's ``[data] source = "folder"`` turned into the same
`FederatedData` and φ0 config the synthetic audit builds, before anything trains.

1. `open_folder`: the tree at ``data.path`` (aligned first with MTCNN when ``data.align``; the
   aligned copy is cached under the run's cache folder, keyed by the source tree's paths and sizes
   and checked by SHA-256 on reuse, the photos without a face listed) opened as a
   `FolderFaceSource`: every image decoded once, unreadable files named (or skipped and counted),
   small identities excluded with the reason.
2. `split_for`: its identities split into disjoint public / clients / test / distractors parts
   (`SplitSpec`; counts or fractions; seeded); the rule that gave each count is recorded.
3. `folder_data`: clients' training images, held-out images for the personalised protocols, test
   identities (`folder_federated_data`), and φ0's `PretrainConfig` on the public identities,
   evaluated on the test identities.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from privaudit.scenario import Scenario


def _tree_key(root: Path, output_size: int) -> str:
    """The align cache key: the tree's relative image paths and sizes (`tree_signature` without
    modification times) and the crop size."""
    from federated_core.data.folder_source import tree_signature

    return hashlib.sha256(f"aligned v1 {output_size} {tree_signature(root, mtimes=False)}".encode()).hexdigest()


def aligned_tree(
    root: Path, cache_dir: Path, output_size: int, progress: bool, detector: Any = None
) -> tuple[Path, dict[str, Any]]:
    """``root``'s photos detected and aligned (`federated_core.data.align.align_folder_tree`; MTCNN
    unless ``detector`` is given) into ``cache_dir/aligned-<key>``, reused when its manifest's
    checksums all hold; returns the aligned tree and the record (photos without a face, identities
    left without any)."""
    from federated_core.data.align import align_folder_tree
    from federated_core.integrity import verify_checksums, write_checksums

    key = _tree_key(root, output_size)
    dst = cache_dir / f"aligned-{key[:16]}"
    manifest = dst / "aligned.json"
    if manifest.is_file():
        record = json.loads(manifest.read_text())
        if not verify_checksums(dst, record["files"] + ["aligned.json"]):
            return dst, record["record"]
    if dst.exists():
        import shutil

        shutil.rmtree(dst)  # a damaged or partial copy: aligned again
    report = align_folder_tree(root, dst, output_size=output_size, detector=detector, progress=progress)
    record = {
        "source": str(root),
        "output_size": output_size,
        "aligned": len(report.written),
        "no_face": [p.relative_to(root).as_posix() for p in report.no_face],
        "identities_without_faces": report.identities_without_faces,
    }
    files = sorted(p.relative_to(dst).as_posix() for p in report.written) + ["no_face.txt"]
    manifest.write_text(json.dumps({"files": files, "record": record}, indent=1))
    write_checksums(dst, files + ["aligned.json"])
    return dst, record


def open_folder(scenario: Scenario, cache_dir: Path, progress: bool = False) -> tuple[Any, dict[str, Any] | None]:
    """The scenario's `FolderFaceSource` (checked) and the alignment record (None without ``align``).

    Raises:
        FileNotFoundError: ``data.path`` is not a folder.
        ValueError: as `FolderFaceSource` (unreadable files, fewer than two usable identities, ...);
            symlink loops, broken links or links leaving the folder (named), unless
            ``data.skip_unreadable`` leaves them out (listed in the results).
    """
    from federated_core.data.folder_source import FolderFaceSource, remember

    d = scenario.data
    assert d.path is not None  # DataSpec refuses a folder source without a path
    root = Path(d.path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.path {str(root)!r} is not a folder (expected one sub-folder per identity)")
    alignment = None
    if d.align:
        root, alignment = aligned_tree(root, cache_dir, 112, progress)
    source = FolderFaceSource(
        root,
        resolution=d.resolution,
        min_images_per_identity=d.min_images_per_identity,
        max_identities=d.max_identities,
        seed=scenario.seed,
        skip_unreadable=d.skip_unreadable,
        progress=progress,
    )
    links = source.check.links
    if links.count and not d.skip_unreadable:
        raise ValueError(
            f"data.path {str(root)!r} holds {links.count} symlink problem(s) (loops, broken links, links leaving "
            f"the folder): {'; '.join(f'{n}: {r}' for n, r in links.items[:5])}; fix them, or set "
            "data.skip_unreadable = true to leave them out (listed in the results)"
        )
    return remember(source), alignment  # φ0, the held-out images and the attacks reuse it


def split_for(scenario: Scenario, source: Any) -> Any:
    """The scenario's identity split of ``source`` (`split_folder_identities`), with the rule behind
    each count in ``record["rules"]``; ValueError naming the part that does not fit."""
    from federated_core.data.folder_source import split_folder_identities

    s, f = scenario.data.split, scenario.federation
    clients = f.num_clients if f.partition == "one-identity" else f.num_clients * f.identities_per_client
    asked: dict[str, Any] = {
        "public": (s.public, scenario.pretrain.identities, "pretrain.identities"),
        "clients": (s.clients, clients, "federation.num_clients x federation.identities_per_client"),
        "test": (s.test, f.test_identities, "federation.test_identities"),
    }
    counts = {k: given if given is not None else default for k, (given, default, _) in asked.items()}
    rules = {k: "data.split" if given is not None else rule for k, (given, _, rule) in asked.items()}
    if s.distractors is not None:
        distractors, rules["distractors"] = s.distractors, "data.split"
    else:
        left = split_folder_identities(source, **counts, distractors=0, seed=scenario.seed).record["unused_identities"]
        distractors = min(scenario.attacks.gallery_distractors, left)
        rules["distractors"] = f"the {left} identities left, at most attacks.gallery_distractors"
    split = split_folder_identities(source, **counts, distractors=distractors, seed=scenario.seed)
    split.record["rules"] = rules
    return split


def folder_data(scenario: Scenario, source: Any, split: Any, heldout_per: int, pcfg: Any) -> tuple[Any, Any]:
    """``(FederatedData, PretrainConfig)`` of a folder audit: `folder_federated_data` with the
    scenario's federation, and ``pcfg`` (the synthetic audit's φ0 recipe) on the folder, trained on
    the public identities and evaluated on the test identities."""
    import dataclasses

    from federated_core.data.folder_source import folder_federated_data
    from federated_core.pretrain import FolderSpec

    f = scenario.federation
    data = folder_federated_data(
        source,
        split,
        num_clients=f.num_clients,
        partition=f.partition,
        images_per_identity=f.images_per_identity,
        test_images_per_identity=f.test_images_per_identity,
        heldout_per_identity=heldout_per,
        seed=scenario.seed,
    )
    public = split["public"].tolist()
    if len(public) < 2:
        raise ValueError(
            f"data.split.public gives {len(public)} public identities; φ0's pre-training (or, with model.weights, "
            "the attacker's auxiliary data) needs at least 2"
        )
    short = [i for i in public if source.images_available(i) < pcfg.train_images_per_identity]
    if short:
        raise ValueError(
            f"{len(short)} public identities have fewer than pretrain.images_per_identity = "
            f"{pcfg.train_images_per_identity} images (e.g. {source.names[short[0]]!r}: "
            f"{source.images_available(short[0])}); lower pretrain.images_per_identity or raise "
            "data.min_images_per_identity"
        )
    data.data_spec["public"] = {"identities": public, "note": "the folder's public identities (φ0, attacker)"}
    data.data_spec["source_record"] = source.record()
    test = split["test"].tolist()
    per = f.test_images_per_identity
    genuine, images = len(test) * per * (per - 1) // 2, len(test) * per
    folder_pcfg = dataclasses.replace(
        pcfg,
        data=FolderSpec.of(source),
        train_identity_list=tuple(public),
        eval_identity_list=tuple(test),
        eval_images_per_identity=per,
        eval_genuine_pairs=min(1500, genuine),
        eval_impostor_pairs=min(3000, images * (images - 1) // 2 - genuine),
    )
    return data, folder_pcfg
