"""`privaudit audit` on your own face folder (issue #17): an identity-per-folder tree of JPEG and PNG
crops of mixed sizes (some grayscale) written here, a scenario file with ``[data] source = "folder"``,
an LFW-style pairs file and an insightface ``.bin``; the report's utility table carries both protocols
under their own names, φ0 is trained on the folder's public identities, and bad folders exit 2 before
anything trains."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from federated_core.data import SyntheticFaces
from privaudit.cli import main

IDENTITIES, IMAGES = 64, 7
SIZES = (32, 40, 48)


def _name(i: int) -> str:
    return f"Person_{i:03d}"


def _write_tree(root: Path) -> None:
    """Image k (1-based) of identity i: .jpg when k is odd else .png, 32/40/48 px, the first image
    of every seventh identity grayscale."""
    faces = SyntheticFaces(seed=5, resolution=48).make_set(torch.arange(IDENTITIES), IMAGES)
    for n in range(len(faces)):
        i, k = int(faces.labels[n]), n % IMAGES + 1
        image = Image.fromarray(faces.images[n].permute(1, 2, 0).numpy())
        size = SIZES[k % len(SIZES)]
        image = image.resize((size, size), Image.BILINEAR)
        if k == 1 and i % 7 == 0:
            image = image.convert("L")
        folder = root / _name(i)
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{_name(i)}_{k:04d}.{'jpg' if k % 2 else 'png'}")


def _write_pairs(path: Path) -> None:
    """LFW layout: header '2 4', then per fold 4 genuine and 4 impostor pairs of .jpg images."""
    lines = ["2 4"]
    for fold in range(2):
        base = 40 + 8 * fold
        lines += [f"{_name(base + j)} 1 3" for j in range(4)]
        lines += [f"{_name(base + j)} 5 {_name(base + j + 4)} 7" for j in range(4)]
    path.write_text("\n".join(lines) + "\n")


def _write_bin(path: Path, root: Path) -> None:
    """20 pairs (images 2p, 2p + 1), genuine and impostor alternating, PNG-encoded."""
    bins, issame = [], []
    for p in range(20):
        a, same = 44 + p % 16, p % 2 == 0
        b = a if same else 44 + (p + 5) % 16
        for person, k in ((a, 3), (b, 5)):
            buffer = io.BytesIO()
            Image.open(root / _name(person) / f"{_name(person)}_{k:04d}.jpg").convert("RGB").save(buffer, "PNG")
            bins.append(buffer.getvalue())
        issame.append(same)
    path.write_bytes(pickle.dumps((bins, issame), protocol=4))


SCENARIO = """
scale = "tiny"
name = "own folder"
[data]
source = "folder"
path = "{path}"
resolution = 32
min_images_per_identity = 7
pairs = "pairs.txt"
bin = "{bin}"
[data.split]
public = 24
clients = 18
test = 12
[[methods]]
name = "fedpe"
[[methods]]
name = "privacyface"
"""


@pytest.fixture(scope="module")
def folder_audit(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder_audit")
    root = base / "faces"
    _write_tree(root)
    _write_pairs(root / "pairs.txt")
    _write_bin(base / "check.bin", root)
    scenario = base / "scenario.toml"
    scenario.write_text(SCENARIO.format(path=root.as_posix(), bin=(base / "check.bin").as_posix()))
    out = base / "out"
    code = main(["audit", str(scenario), "--out", str(out), "--quiet"])
    return code, out, root


def test_the_audit_runs_on_the_folder_and_reports_both_protocols(folder_audit):
    code, out, root = folder_audit
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for method in results["methods"]:
        utility = method["utility"]
        for key in ("pairs/accuracy", "pairs/auroc", "check/accuracy", "check/auroc"):
            assert 0.0 <= utility[key] <= 1.0, (method["name"], key)
        assert "pairs/tar@far=0.001" not in utility  # 8 impostor pairs cannot support FAR 1e-3
        protocols = method["utility_intervals"]["protocols"]
        assert protocols["unit"] == "fold of the protocol file"
        lo, hi = protocols["intervals"]["pairs/accuracy"]  # 2 folds: a wide t interval around the mean
        assert lo <= utility["pairs/accuracy"] <= hi and "pairs/auroc" not in protocols["intervals"]
    record = results["analyses"]["extra"]["data"]
    assert record["identities"] == {"folders": IDENTITIES, "usable": IDENTITIES}
    counts = record["split"]["counts"]
    assert (counts["public"], counts["clients"], counts["test"]) == (24, 18, 12)
    assert counts["distractors"] == IDENTITIES - 54  # the rest (fewer than attacks.gallery_distractors = 30)
    assert record["converted_to_rgb"] == {"L": len(range(0, IDENTITIES, 7))}
    html = (out / "report.html").read_text()
    assert "pairs/accuracy" in html and "check/accuracy" in html
    # every attack family ran on the folder (the tiny preset's attacks), with the folder's roles stated
    families = {(m["name"], a["attack"]) for m in results["methods"] for a in m["attacks"]}
    assert {("privacyface", f) for f in ("knn", "inversion", "gradient", "membership")} <= families
    assert ("fedpe", "gradient") in families
    # the pairs file names Person_040..055: those the split gave to φ0 or the clients are flagged
    spec = json.loads((out / "runs" / "fedpe" / "ground_truth" / "data_spec.json").read_text())
    trained = set(spec["split"]["identities"]["public"]) | set(spec["split"]["identities"]["clients"])
    overlap = [i for i in range(40, 56) if i in trained]  # folder ids are name order: Person_040 is id 40
    flags = [f for f in results["flags"] if f.startswith("protocol pairs:")]
    assert overlap and len(flags) == 1  # 42 of the 64 identities train: the seeded split puts some of these there
    assert flags[0].startswith(f"protocol pairs: {len(overlap)} of its 16 identities are training identities")


def test_phi0_was_trained_on_the_folders_public_identities(folder_audit):
    from federated_core.models import load_backbone

    code, out, root = folder_audit
    assert code == 0
    phi0 = [p for p in (out / "cache").iterdir() if p.name.startswith("phi0-")]
    assert len(phi0) == 1
    _, saved = load_backbone(phi0[0] / "backbone.safetensors")
    spec = json.loads((out / "runs" / "fedpe" / "ground_truth" / "data_spec.json").read_text())
    split = spec["split"]["identities"]
    assert saved["pretrain"]["data"]["source"] == "folder" and saved["pretrain"]["data"]["root"] == str(root)
    assert saved["pretrain"]["train_identity_list"] == sorted(split["public"])  # φ0 saw the public part only
    assert saved["pretrain"]["eval_identity_list"] == sorted(split["test"])
    clients = {i for c in spec["clients"].values() for i in c["identities"]}
    assert clients == set(split["clients"]) and not clients & set(split["public"])
    assert spec["heldout"] == {"per_identity": 3, "start_index": 4}  # tiny: 4 training + 3 held-out images


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("empty", "no identity folder"),
        ("one", "1 of the 1 identity folder"),
        ("not_image", "notes.jpg"),
        ("truncated", "Person_003_0001.jpg"),
        ("missing_pair_image", "Person_041_0009.jpg"),
        ("link_loop", "Person_loop"),
    ],
)
def test_bad_folders_exit_2_before_anything_trains(tmp_path, capsys, damage, needle):
    root = tmp_path / "faces"
    if damage == "empty":
        root.mkdir()
    elif damage == "one":
        (root / _name(0)).mkdir(parents=True)
        for k in range(IMAGES):
            Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(root / _name(0) / f"{k}.png")
    else:
        _write_tree(root)
    _write_pairs(tmp_path / "pairs.txt")
    if damage == "not_image":
        (root / _name(2) / "notes.jpg").write_text("not an image")
    elif damage == "truncated":
        path = root / _name(3) / f"{_name(3)}_0001.jpg"
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "link_loop":
        (root / "Person_loop").symlink_to(root, target_is_directory=True)
    elif damage == "missing_pair_image":
        text = (tmp_path / "pairs.txt").read_text().replace(f"{_name(41)} 1 3", f"{_name(41)} 1 9")
        (tmp_path / "pairs.txt").write_text(text)
    scenario = tmp_path / "scenario.toml"
    body = SCENARIO.format(path=root.as_posix(), bin="unused").replace('bin = "unused"\n', "")
    body = body.replace('pairs = "pairs.txt"', f'pairs = "{(tmp_path / "pairs.txt").as_posix()}"')
    scenario.write_text(body)
    out = tmp_path / "out"
    assert main(["audit", str(scenario), "--out", str(out), "--quiet"]) == 2
    assert needle in capsys.readouterr().err
    assert not (out / "runs").exists() and not any((out / "cache").glob("phi0-*"))


def test_scenario_from_folder_and_refused_data_keys(tmp_path):
    from privaudit.config_io import ConfigError
    from privaudit.scenario import Scenario

    s = Scenario.from_folder(tmp_path, scale="tiny", resolution=64, split={"public": 0.3, "test": 10}, pairs="p.txt")
    assert (s.data.source, s.data.path, s.data.resolution, s.data.pairs) == ("folder", str(tmp_path), 64, "p.txt")
    assert (s.data.split.public, s.data.split.test, s.data.split.clients) == (0.3, 10, None)
    assert s.federation == Scenario.tiny().federation  # the preset's other sections unchanged
    with pytest.raises(
        ConfigError, match=r"data.split.public must be an integer >= 0 or a fraction in \(0, 1\), got 1.5"
    ):
        Scenario.from_folder(tmp_path, split={"public": 1.5})
    with pytest.raises(ConfigError, match="data.source = 'folder' needs data.path"):
        Scenario.from_dict({"data": {"source": "folder"}})
    with pytest.raises(ConfigError, match="data.pairs is only used with data.source = 'folder'"):
        Scenario.from_dict({"data": {"pairs": "p.txt"}})


def test_aligned_copy_is_cached_checked_and_lists_photos_without_a_face(tmp_path):
    """`align = true`: the aligned tree is made once, reused while its checksums hold, remade when a
    crop is damaged; photos without a face are listed (a fixed-landmark detector stands in for MTCNN)."""
    from federated_core.data.align import FaceDetection, arcface_template
    from privaudit.folder_data import aligned_tree

    root = tmp_path / "raw"
    for person in ("ann", "bob"):
        (root / person).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((120, 120, 3), 40 * k + (person == "bob") * 20, np.uint8)).save(
                root / person / f"{k}.png"
            )
    calls = []

    def detector(image: Image.Image) -> FaceDetection | None:
        calls.append(image.size)
        if int(np.asarray(image)[0, 0, 0]) == 80:  # photo 2 of ann: no face
            return None
        return FaceDetection(box=np.array([0, 0, 120, 120.0]), probability=1.0, landmarks=arcface_template(112))

    dst, record = aligned_tree(root, tmp_path / "cache", 112, False, detector)
    assert record["no_face"] == ["ann/2.png"] and record["aligned"] == 5 and len(calls) == 6
    assert sorted(p.name for p in (dst / "bob").iterdir()) == ["0.png", "1.png", "2.png"]
    again, record2 = aligned_tree(root, tmp_path / "cache", 112, False, detector)
    assert again == dst and record2 == record and len(calls) == 6  # reused: no detection ran
    (dst / "bob" / "1.png").write_bytes(b"damaged")
    aligned_tree(root, tmp_path / "cache", 112, False, detector)
    assert len(calls) == 12 and Image.open(dst / "bob" / "1.png").size == (112, 112)  # remade
