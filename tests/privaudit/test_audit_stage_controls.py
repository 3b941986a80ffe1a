"""A data-independent release (PrivacyFace's random-direction control) has no DPLC mechanism:
the audit stage says so instead of failing on parameters that are not there."""

from __future__ import annotations

import torch

from federated_core.engine.messages import make_message
from federated_core.engine.wire import WireLog
from privaudit.audit_stage import dplc_audits


def test_a_random_control_release_is_not_audited_and_says_why():
    log = WireLog()
    log.append(make_message("noisy_cluster_centers", "client:0", ("server",), 1, "train",
                            {"centers": torch.nn.functional.normalize(torch.randn(2, 8), dim=1)},
                            meta={"release": "random-control"}))
    findings, skipped = dplc_audits("privacyface", log, trials=10, seed=0)
    assert findings == []
    assert skipped == ["the noisy_cluster_centers releases carry no DPLC parameters (a data-independent control): "
                       "nothing to audit"]
