"""Ceilings and floors of the attacks (DESIGN §8): oracle / null / normalised success with a
bootstrap over independent units, and the evaluator's threshold at a fixed FAR.

Expected values are derived here independently of the code under test: dense numpy similarity
matrices, scipy's normal quantiles, the asymptotic variance of a sample quantile and of a mean.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from attacks.knn import Gallery, KnnAttackConfig, KnnTruth, knn_identity_attack
from attacks.metrics import normalised_success, threshold_at_far


def _well_separated_gallery(n_ids=30, per_id=3, d=32, noise=0.05, seed=0):
    """Identity directions in d dims, gallery images = direction + small noise; returns the
    gallery and the normalised mean of each identity's gallery images (sorted ids)."""
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(n_ids, d, generator=g), dim=1)
    ids = torch.arange(100, 100 + n_ids)
    emb = dirs.repeat_interleave(per_id, 0) + noise * torch.randn(n_ids * per_id, d, generator=g)
    gallery = Gallery(emb, ids.repeat_interleave(per_id))
    means = F.normalize(emb.view(n_ids, per_id, d).mean(1), dim=1)
    return gallery, ids, means


def _dense_top1(queries: torch.Tensor, gallery: Gallery, truth_ids: list[int]) -> np.ndarray:
    """Hits of the nearest identity by the best cosine over its images (independent dense search)."""
    q = F.normalize(queries.double(), dim=1).numpy()
    e = F.normalize(gallery.embeddings.double(), dim=1).numpy()
    gid = gallery.identity_ids.numpy()
    uniq = np.unique(gid)
    per_id = np.stack([(q @ e[gid == u].T).max(1) for u in uniq], 1)
    return (uniq[per_id.argmax(1)] == np.asarray(truth_ids)).astype(float)


def _truth(ids: list[int], members: torch.Tensor) -> KnnTruth:
    # half the gallery identities are "members" so the membership view is defined
    return KnnTruth.from_row_ids(torch.tensor(ids), members)


def test_oracle_of_gallery_means_is_one_and_raw_equal_to_oracle_normalises_to_one():
    gallery, ids, means = _well_separated_gallery()
    cfg = KnnAttackConfig(k=3, n_bootstrap=200, seed=1)
    res = knn_identity_attack(means, gallery, _truth(ids.tolist(), ids[:15]), cfg, oracle=means,
                              units=ids.tolist(), unit_name="identity")
    assert res.top1_rate == 1.0 and res.oracle_top1 == 1.0
    # the null: as many unit vectors drawn from N(0, I) with seed + null_seed_offset, searched densely here
    g = torch.Generator().manual_seed(cfg.seed + cfg.null_seed_offset)
    null = torch.randn(len(ids), 32, generator=g, dtype=torch.float64)
    assert res.null_top1 == pytest.approx(_dense_top1(null, gallery, ids.tolist()).mean())
    assert res.null_top1 < 1
    assert res.normalised_top1 == 1.0 and res.normalised_top1_ci == (1.0, 1.0)
    assert res.units == 30 and res.unit_name == "identity"
    s = res.summary()
    for key in ("oracle_top1", "oracle_real_top1", "null_top1", "normalised_top1", "normalised_top1_ci",
                "normalised_real_top1", "top1_unit_ci", "units", "unit_name"):
        assert key in s
    assert math.isnan(s["oracle_real_top1"])  # no real-image oracle given


def test_random_queries_normalise_to_zero_within_their_interval():
    gallery, ids, means = _well_separated_gallery(n_ids=30)
    reps = 10  # ten observations per identity; the identity is the unit (30 units)
    obs_ids = ids.repeat(reps).tolist()
    g = torch.Generator().manual_seed(123)
    raw = F.normalize(torch.randn(len(obs_ids), 32, generator=g), dim=1)
    res = knn_identity_attack(raw, gallery, _truth(obs_ids, ids[:15]), KnnAttackConfig(k=1, n_bootstrap=400, seed=5),
                              oracle=means[torch.arange(len(obs_ids)) % 30], units=obs_ids, unit_name="identity")
    assert res.top1_rate == pytest.approx(_dense_top1(raw, gallery, obs_ids).mean())
    # raw and null are both draws of random directions: expected normalised success 0
    lo, hi = res.normalised_top1_ci
    assert lo <= 0.0 <= hi
    assert abs(res.normalised_top1) < 0.1  # sd ~ sqrt(2 · (1/30) / 300) ≈ 0.015 at oracle 1
    assert res.units == 30


def test_no_dynamic_range_gives_nan_with_a_note():
    # every gallery image is the same vector: any query ties every identity, so oracle == null == raw
    ids = torch.arange(10).repeat_interleave(2)
    gallery = Gallery(torch.ones(20, 8), ids)
    obs = list(range(10))
    g = torch.Generator().manual_seed(0)
    res = knn_identity_attack(torch.randn(10, 8, generator=g), gallery, _truth(obs, torch.arange(5)),
                              KnnAttackConfig(k=1, n_bootstrap=50), oracle=torch.randn(10, 8, generator=g))
    assert res.oracle_top1 == res.null_top1 == res.top1_rate
    assert math.isnan(res.normalised_top1) and all(math.isnan(c) for c in res.normalised_top1_ci)
    assert any("no dynamic range" in n for n in res.notes)
    # the same at the level of the metric
    r = normalised_success([1, 0, 1], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0, 1, 2], metric="m", n_bootstrap=20)
    assert math.isnan(r.normalised) and "no dynamic range" in r.notes[0]


def test_missing_oracle_rows_are_left_out_and_noted():
    gallery, ids, means = _well_separated_gallery(n_ids=10)
    oracle = means.clone()
    oracle[:3] = float("nan")
    res = knn_identity_attack(means, gallery, _truth(ids.tolist(), ids[:5]), KnnAttackConfig(k=1, n_bootstrap=20),
                              oracle=oracle)
    assert res.ceiling.num_observations == 7 and res.oracle_top1 == 1.0
    assert any("3 of 10 identifiable observations have no oracle query" in n for n in res.notes)
    with pytest.raises(ValueError, match="oracle queries contain NaN"):
        partial = means.clone()
        partial[0, 0] = float("nan")
        knn_identity_attack(means, gallery, _truth(ids.tolist(), ids[:5]), oracle=partial)


def test_bootstrap_resamples_units_not_samples():
    rng = np.random.default_rng(0)
    n_units, m = 40, 10
    unit_rate = rng.integers(0, 2, n_units).astype(float)  # one outcome per unit, duplicated m times
    raw = np.repeat(unit_rate, m)
    units = np.repeat(np.arange(n_units), m)
    ones, zeros = np.ones_like(raw), np.zeros_like(raw)
    b = 4000
    by_unit = normalised_success(raw, ones, zeros, units, n_bootstrap=b, seed=3)
    deduplicated = normalised_success(unit_rate, np.ones(n_units), np.zeros(n_units), np.arange(n_units),
                                      n_bootstrap=b, seed=3)
    by_sample = normalised_success(raw, ones, zeros, np.arange(len(raw)), n_bootstrap=b, seed=3)
    # duplicating a unit's samples changes nothing when the unit is resampled whole
    assert by_unit.raw_ci == deduplicated.raw_ci and by_unit.num_units == n_units
    assert by_unit.normalised == pytest.approx(unit_rate.mean())  # oracle 1, null 0: normalised = raw
    assert by_unit.normalised_ci == pytest.approx(by_unit.raw_ci)
    p = unit_rate.mean()
    width_units = 2 * norm.ppf(0.975) * math.sqrt(p * (1 - p) / n_units)  # normal approximation over 40 units
    width_samples = width_units / math.sqrt(m)  # what treating 400 correlated samples as independent gives
    assert by_unit.raw_ci[1] - by_unit.raw_ci[0] == pytest.approx(width_units, rel=0.25)
    assert by_sample.raw_ci[1] - by_sample.raw_ci[0] == pytest.approx(width_samples, rel=0.25)


def test_threshold_at_far_matches_the_gaussian_quantile():
    rng = np.random.default_rng(1)
    n_imp, n_gen, mu = 200_000, 4_000, 2.5
    impostor, genuine = rng.standard_normal(n_imp), mu + rng.standard_normal(n_gen)
    strata = np.where(np.arange(n_imp) % 2 == 0, "same_group", "other_group")
    for far in (1e-2, 1e-3):
        t = threshold_at_far(genuine, impostor, far, strata)
        z = norm.ppf(1 - far)
        # asymptotic sd of the empirical (1 - far) quantile: sqrt(far (1 - far) / n) / pdf(z)
        sd = math.sqrt(far * (1 - far) / n_imp) / norm.pdf(z)
        assert abs(t.threshold - z) < 4 * sd
        assert t.achieved_far <= far and np.mean(impostor >= t.threshold) == t.achieved_far
        q = norm.sf(t.threshold - mu)  # genuine accept rate at that threshold
        assert abs(t.genuine_accept_rate - q) < 4 * math.sqrt(q * (1 - q) / n_gen)
        assert t.supported and t.min_impostors == round(10 / far)
        assert set(t.far_by_stratum) == {"same_group", "other_group"}
        for v in t.far_by_stratum.values():  # each half of the impostors is the same distribution
            assert abs(v - far) < 4 * math.sqrt(far / (n_imp / 2))
    few = threshold_at_far(genuine, impostor[:5_000], 1e-3)
    assert not few.supported and few.min_impostors == 10_000


def test_calibrate_evaluator_pairs_against_a_hand_built_computation(faces_factory, backbone_factory):
    from attacks.evaluator import Evaluator, calibrate_evaluator
    from federated_core.models import embed

    faces = faces_factory(range(200, 212), per_identity=4, resolution=16, seed=5)
    ev = Evaluator(backbone_factory(12, 16, seed=9), (0, 100), "test evaluator")
    cal = calibrate_evaluator(ev, faces, fars=(1e-2, 0.1))
    e = embed(ev.model, faces).double().numpy()
    lab = faces.labels.numpy()
    probes = np.stack([e[lab == i][0] for i in range(200, 212)])
    templates = np.stack([e[lab == i][1:].sum(0) for i in range(200, 212)])
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    sims = probes @ templates.T
    imp = np.sort(sims[~np.eye(12, dtype=bool)])[::-1]
    assert cal.num_identities == 12 and cal.images_per_identity == 4
    for t, far in zip(cal.thresholds, (1e-2, 0.1)):
        assert t.num_genuine == 12 and t.num_impostor == 132
        k = math.floor(far * 132)  # allowed false accepts: the threshold sits just above the (k+1)-th largest
        # (the evaluator scores in float32, this check in float64: equal to 1e-6, not bit for bit —
        # seen off by 3e-8 on one machine's CPU)
        assert abs(t.threshold - imp[k]) <= 1e-6 and np.sum(imp > t.threshold + 1e-6) <= k
        assert t.genuine_accept_rate == pytest.approx(np.mean(np.diag(sims) >= t.threshold))
        assert t.supported == (132 >= 10 / far)
        # toy groups alternate by identity: 5 same-group impostors of each of the 12 probes
        assert t.num_by_stratum == {"same_group": 60, "other_group": 72}
    with pytest.raises(ValueError, match="same number"):
        calibrate_evaluator(ev, faces_factory([1], per_identity=3, resolution=16))


def test_success_at_far_and_group_stratified_impostors(faces_factory, backbone_factory):
    from attacks.evaluator import Evaluator, EvaluatorCalibration, build_reference
    from attacks.metrics import FarThreshold
    from federated_core.models import embed

    attacked = faces_factory(range(8), per_identity=4, resolution=16, seed=2)
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator")
    ref = build_reference(ev, attacked)
    probes = faces_factory(range(8), per_identity=1, resolution=16, seed=2).images.float() / 255
    e_rec = embed(ev.model, probes * 2 - 1).double().numpy()
    e_ref = embed(ev.model, attacked).double().numpy()
    lab = attacked.labels.numpy()
    t = np.stack([e_ref[lab == i].mean(0) for i in range(8)])
    sims = e_rec @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    thr = float(np.median(sims))
    ref.calibration = EvaluatorCalibration(None, 0, 0, "hand-made", [FarThreshold(
        0.01, thr, 0.01, 0.5, 1, 1, 1000, False, {}, {})])
    ids = [frozenset({i}) for i in range(8)]
    sc = ref.score(probes, ids)
    assert sc.success_at_far[0.01].tolist() == (np.diag(sims) >= thr).tolist()
    assert sc.far_supported == {0.01: False}
    groups = np.arange(8) % 2  # toy faces: group = identity id mod 2
    for i in range(8):
        same = [j for j in range(8) if j != i and groups[j] == groups[i]]
        other = [j for j in range(8) if groups[j] != groups[i]]
        assert sc.impostor_same_group_similarity[i] == pytest.approx(sims[i, same].mean(), abs=1e-5)
        assert sc.impostor_other_group_similarity[i] == pytest.approx(sims[i, other].mean(), abs=1e-5)
        assert sc.impostor_all_similarity[i] == pytest.approx(sims[i, same + other].mean(), abs=1e-5)
        assert sc.impostor_match_same_group[0.01][i] == pytest.approx(np.mean(sims[i, same] >= thr))
    m = sc.means()
    assert m["success@far=0.01"] == pytest.approx(np.mean(np.diag(sims) >= thr))


def test_inversion_oracle_and_null_rows(faces_factory, backbone_factory):
    from attacks.evaluator import Evaluator, build_reference
    from attacks.inversion import EmbeddingDecoder, invert, invert_and_score

    attacked = faces_factory(range(6), per_identity=3, resolution=16, seed=4)
    ref = build_reference(Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "ev"), attacked)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dec = EmbeddingDecoder(16, 16, 8).eval()
    g = torch.Generator().manual_seed(1)
    vecs = torch.randn(6, 16, generator=g)
    ids = [frozenset({i}) for i in range(6)]
    units = ["c0", "c0", "c1", "c1", "c2", "c2"]
    res = invert_and_score(dec, vecs, ids, ref, oracle=vecs.clone(), units=units, unit_name="client", seed=2,
                           n_bootstrap=50)
    vs_oracle, vs_real = res.ceilings["rank1"]
    assert vs_real is None and vs_oracle.num_units == 3 and vs_oracle.unit_name == "client"
    assert vs_oracle.oracle == vs_oracle.raw == res.means["rank1"]  # oracle = the same vectors
    # null: the decoder fed seeded random unit vectors (seed + 7777), scored the same way
    null = torch.randn(6, 16, generator=torch.Generator().manual_seed(2 + 7_777), dtype=torch.float64).float()
    assert vs_oracle.null == pytest.approx(ref.score(invert(dec, null), ids).rank1.mean())
    s = res.summary()
    for key in ("oracle_rank1", "null_rank1", "normalised_rank1", "normalised_rank1_ci", "units", "unit_name"):
        assert key in s
    if vs_oracle.oracle > vs_oracle.null:
        assert vs_oracle.normalised == 1.0
    else:
        assert math.isnan(vs_oracle.normalised) and any("no dynamic range" in n for n in res.notes)


@pytest.fixture(scope="module")
def shared_centers_run(tmp_path_factory, faces_factory):
    """A 1-round FedPE run on toy faces whose clients' true class centers are then logged as
    uploaded (what a method sharing W sends): the observed W equals the true W."""
    from attacks.views import load_ground_truth
    from federated_core.engine import ClientData, FederatedConfig, run_federated
    from federated_core.engine.messages import make_message
    from federated_core.engine.wire import WireLog

    run = tmp_path_factory.mktemp("ceilings_run") / "run"
    clients = [ClientData.from_faces(faces_factory(ids, 3, 16)) for ids in ([0, 1, 2], [3], [4, 5])]
    cfg = FederatedConfig(method="fedpe", rounds=1, batch_size=4, embedding_dim=16, resolution=16, progress=False,
                          eval_initial=False, eval_every=0, seed=1)
    run_federated(cfg, clients, out_dir=run)
    gt = load_ground_truth(run)
    log = WireLog.load(run)
    for party in sorted(gt.private):
        log.append(make_message("class_centers", party, ("server",), 1, "train", {"centers": gt.private[party]["centers"]}))
    log.save(run)
    return run


def test_run_attacks_reports_ceilings_in_the_dict(shared_centers_run, faces_factory, backbone_factory):
    from attacks.evaluator import Evaluator
    from attacks.run import AttackRunConfig, run_attacks

    source = lambda ids, per, start: faces_factory(ids, per, 16, seed=start)  # noqa: E731
    ev = Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "test evaluator (untrained)")
    cfg = AttackRunConfig(attacks=("knn", "inversion"), gallery_distractors=20, gallery_member_fraction=1.0,
                          n_bootstrap=20, public_identities=8, public_images_per_identity=2, decoder_epochs=1,
                          decoder_base_channels=8, decoder_batch_size=16, calibration_identities=30,
                          calibration_images_per_identity=3, evaluator_architecture=None, progress=False, seed=3)
    report = run_attacks(shared_centers_run, cfg, faces=source, evaluator=ev)
    assert not report.failures
    d = report.to_dict()
    w, dp = d["knn"]
    assert (w["kind"], w["unit_name"], w["units"]) == ("class_centers", "identity", 6)
    assert (dp["kind"], dp["unit_name"], dp["units"]) == ("dp_kmeans_centers", "client", 3)
    # the observed W is the true W: the true-center oracle is the raw attack itself
    assert w["oracle_top1"] == w["top1"]
    assert w["oracle_real_top1"] is not None and "unseen image" in w["oracle_real_source"]
    for key in ("null_top1", "normalised_top1", "normalised_top1_ci", "normalised_real_top1", "top1_unit_ci"):
        assert key in w
    cal = d["evaluator_calibration"]
    assert cal["identities"] == [5_000_300, 5_000_330] and cal["num_identities"] == 30
    t3, t2 = cal["thresholds"]
    assert t3["num_impostor"] == 30 * 29 and t3["supported"] is False and t2["supported"] is False
    assert any("success at FAR=0.001 not supported: 870 impostor pairs" in n for n in d["notes"])
    inv = d["inversion"][0]
    assert "mean_success@far=0.01" in inv and inv["success@far=0.01_supported"] is False
    for key in ("oracle_rank1", "null_rank1", "normalised_rank1_ci", "oracle_success@far=0.01", "null_success@far=0.01"):
        assert key in inv
    assert "normalised" in report.table() and "evaluator thresholds" in report.table()
    # oracle images that would reuse the gallery's are refused, and said so
    clash = run_attacks(shared_centers_run, AttackRunConfig(attacks=("knn",), gallery_distractors=20, n_bootstrap=10,
                                                            oracle_start_index=cfg.gallery_start_index + 1,
                                                            progress=False), faces=source, evaluator=ev)
    assert any("overlap the gallery" in f for f in clash.failures)
    assert all(r.ceiling_real is None and r.ceiling is not None for r in clash.knn)


def test_inversion_grid_shows_real_images_and_the_oracle_and_null_rows(tmp_path, faces_factory, backbone_factory):
    """Issue #14 item 7: a real image of each identity on top (not its mean face), then the
    attack's, the oracle's and the null's reconstructions, each tile scored."""
    import numpy as np
    from PIL import Image

    from attacks import tiles
    from attacks.evaluator import Evaluator, build_reference
    from attacks.inversion import EmbeddingDecoder, invert_and_score

    attacked = faces_factory(range(4), per_identity=3, resolution=16, seed=4)
    ref = build_reference(Evaluator(backbone_factory(12, 16, seed=9), (5_000_000, 5_000_300), "ev"), attacked)
    first = int((attacked.labels == 2).nonzero()[0])
    assert torch.equal(ref.real_face(frozenset({2})), attacked.images[first].float() / 255)
    assert not torch.allclose(ref.real_face(frozenset({2})), ref.mean_face(frozenset({2})))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dec = EmbeddingDecoder(16, 16, 8).eval()
    vecs = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    ids = [frozenset({i}) for i in range(4)]
    oracle = vecs.clone()
    oracle[1] = float("nan")  # no oracle for observation 1: its tile is blank and not judged
    grid = tmp_path / "g.png"
    invert_and_score(dec, vecs, ids, ref, oracle=oracle, grid_path=grid, seed=2, n_bootstrap=20)
    img = np.asarray(Image.open(grid).convert("RGB"))
    cell_w = 96 + 2 * tiles._BORDER + tiles._GAP
    cell_h = 96 + 2 * tiles._BORDER + tiles._CAPTION_HEIGHT + tiles._GAP
    assert img.shape[:2] == (22 + 4 * cell_h, tiles._LABEL_WIDTH + 4 * cell_w + tiles._GAP)  # real, attack, W, null
    y0, x0 = 22 + tiles._BORDER, tiles._LABEL_WIDTH + 2 * cell_w + tiles._BORDER
    shown = img[y0 : y0 + 96 : 6, x0 : x0 + 96 : 6].transpose(2, 0, 1)  # one pixel per source pixel
    assert np.array_equal(shown, attacked.images[int((attacked.labels == 2).nonzero()[0])].numpy())
    blank = img[22 + 2 * cell_h + tiles._BORDER + 40, tiles._LABEL_WIDTH + cell_w + tiles._BORDER + 40]
    assert tuple(blank) == (255, 255, 255)
