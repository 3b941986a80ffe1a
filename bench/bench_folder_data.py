"""Real-folder data path at scale: `check_folder_tree` time, an audit's data stage on the folder
(`privaudit.pipeline.data_stage` of `Scenario.from_folder(tree)` at the demo scale: check, split,
render the clients' and test images), `FolderFaceDataset` load throughput through a DataLoader
(0 and 2 workers), and peak memory, on a generated identity-per-folder tree.

    .venv/bin/python bench/bench_folder_data.py                      # 20,000 images (1,000 x 20) at 112 px
    .venv/bin/python bench/bench_folder_data.py --images 400 --json /tmp/smoke.json   # smoke run

The tree holds cheap structured images (a smooth per-identity pattern, upsampled from 7 x 7 with a
per-image perturbation), half PNG and half JPEG (quality 90), at 112 x 112, written to ``--out``
(default: a temporary folder under /tmp, deleted at the end unless ``--keep``). Each measurement
runs in a fresh Python process, so its peak RSS (``ru_maxrss``) is that measurement's own; the RSS
after importing torch is given beside it (the data path's own cost is the difference). DataLoader
workers are measured from /proc while they run (peak RSS of the largest, summed PSS), because
``RUSAGE_CHILDREN`` also holds a child that importing torch forks (reported as is). The files were just
written, so they are read from the page cache: these are warm-cache numbers. For comparison the
same tree is also loaded eagerly with `load_folder_tree` (everything decoded into one `FaceSet`).
Prints one JSON line and writes it to ``--json`` (default: bench/folder_data.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def generate_tree(root: Path, n_images: int, per_identity: int, resolution: int, seed: int = 0) -> dict[str, Any]:
    """Write ``n_images`` images, ``per_identity`` per identity folder, alternating PNG and JPEG."""
    rng = np.random.default_rng(seed)
    n_ids = -(-n_images // per_identity)
    width = len(str(n_ids - 1))
    start = time.perf_counter()
    written = 0
    for identity in range(n_ids):
        folder = root / f"id_{identity:0{width}d}"
        folder.mkdir(parents=True)
        base = rng.uniform(40, 215, size=(7, 7, 3))
        for k in range(min(per_identity, n_images - written)):
            small = np.clip(base + rng.normal(0, 20, size=base.shape) + rng.normal(0, 15), 0, 255).astype(np.uint8)
            image = Image.fromarray(small).resize((resolution, resolution), Image.Resampling.BILINEAR)
            if k % 2:
                image.save(folder / f"{k:03d}.jpg", quality=90)
            else:
                image.save(folder / f"{k:03d}.png")
            written += 1
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {
        "identities": n_ids,
        "images": written,
        "seconds": round(time.perf_counter() - start, 2),
        "mib": size / 2**20,
    }


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def _proc_kib(pid: int | str, file: str, key: str) -> int:
    """A ``key: N kB`` line of /proc/PID/FILE, in KiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _workers_memory() -> dict[str, float]:
    """Peak RSS (VmHWM) of the largest child process and the children's summed PSS, now.

    Read from /proc while the DataLoader workers are alive: ``RUSAGE_CHILDREN`` cannot isolate them,
    because importing torch already forks a child (``ldconfig -p``, via ctypes.util.find_library)
    whose peak RSS is the parent's at that moment.
    """
    me = str(os.getpid())
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # field 4 of stat: the parent pid
            children.append(stat.parent.name)
    return {
        "workers_seen": len(children),
        "worker_peak_rss_mib": round(max((_proc_kib(c, "status", "VmHWM") for c in children), default=0) / 1024, 1),
        "workers_pss_mib": round(sum(_proc_kib(c, "smaps_rollup", "Pss") for c in children) / 1024, 1),
    }


def _phase(name: str, tree: Path, resolution: int, batch_size: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    sys.path.insert(0, str(HERE.parent))
    import torch

    from federated_core.data.check import check_folder_tree
    from federated_core.data.folders import load_folder_tree
    from federated_core.data.lazy import FolderFaceDataset

    torch.set_num_threads(1)
    baseline_mib = _proc_kib("self", "status", "VmRSS") / 1024  # interpreter + torch, before any data
    start = time.perf_counter()
    out: dict[str, Any] = {}
    if name == "check":
        check = check_folder_tree(tree, min_images_per_identity=2)
        out = {"images": check.images, "identities": check.identities, "problems": len(check.problems())}
    elif name == "audit":
        from privaudit.pipeline import data_stage
        from privaudit.scenario import Scenario

        split = {"public": 0.3, "clients": 0.08, "test": 0.1}  # 1,000 identities: 300 / 80 / 100, the demo's
        scenario = Scenario.from_folder(tree, scale="demo", split=split)
        scenario = dataclasses.replace(scenario, out=str(tree.parent / "audit_out"))
        data, pcfg, _ = data_stage(scenario, 4, progress=False)
        counts = data.data_spec["split"]["counts"]
        clients = sum(len(c) for c in data.clients)
        out = {
            "images": data.data_spec["source_record"]["images"],
            "split": counts,
            "rendered_images": clients + len(data.test),
            "resolution": scenario.data.resolution,
        }
    elif name == "eager":
        faces = load_folder_tree(tree, resolution)
        out = {"images": len(faces), "faceset_mib": faces.images.numel() / 2**20}
    else:
        workers = int(name.split(":")[1])
        ds = FolderFaceDataset.from_tree(tree, resolution)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
        n, checksum, batches = 0, 0, iter(loader)
        for _ in range(len(loader)):  # not to StopIteration, which shuts the workers down
            images, labels = next(batches)
            n += int(labels.shape[0])
            checksum += int(images[:, :, 0, 0].sum())
        out = {"images": n, "workers": workers, "batch_size": batch_size, "pixel_checksum": checksum}
        if workers:
            out.update(_workers_memory())
        del batches
    seconds = time.perf_counter() - start
    out.update(
        seconds=round(seconds, 2),
        images_per_s=round(out["images"] / seconds, 1),
        rss_after_imports_mib=round(baseline_mib, 1),
        peak_rss_mib=round(_peak_mib(resource.RUSAGE_SELF), 1),
        rusage_children_peak_mib=round(_peak_mib(resource.RUSAGE_CHILDREN), 1),
    )
    return out


def _run_phase(name: str, tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", name, "--tree", str(tree)]
    cmd += ["--resolution", str(args.resolution), "--batch-size", str(args.batch_size)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name}: {result}", file=sys.stderr)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20_000, help="images to generate (default 20,000)")
    ap.add_argument("--per-identity", type=int, default=20, help="images per identity (default 20)")
    ap.add_argument("--resolution", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None, help="folder for the tree (default: a temp dir under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated tree")
    ap.add_argument("--json", type=Path, default=HERE / "folder_data.json", help="where to write the result")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    ap.add_argument("--tree", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args.tree, args.resolution, args.batch_size)))
        return
    base = args.out or Path(tempfile.mkdtemp(prefix="bench_folder_data_", dir="/tmp"))
    tree = base / "tree"
    if tree.exists():
        raise SystemExit(f"{tree} exists: give an empty --out")
    try:
        generated = generate_tree(tree, args.images, args.per_identity, args.resolution)
        print(f"generated: {generated}", file=sys.stderr)
        phases = {name: _run_phase(name, tree, args) for name in ("check", "audit", "load:0", "load:2", "eager")}
    finally:
        if not args.keep:
            shutil.rmtree(tree if args.out else base, ignore_errors=True)
    result = {
        "bench": "folder_data",
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
        },
        "tree": {**generated, "resolution": args.resolution, "per_identity": args.per_identity, "formats": "PNG+JPEG"},
        "check": phases["check"],
        "audit_data_stage": phases["audit"],
        "load_workers_0": phases["load:0"],
        "load_workers_2": phases["load:2"],
        "eager_load_folder_tree": phases["eager"],
        "note": "warm page cache (files just written); each measurement in a fresh process",
    }
    line = json.dumps(result)
    print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
