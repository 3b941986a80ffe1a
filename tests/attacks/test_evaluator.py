"""The independent evaluation model: disjoint identities, its own seed, optionally another
architecture; and the agreement of two evaluators on the same reconstructions."""

from __future__ import annotations

import dataclasses
import shutil
import warnings

import numpy as np
import pytest
import torch

from attacks.evaluator import evaluator_config, train_evaluator
from federated_core.pretrain import PretrainConfig


def test_evaluator_config_is_disjoint_from_phi0_and_reseeded():
    phi0 = PretrainConfig(train_identities=(0, 50), eval_identities=(900_000, 900_020), seed=4)
    ev = evaluator_config(phi0, identity_offset=5_000_000)
    assert ev.train_identities == (5_000_000, 5_000_050)
    assert ev.eval_identities == (5_900_000, 5_900_020)
    assert ev.seed == 5 and ev.backbone == phi0.backbone and ev.data == phi0.data
    with pytest.raises(ValueError, match="identity_offset"):
        evaluator_config(phi0, identity_offset=0)


def test_train_evaluator_refuses_attacked_identities():
    cfg = PretrainConfig(train_identities=(100, 200), eval_identities=(900_000, 900_020))
    with pytest.raises(ValueError, match=r"overlap the attacked identities \(e.g. \[150\]\)"):
        train_evaluator(cfg, torch.tensor([5, 150, 700]))
    with pytest.raises(ValueError, match="overlap the excluded identities"):
        train_evaluator(cfg, torch.tensor([5]), other_excluded=torch.arange(0, 120))


# ------------------------------------------------------------------ another architecture


def _tiny_phi0():
    """A φ0 config small enough to train in about a second (32 px: MobileFaceNet's minimum)."""
    from federated_core.pretrain import SyntheticSpec

    base = dict(
        data=SyntheticSpec(resolution=32),
        train_identities=(0, 6),
        train_images_per_identity=3,
        eval_identities=(900_000, 900_004),
        eval_images_per_identity=2,
        eval_genuine_pairs=4,
        eval_impostor_pairs=8,
        embedding_dim=16,
        epochs=2,
        batch_size=8,
    )
    return PretrainConfig(**base)


def test_evaluator_config_other_architecture():
    from attacks.evaluator import evaluator_recipe

    phi0 = PretrainConfig(train_identities=(0, 50), eval_identities=(900_000, 900_020), seed=4, epochs=10)
    same = evaluator_config(phi0)
    other = evaluator_config(phi0, architecture="mobilefacenet")
    assert other.backbone == "mobilefacenet" and phi0.backbone == "tiny"
    assert (other.train_identities, other.eval_identities, other.seed) == (
        same.train_identities,
        same.eval_identities,
        same.seed,
    )
    assert (other.epochs, other.batch_size) == (4, 64) and other.embedding_dim == phi0.embedding_dim
    assert evaluator_recipe("iresnet18", dataclasses.replace(phi0, epochs=1, batch_size=20)) == {
        "epochs": 1,
        "batch_size": 16,
    }
    assert other.fingerprint() != same.fingerprint()  # the cache key names the architecture
    assert evaluator_config(phi0, architecture="inception_resnet_v1").embedding_dim == 512  # fixed by the net
    assert evaluator_config(phi0, architecture=None) == same  # None: today's config, unchanged


@pytest.mark.parametrize("bad", ["resnet50", "tiny"])
def test_evaluator_config_refuses_unknown_or_same_architecture(bad):
    phi0 = PretrainConfig(train_identities=(0, 50), eval_identities=(900_000, 900_020))
    with pytest.raises(ValueError, match=rf"got '{bad}'") as err:
        evaluator_config(phi0, architecture=bad)
    assert "'mobilefacenet'" in str(err.value) and "'iresnet18'" in str(err.value)


def test_other_architecture_trains_is_cached_and_reloaded(tmp_path):
    from federated_core.integrity import CachedFileWarning

    phi0 = _tiny_phi0()
    cfg = evaluator_config(phi0, architecture="mobilefacenet")
    attacked = torch.arange(0, 100)
    first = train_evaluator(cfg, attacked, cache_dir=tmp_path, progress=False)
    assert first.model.build_config["name"] == "mobilefacenet" and "mobilefacenet backbone" in first.description
    assert first.train_identities == (5_000_000, 5_000_006) and first.cache_problems == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CachedFileWarning)  # its own checkpoint: loaded without a flag
        again = train_evaluator(cfg, attacked, cache_dir=tmp_path, progress=False)
    assert again.cache_problems == ()
    w1, w2 = first.model.state_dict(), again.model.state_dict()
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    same_arch = train_evaluator(evaluator_config(phi0), attacked, cache_dir=tmp_path, progress=False)
    assert same_arch.model.build_config["name"] == "tiny"
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == sorted({f"phi0-{cfg.fingerprint()}", f"phi0-{evaluator_config(phi0).fingerprint()}"})
    assert len(folders) == 2
    weights = tmp_path / f"phi0-{cfg.fingerprint()}" / "backbone.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])  # damaged: its checksum fails, it is retrained
    with pytest.warns(CachedFileWarning, match="retrained"):
        damaged = train_evaluator(cfg, attacked, cache_dir=tmp_path, progress=False)
    assert len(damaged.cache_problems) == 1 and "backbone.safetensors" in damaged.cache_problems[0]


def test_cache_never_serves_another_architecture(tmp_path):
    """Another model's checkpoint (checksums intact) under this config's key is not used."""
    from federated_core.integrity import CachedFileWarning

    phi0 = _tiny_phi0()
    tiny_cfg, mfn_cfg = evaluator_config(phi0), evaluator_config(phi0, architecture="mobilefacenet")
    train_evaluator(tiny_cfg, [0], cache_dir=tmp_path, progress=False)
    shutil.copytree(tmp_path / f"phi0-{tiny_cfg.fingerprint()}", tmp_path / f"phi0-{mfn_cfg.fingerprint()}")
    with pytest.warns(CachedFileWarning, match="not the .*mobilefacenet"):
        ev = train_evaluator(mfn_cfg, [0], cache_dir=tmp_path, progress=False)
    assert ev.model.build_config["name"] == "mobilefacenet"
    assert len(ev.cache_problems) == 1 and "'name': 'tiny'" in ev.cache_problems[0]
    reseeded = evaluator_config(phi0, seed_offset=2)  # same architecture, other weights
    shutil.copytree(tmp_path / f"phi0-{tiny_cfg.fingerprint()}", tmp_path / f"phi0-{reseeded.fingerprint()}")
    with pytest.warns(CachedFileWarning, match="trained with another config"):
        assert len(train_evaluator(reseeded, [0], cache_dir=tmp_path, progress=False).cache_problems) == 1


# ------------------------------------------------------------------ agreement of two evaluators


class _ConstantNet(torch.nn.Module):
    """Maps every image to the same direction (e_0): an evaluator that cannot tell faces apart."""

    resolution = 16
    embedding_dim = 8

    def forward(self, x):
        out = x.new_zeros(len(x), self.embedding_dim)
        out[:, 0] = 1.0
        return out


def _calibrated_reference(model, faces_factory, fars=(0.01, 0.1)):
    from attacks.evaluator import Evaluator, build_reference, calibrate_evaluator

    ev = Evaluator(model, (5_000_000, 5_000_100), f"evaluator {type(model).__name__}")
    ref = build_reference(ev, faces_factory(range(10), 4, seed=1))
    ref.calibration = calibrate_evaluator(ev, faces_factory(range(1000, 1040), 4, seed=2), fars)
    return ref


def _reconstructions(faces_factory):
    """Unseen real images (indices 4, 5) of the 10 reference identities; half are labelled with
    their own identity, half with another one (these should mostly fail)."""
    faces = faces_factory(range(10), 6, seed=1)
    keep = torch.arange(len(faces)) % 6 >= 4
    images = faces.images[keep].float() / 255.0
    truth = faces.labels[keep].tolist()
    ids = [frozenset({t if k % 2 == 0 else (t + 3) % 10}) for k, t in enumerate(truth)]
    return images, ids


def _by_hand_kappa(a, b):
    n = len(a)
    n11, n10, n01, n00 = (int(((a == x) & (b == y)).sum()) for x, y in ((1, 1), (1, 0), (0, 1), (0, 0)))
    p_o = (n11 + n00) / n
    p_e = ((n11 + n10) * (n11 + n01) + (n00 + n01) * (n00 + n10)) / n**2
    return (p_o - p_e) / (1 - p_e)


def test_identical_evaluators_agree_fully(faces_factory, backbone_factory):
    from sklearn.metrics import cohen_kappa_score

    from attacks.evaluator import evaluator_agreement

    net = backbone_factory(16, 16, seed=5)
    a, b = _calibrated_reference(net, faces_factory), _calibrated_reference(net, faces_factory)
    images, ids = _reconstructions(faces_factory)
    res = evaluator_agreement(a, b, images, ids)
    assert res.num_reconstructions == 20 and sorted(res.at_far) == [0.01, 0.1]
    rank_a = np.argsort(np.argsort(res.identity_similarity[0]))
    assert np.corrcoef(rank_a, rank_a)[0, 1] == pytest.approx(res.spearman) and res.spearman == pytest.approx(1.0)
    scores = a.score(images, ids)
    for far, pa in res.at_far.items():
        np.testing.assert_array_equal(pa.passed[0], scores.success_at_far[far])  # the same rule as `score`
        np.testing.assert_array_equal(pa.passed[0], pa.passed[1])
        assert pa.counts["a_only"] == pa.counts["b_only"] == 0 and pa.agreement == 1.0
        assert pa.counts["both_pass"] > 0 and pa.counts["neither"] > 0  # kappa is defined
        assert pa.kappa == pytest.approx(1.0)
        assert cohen_kappa_score(pa.passed[0], pa.passed[1]) == pytest.approx(1.0)
    assert res.to_dict()["at_far"][0]["counts"] == res.at_far[0.01].counts


def test_constant_evaluator_agrees_only_by_chance(faces_factory, backbone_factory):
    """A constant evaluator passes every reconstruction or none, so p_o = p_e and kappa = 0 exactly."""
    from sklearn.metrics import cohen_kappa_score

    from attacks.evaluator import evaluator_agreement

    a = _calibrated_reference(backbone_factory(16, 16, seed=5), faces_factory)
    b = _calibrated_reference(_ConstantNet(), faces_factory)
    images, ids = _reconstructions(faces_factory)
    res = evaluator_agreement(a, b, images, ids)
    assert np.isnan(res.spearman)  # constant similarities: no ranking
    for pa in res.at_far.values():
        assert len(set(pa.passed[1].tolist())) == 1  # every reconstruction judged alike by b
        assert 0 < pa.passed[0].sum() < 20
        by_hand = _by_hand_kappa(pa.passed[0], pa.passed[1])
        assert by_hand == pytest.approx(0.0, abs=1e-12) and pa.kappa == pytest.approx(0.0, abs=1e-12)
        assert cohen_kappa_score(pa.passed[0], pa.passed[1]) == pytest.approx(pa.kappa, abs=1e-12)
        assert pa.agreement == pytest.approx((pa.counts["both_pass"] + pa.counts["neither"]) / 20)


def test_shuffled_evaluator_kappa_near_zero():
    """Evaluator b's similarities are a's, shuffled over the reconstructions: the pass rates stay,
    the pairing goes. Kappa must be within 4 SDs of 0, the SD computed by hand from the 2×2
    table's margins (under the shuffle the both-pass count is hypergeometric)."""
    from sklearn.metrics import cohen_kappa_score

    from attacks.evaluator import EvaluatorCalibration, agreement_of_scores
    from attacks.metrics import threshold_at_far

    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.6, 0.15, 300), rng.normal(0.1, 0.15, 3000)
    cal = EvaluatorCalibration(None, 300, 2, "synthetic", [threshold_at_far(genuine, impostor, f) for f in (0.01, 0.1)])
    sim_a = np.concatenate([rng.normal(0.6, 0.15, 200), rng.normal(0.1, 0.15, 200)])
    sim_b = rng.permutation(sim_a)
    res = agreement_of_scores(sim_a, sim_b, cal, cal)
    n = len(sim_a)
    assert abs(res.spearman) < 4 / np.sqrt(n - 1)  # null SD of a rank correlation ~ 1/sqrt(n-1)
    for pa in res.at_far.values():
        ka, kb = int(pa.passed[0].sum()), int(pa.passed[1].sum())
        assert ka == kb and 0 < ka < n  # the shuffle keeps the pass rate
        p_e = (ka * kb + (n - ka) * (n - kb)) / n**2
        sd_both = np.sqrt(ka * kb * (n - ka) * (n - kb) / (n**2 * (n - 1)))
        sd_kappa = 2 * sd_both / (n * (1 - p_e))
        assert pa.kappa == pytest.approx(_by_hand_kappa(pa.passed[0], pa.passed[1]), abs=1e-12)
        assert pa.kappa == pytest.approx(cohen_kappa_score(pa.passed[0], pa.passed[1]), abs=1e-12)
        assert abs(pa.kappa) < 4 * sd_kappa, (pa.kappa, sd_kappa)
        assert sum(pa.counts.values()) == n


def test_agreement_refuses_uncalibrated_reference_and_kappa_edge_cases(faces_factory, backbone_factory):
    from attacks.evaluator import cohen_kappa, evaluator_agreement

    a = _calibrated_reference(backbone_factory(16, 16, seed=5), faces_factory)
    b = _calibrated_reference(backbone_factory(16, 16, seed=6), faces_factory)
    b.calibration = None
    images, ids = _reconstructions(faces_factory)
    with pytest.raises(ValueError, match="reference b carries no calibration"):
        evaluator_agreement(a, b, images, ids)
    assert np.isnan(cohen_kappa(np.ones(5, bool), np.ones(5, bool)))  # no disagreement possible: undefined
    assert cohen_kappa(np.array([1, 0, 1, 0], bool), np.array([0, 1, 0, 1], bool)) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(np.ones(3, bool), np.ones(4, bool))
