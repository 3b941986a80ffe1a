"""`run_attacks` on a run trained on an identity-per-folder tree (issue #17).

The tree is written here (PNG and JPEG, mixed sizes, a grayscale identity); the split, the
federated data and a 2-round FedPE run are built with the real folder source and engine. What the
attacks may use is checked against what this file wrote and the split recorded (never against
the code under test): the gallery's distractors are the split's distractor identities, no image a
client trained on or held out is rendered as a gallery, oracle or query image, and every identity
with too few images is counted in the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attacks.run import AttackRunConfig, run_attacks

R = 16  # rendered resolution
PER, HELDOUT = 3, 1  # training and held-out images per client identity
COUNTS = (9, 5, 7, 6)  # images per identity, cycled over the folders
GALLERY, ORACLE = 2, 2  # asked per member identity


def write_tree(root: Path, identities: int = 26) -> dict[str, int]:
    """One folder per identity (``p00`` ...): a smooth colour pattern per identity, each image that
    pattern plus noise, JPEG and PNG alternating, sizes 16..28 px, ``p03`` grayscale. Returns the
    number of images written per folder."""
    rng = np.random.default_rng(0)
    written = {}
    for k in range(identities):
        name = f"p{k:02d}"
        (root / name).mkdir(parents=True)
        base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        count = COUNTS[k % len(COUNTS)]
        for j in range(count):
            size = (16, 20, 24, 28)[j % 4]
            img = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR), dtype=np.int16)
            img = np.clip(img + rng.integers(-12, 13, size=img.shape), 0, 255).astype(np.uint8)
            image = Image.fromarray(img).convert("L" if k == 3 else "RGB")
            suffix, fmt = (".jpg", "JPEG") if j % 2 == 0 else (".png", "PNG")
            image.save(root / name / f"img{j:02d}{suffix}", format=fmt)
        written[name] = count
    return written


class RecordingSource:
    """The folder source's ``render``, recording every ``(identities, per_identity, start_index)`` asked."""

    def __init__(self, source) -> None:
        self.source = source
        self.calls: list[tuple[list[int], int, int]] = []

    def __call__(self, ids, per_identity: int, start_index: int):
        self.calls.append((torch.as_tensor(ids).tolist(), int(per_identity), int(start_index)))
        return self.source.render(ids, per_identity, start_index)


def _folder_run(root: Path, run: Path):
    """Tree, source, split, federated data and a 2-round FedPE run with every client's class
    centers uploaded in the last round (as a method sharing W would), plus φ0's recipe on the
    folder in ``run/config.json`` (what the evaluator derives from)."""
    from attacks.views import load_ground_truth
    from federated_core.data.folder_source import FolderFaceSource, folder_federated_data, split_folder_identities
    from federated_core.engine import FederatedConfig, run_federated
    from federated_core.engine.messages import make_message
    from federated_core.engine.wire import WireLog
    from federated_core.pretrain import FolderSpec, PretrainConfig

    counts = write_tree(root)
    source = FolderFaceSource(root, R)
    split = split_folder_identities(source, public=8, clients=6, test=2, distractors=6, seed=0)
    data = folder_federated_data(source, split, 3, "balanced", PER, 2, HELDOUT, seed=0)
    cfg = FederatedConfig(method="fedpe", rounds=2, batch_size=4, embedding_dim=16, resolution=R, progress=False,
                          eval_initial=False, eval_every=0, seed=1)  # fmt: skip
    run_federated(cfg, data.clients, out_dir=run, data_spec=data.data_spec)
    gt = load_ground_truth(run)
    log = WireLog.load(run)
    for party in sorted(gt.private):
        centers = {"centers": gt.private[party]["centers"]}
        log.append(make_message("class_centers", party, ("server",), 2, "train", centers))
    log.save(run)
    phi0 = PretrainConfig(data=FolderSpec.of(source), train_identity_list=tuple(split["public"].tolist()),
                          eval_identity_list=tuple(split["test"].tolist()), train_images_per_identity=PER,
                          eval_images_per_identity=2, eval_genuine_pairs=10, eval_impostor_pairs=10, backbone="tiny",
                          embedding_dim=16, epochs=1, batch_size=16)  # fmt: skip
    (run / "config.json").write_text(json.dumps({"pretrain": phi0.to_dict()}))
    return source, split, counts


@pytest.fixture(scope="module")
def folder_attacks(tmp_path_factory):
    """The folder run attacked by the server with every attack family (a tiny budget)."""
    base = tmp_path_factory.mktemp("folder_attacks")
    source, split, counts = _folder_run(base / "faces", base / "run")
    config = AttackRunConfig(
        observer="server", gallery_distractors=50, gallery_member_fraction=1.0, gallery_images_per_identity=GALLERY,
        oracle_images_per_identity=ORACLE, n_bootstrap=10, public_identities=12, public_images_per_identity=3,
        decoder_epochs=1, decoder_base_channels=16, decoder_batch_size=16, whitebox_iterations=2, whitebox_restarts=1,
        gradient_clients=1, gradient_images=2, gradient_iterations=3, gradient_restarts=1, gradient_local_steps=(1,),
        gradient_dp_noise_multipliers=(), gradient_logged_iterations=2, gradient_logged_restarts=1,
        gradient_logged_dummies=2, membership_nonmembers=20, membership_shadows=2, membership_query_images=1,
        calibration_identities=50, calibration_images_per_identity=3, evaluator_architecture=None, progress=False,
        seed=3,
    )  # fmt: skip
    recorder = RecordingSource(source)
    out = base / "out"
    report = run_attacks(base / "run", config, out_dir=out, faces=recorder, cache_dir=base / "cache")
    return report, split, counts, source, recorder, out


def _images(source, counts: dict[str, int], identity: int) -> int:
    """Images written for ``identity`` (by the tree's manifest, through its folder name)."""
    return counts[source.names[identity]]


def test_every_attack_family_runs_on_the_folder(folder_attacks) -> None:
    report, split, _counts, _source, _rec, out = folder_attacks
    assert [r.kind for r in report.knn] == ["class_centers", "dp_kmeans_centers"]
    w = report.knn[0]
    assert w.num_observations == 6 and w.num_identifiable >= 1
    assert [r.kind for r in report.inversion] == ["class_centers", "dp_kmeans_centers"]
    assert report.inversion[0].identity_similarity.shape == (6,)
    assert [r.kind for r in report.whitebox][:1] == ["class_centers"]
    assert report.gradient_logged and report.gradient_logged[0].reconstructions.shape[0] == 2
    assert len(report.gradient) == 2  # one client x (initial, trained) model
    assert [m.kind for m in report.membership] == ["class_centers"]
    assert report.membership[0].nonmembers == 6  # the folder's 6 distractors, not the 20 asked
    # the evaluator trained on the folder (not given), on identities outside everything attacked
    assert "face folder" in report.evaluator and report.calibration is not None
    text = (out / "attacks.json").read_text()
    assert json.loads(text)["data"]["source"] == "folder"
    assert str(out.parent) not in text  # neither the face folder's nor the run's location
    unexpected = [f for f in report.failures if "oracle" not in f]
    assert not unexpected, unexpected


def test_roles_are_the_splits_parts(folder_attacks) -> None:
    report, split, _counts, source, _rec, _out = folder_attacks
    roles = report.data
    parts = {k: set(v.tolist()) for k, v in split.parts.items()}
    members = parts["clients"]
    assert set(roles["distractors"]) == parts["distractors"]  # all 6 (50 asked)
    assert set(roles["nonmembers"]) == parts["distractors"]
    # the k-NN gallery: every member (fraction 1.0) plus exactly the folder's distractor identities
    assert report.knn[0].num_gallery_identities == len(members) + len(parts["distractors"])
    assert set(roles["attacker_public"]) <= parts["public"] and len(roles["attacker_public"]) == 4
    unused = set(source.identities.tolist()) - set().union(*parts.values())
    evaluators = set(roles["evaluator_train"]) | set(roles["calibration"])
    assert evaluators == (parts["public"] - set(roles["attacker_public"])) | unused
    assert not set(roles["evaluator_train"]) & set(roles["calibration"])
    attacked = members | parts["distractors"] | set(roles["attacker_public"])
    assert not evaluators & attacked
    # caps are said, never silent
    assert any("gallery distractors" in n and "6 identities, fewer than the 50 asked" in n for n in report.notes)
    assert any("attacker's public identities" in n and "fewer than the 12 asked" in n for n in report.notes)
    assert any("membership non-members" in n and "fewer than the 20 asked" in n for n in report.notes)


def never_trained(n: int) -> list[int]:
    """The image indices of a client identity with ``n`` images its client never trained on, in the
    order the attacks may take them: after the held-out ones first, then the held-out ones."""
    return list(range(PER + HELDOUT, n)) + list(range(PER, min(PER + HELDOUT, n)))


def test_no_training_image_of_a_member_is_a_gallery_or_oracle_image(folder_attacks) -> None:
    report, split, counts, source, recorder, _out = folder_attacks
    members = set(split["clients"].tolist())
    rendered: dict[int, set[int]] = {i: set() for i in members}
    for ids, per, start in recorder.calls:
        for i in set(ids) & members:
            span = set(range(start, start + per))
            if span & set(range(PER)):
                # training images only where training images are meant: the client's whole training set
                # (evaluator reference, logged-update attack) or the simulated probe's first image of each
                # identity (gradient_images=2 over 2 identities) -- never the gallery's or oracle's 2
                assert (start, per) in {(0, PER), (0, 1)}, (i, start, per)
            else:
                rendered[i] |= span
    for i in members:
        n = _images(source, counts, i)
        order = never_trained(n)
        gallery, oracle = order[:GALLERY], order[GALLERY : GALLERY + ORACLE]
        rec = report.data["member_images"][str(i)]
        assert (rec["gallery"], rec["oracle"]) == (gallery, oracle)
        assert rendered[i] == set(gallery + oracle)  # nothing else of a member outside its training images
        if n - PER - HELDOUT >= GALLERY + ORACLE:
            assert not rendered[i] & set(range(PER, PER + HELDOUT))  # held-out images only where needed


def test_shortfalls_are_counted(folder_attacks) -> None:
    report, split, counts, source, _rec, _out = folder_attacks
    members = split["clients"].tolist()
    order = [never_trained(_images(source, counts, i)) for i in members]
    g_short = sum(len(o) < GALLERY for o in order)
    o_short = sum(len(o) - GALLERY < ORACLE for o in order)
    o_none = sum(len(o) <= GALLERY for o in order)
    held = sum(_images(source, counts, i) - PER - HELDOUT < GALLERY + ORACLE for i in members)
    assert o_short > 0 and held > 0  # the tree makes some (5- and 6-image identities)
    note = next(n for n in report.notes if n.startswith("face folder: of"))
    assert f"{g_short} have fewer than {GALLERY} gallery image(s)" in note
    assert f"{o_short} fewer than {ORACLE} oracle image(s)" in note
    assert any(n.startswith(f"face folder: {held} of {len(members)} client identities") for n in report.notes)
    if o_none:
        assert any(
            f"{o_none} of {len(members)} client identities have no real-image oracle" in f for f in report.failures
        )


def test_members_without_unseen_images_are_flagged_and_left_out(tmp_path: Path) -> None:
    """Clients training on 5 images and holding none out: the 5-image identities have none left; they
    are counted, get no gallery image, and stop the membership game (named), never falling back to
    training images."""
    from attacks.run import _AttackData
    from attacks.views import GroundTruth
    from federated_core.data.folder_source import FolderFaceSource, folder_federated_data, split_folder_identities

    counts = write_tree(tmp_path / "faces", identities=16)
    source = FolderFaceSource(tmp_path / "faces", R)
    split = split_folder_identities(source, public=4, clients=6, test=2, distractors=3, seed=1)
    data = folder_federated_data(source, split, 2, "balanced", 5, 2, 0, seed=0)
    spec = json.loads(json.dumps(data.data_spec))
    ids = {party: c["identities"] for party, c in spec["clients"].items()}
    gt = GroundTruth(ids, {}, {}, {}, spec)
    config = AttackRunConfig(gallery_images_per_identity=2, oracle_images_per_identity=1, progress=False)
    attack_data = _AttackData.of(gt, None, config)
    members = split["clients"].tolist()
    blind = sorted(i for i in members if counts[source.names[i]] == 5)
    assert blind  # the tree cycles 5-image identities
    assert attack_data.members_without_unseen(members) == blind
    assert any(
        f"{len(blind)} of {len(members)} client identities have no image their client did not train on" in f
        for f in attack_data.failures
    )
    gallery = attack_data.gallery(torch.tensor(members))
    assert set(gallery.labels.tolist()) == set(members) - set(blind)
    for i in set(members) - set(blind):
        assert attack_data.member_images(i)[0] == list(range(5, min(7, counts[source.names[i]])))
    # opened once per process while the tree is unchanged; a folder changed since the run is refused
    assert GroundTruth(ids, {}, {}, {}, spec).folder_source() is attack_data.folder
    touched = sorted((tmp_path / "faces" / "p01").iterdir())[0]
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size: same fingerprint
    assert GroundTruth(ids, {}, {}, {}, spec).folder_source() is not attack_data.folder  # reopened, checked
    Image.new("RGB", (16, 16)).save(tmp_path / "faces" / "p00" / "extra.png")
    with pytest.raises(ValueError, match="changed since the data spec was written"):
        _AttackData.of(GroundTruth(ids, {}, {}, {}, spec), None, config)


def test_even_image_counts_keep_at_least_half_of_the_identities(tmp_path: Path) -> None:
    """Pre-training and calibration sets need one image count for every identity: the asked count,
    or the lower median of what the identities hold, those holding fewer left out."""
    from attacks.run import _even_images
    from federated_core.data.folder_source import FolderFaceSource

    counts = write_tree(tmp_path / "faces", identities=4)  # p00..p03: 9, 5, 7, 6 images
    source = FolderFaceSource(tmp_path / "faces", R)
    ids = source.identities
    held = {i: counts[source.names[i]] for i in ids.tolist()}
    kept, per = _even_images(source, ids, 8)
    assert per == sorted(held.values())[1] == 6  # lower median of 9, 5, 7, 6
    assert kept.tolist() == [i for i in ids.tolist() if held[i] >= 6]
    kept, per = _even_images(source, ids, 4)
    assert per == 4 and kept.tolist() == ids.tolist()


def test_audit_findings_carry_the_folder_notes(folder_attacks) -> None:
    """The audit's attack findings (results.json) say which split part played which role."""
    from privaudit.attack_stage import findings_from_report

    report, _split, _counts, _source, _rec, out = folder_attacks
    doc = report.to_dict()
    findings = findings_from_report(doc, out)
    assert {f["attack"] for f in findings} == {"knn", "inversion", "gradient", "membership"}
    assert all("face folder roles" in f["notes"] and "fewer than the 50 asked" in f["notes"] for f in findings)
    plain = findings_from_report({**doc, "data": None}, out)  # a synthetic run's report has no data record
    assert not any("face folder roles" in f["notes"] for f in plain)


def test_simulated_probe_stays_within_the_clients_training_images(folder_attacks) -> None:
    """A probe asking more images than a client trained on uses the training images only (said)."""
    _report, split, _counts, source, _rec, out = folder_attacks
    recorder = RecordingSource(source)
    config = AttackRunConfig(
        observer="server", attacks=("gradient",), gradient_logged_rounds=(), gradient_clients=1, gradient_images=8,
        gradient_iterations=1, gradient_restarts=1, gradient_local_steps=(1,), gradient_dp_noise_multipliers=(),
        calibration_identities=50, calibration_images_per_identity=3, evaluator_architecture=None, n_bootstrap=10,
        progress=False, seed=3,
    )  # fmt: skip
    report = run_attacks(out.parent / "run", config, faces=recorder, cache_dir=out.parent / "cache")
    assert any(f"asked, the client trained on {PER}: the probe uses those" in n for n in report.notes)
    assert report.gradient and report.gradient[0].summary()["num_images"] == 2 * PER  # 2 identities x 3
    members = set(split["clients"].tolist())
    for ids, per, start in recorder.calls:
        if set(ids) & members and start < PER:  # training images: only the training set as a whole
            assert (start, per) == (0, PER), (ids, start, per)


def test_privaudit_attack_command_on_a_folder_run(folder_attacks, tmp_path: Path, capsys) -> None:
    """`privaudit attack RUN_DIR` reads the folder from the run's data spec: no option names it."""
    from privaudit.cli import main

    _report, split, _counts, _source, _rec, out = folder_attacks
    assert (
        main(["attack", str(out.parent / "run"), "--attacks", "knn", "--out", str(tmp_path), "--budget", "tiny"]) == 0
    )
    saved = json.loads((tmp_path / "attacks.json").read_text())
    assert saved["data"]["source"] == "folder"
    assert set(saved["data"]["distractors"]) == set(split["distractors"].tolist())
    assert [r["kind"] for r in saved["knn"]] == ["class_centers", "dp_kmeans_centers"]
    assert "face folder roles" in capsys.readouterr().out


def test_a_split_too_small_for_the_roles_is_flagged(tmp_path: Path) -> None:
    """No distractors: the gallery holds members only and the membership game has no non-member; one
    identity left for the evaluators: flagged, and training one is refused naming what is missing."""
    from attacks.run import _AttackData, _folder_evaluator_config
    from attacks.views import GroundTruth
    from federated_core.data.folder_source import FolderFaceSource, folder_federated_data, split_folder_identities
    from federated_core.pretrain import PretrainConfig

    write_tree(tmp_path / "faces", identities=10)
    source = FolderFaceSource(tmp_path / "faces", R)
    split = split_folder_identities(source, public=2, clients=6, test=2, distractors=0, seed=0)
    spec = folder_federated_data(source, split, 2, "balanced", PER, 2, HELDOUT, seed=0).data_spec
    gt = GroundTruth({p: c["identities"] for p, c in spec["clients"].items()}, {}, {}, {}, spec)
    data = _AttackData.of(gt, None, AttackRunConfig(gallery_images_per_identity=1, progress=False))
    assert data.distractors.numel() == 0 and data.nonmembers == []
    assert any("gallery distractors" in n and "0 identities, fewer than the 1000 asked" in n for n in data.notes)
    assert set(data.gallery(split["clients"]).labels.tolist()) == set(split["clients"].tolist())
    assert data.membership_source()[1]["nonmembers"] == 0
    assert data.public.numel() == 1  # half of the 2 public identities
    assert any("1 identities left for the independent evaluators" in f for f in data.failures)
    with pytest.raises(ValueError, match="leaves 1 identities for the independent evaluator"):
        _folder_evaluator_config(PretrainConfig(), data, None, None)


AUDIT = """
scale = "tiny"
name = "folder attacks"
[data]
source = "folder"
path = "{path}"
resolution = 32
min_images_per_identity = 7
[data.split]
public = 10
clients = 6
test = 4
[[methods]]
name = "shared-centers"
"""


def test_privaudit_audit_attacks_a_folder(tmp_path: Path) -> None:
    """`privaudit audit` on a folder scenario with every attack family: the findings in results.json
    carry the folder roles, a shortfall that weakens a number is a flag."""
    from privaudit.cli import main

    counts = write_tree(tmp_path / "faces", identities=48)  # 7- and 9-image identities are eligible
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(AUDIT.format(path=(tmp_path / "faces").as_posix()))
    assert main(["audit", str(scenario), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (method,) = results["methods"]
    found = {(f["attack"], f["target_kind"]) for f in method["attacks"]}
    assert {("knn", "class_centers"), ("inversion", "class_centers"), ("membership", "class_centers")} <= found
    assert any(a == "gradient" for a, _k in found)
    assert all("face folder roles" in f["notes"] for f in method["attacks"])
    saved = json.loads((tmp_path / "out" / "runs" / "shared-centers" / "attacks" / "attacks.json").read_text())
    spec = json.loads((tmp_path / "out" / "runs" / "shared-centers" / "ground_truth" / "data_spec.json").read_text())
    assert set(saved["data"]["distractors"]) == set(spec["split"]["identities"]["distractors"])
    train_end = spec["clients"]["client:0"]["images_per_identity"]
    for i, rec in saved["data"]["member_images"].items():
        assert min(rec["gallery"]) >= train_end and rec["training_end"] == train_end
        asked = AttackRunConfig().gallery_images_per_identity  # the audit keeps the default
        assert len(rec["gallery"]) == min(asked, counts[f"p{int(i):02d}"] - train_end)


def test_a_spec_without_a_split_record_deals_the_rest_into_public_and_distractors(tmp_path: Path) -> None:
    """Federated data built from plain identity lists records no split: the identities outside the
    clients and the test set are dealt, seeded, into public and distractor halves (said)."""
    from attacks.run import _AttackData
    from attacks.views import GroundTruth
    from federated_core.data.folder_source import FolderFaceSource, folder_federated_data

    write_tree(tmp_path / "faces", identities=12)
    source = FolderFaceSource(tmp_path / "faces", R)
    clients, test = torch.tensor([0, 2, 4, 6]), torch.tensor([8, 10])
    spec = folder_federated_data(source, {"clients": clients, "test": test}, 2, "balanced", 3, 2, 1, seed=0).data_spec
    assert spec["split"] is None
    gt = GroundTruth({p: c["identities"] for p, c in spec["clients"].items()}, {}, {}, {}, spec)
    data = _AttackData.of(gt, None, AttackRunConfig(progress=False, seed=5))
    rest = set(range(12)) - set(clients.tolist()) - set(test.tolist())
    evaluators = set(data.evaluator_train.tolist()) | set(data.calibration.tolist())
    assert set(data.distractors.tolist()) | set(data.public.tolist()) | evaluators == rest
    assert len(data.distractors) == 3 and not set(data.distractors.tolist()) & (set(data.public.tolist()) | evaluators)
    assert any("records no identity split" in n for n in data.notes)


def test_the_aggregate_on_a_folder_run(folder_attacks) -> None:
    """The aggregate of round 1 on the folder run: scored against the three clients' 18 training
    images, its null one group of the split's 6 distractor identities (all with >= 3 images),
    rendered from index 0 with the participants' 3 images each; no failure."""
    import dataclasses

    report, split, _counts, source, _recorder, out = folder_attacks
    config = dataclasses.replace(
        AttackRunConfig(**{k: v for k, v in report.config.items() if k in AttackRunConfig.__dataclass_fields__}),
        attacks=("gradient",), gradient_simulated=False, gradient_logged_rounds=("first",),
        gradient_logged_aggregate="always",
    )  # fmt: skip
    recorder = RecordingSource(source)
    again = run_attacks(out.parent / "run", config, faces=recorder, cache_dir=out.parent / "cache")
    assert not [f for f in again.failures if "aggregate" in f]
    (agg,) = [r.summary() for r in again.gradient_logged if r.config["client"] == "aggregate"]
    assert agg["participants"] == ["client:0", "client:1", "client:2"] and agg["num_samples"] == 18
    assert agg["null_clients"] == 1 and agg["units"] == 2
    distractors = set(split["distractors"].tolist())
    # the gallery renders the distractors too, 2 images each; the null group takes the participants' 3
    (null_call,) = [c for c in recorder.calls if set(c[0]) <= distractors and c[1] == 3]
    assert set(null_call[0]) == distractors and null_call[2] == 0


def test_the_aggregate_null_takes_only_distractors_with_enough_images(folder_attacks) -> None:
    """Participants with 7 images per identity: only the distractors holding >= 7 images can stand
    in their null (fewer would make a kinder null); too few of them for one group is said, not raised."""
    from attacks.run import AttackReport, _aggregate_null_groups, _AttackData
    from attacks.views import load_ground_truth
    from federated_core.data.faceset import FaceSet

    report, split, counts, source, _recorder, out = folder_attacks
    config = AttackRunConfig(**{k: v for k, v in report.config.items() if k in AttackRunConfig.__dataclass_fields__})
    gt = load_ground_truth(out.parent / "run")
    data = _AttackData.of(gt, RecordingSource(source), config)
    enough = [i for i in data.distractors.tolist() if _images(source, counts, i) >= 7]
    one = FaceSet(torch.zeros(7, 3, R, R, dtype=torch.uint8), torch.zeros(7, dtype=torch.int64))  # 1 id x 7
    sink = AttackReport("run", "server", {})
    groups = _aggregate_null_groups(one, data, config, sink)
    assert len(enough) == 2  # the tree's distractors hold 5, 6, 5, 7, 5, 7 images
    assert groups is not None and len(groups) == min(config.gradient_logged_null_groups, len(enough))
    assert all(set(g.labels.tolist()) <= set(enough) and len(g) == 7 for g in groups.values())
    big = FaceSet(torch.zeros(7 * 6, 3, R, R, dtype=torch.uint8), torch.arange(6).repeat_interleave(7))  # 6 ids x 7
    assert _aggregate_null_groups(big, data, config, sink) is None
    assert any("no null" in n and "with 7 images" in n for n in sink.notes)
