"""The independent evaluation model: disjoint identities, its own seed."""

from __future__ import annotations

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
