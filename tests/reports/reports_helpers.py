"""Small hand-made results for the reports tests."""

from __future__ import annotations

import math

from reports.schema import AttackFinding, AuditFinding, AuditResult, MethodResult, PrivacySummary


def small_result(**overrides) -> AuditResult:
    """Two methods, one private with an audit that refutes its claim, one with raw centers."""
    private = MethodResult(
        name="privacyface", description="noisy clusters", shares=["backbone", "noisy_cluster_centers"],
        observers={"server": ["backbone", "noisy_cluster_centers"]},
        utility={"accuracy": 0.81, "tar@far=1e-2": 0.5, "tar@far=1e-3": math.nan},
        privacy=PrivacySummary(delta=1e-5, formal_epsilon={"rdp": 2.5, "basic": 10.0},
                               epsilon_per_round={"basic": [5.0, 10.0]},
                               per_party=[{"party": "client:0", "round": 1, "epsilon": 5.0},
                                          {"party": "client:0", "round": 2, "epsilon": 10.0}],
                               empirical=[AuditFinding("end-to-end", 2.5, 3.1, 0.95, 500, "lr", True, 1e-5,
                                                       unit="class-center", scope="whole run")],
                               flags=["classic Gaussian calibration used at epsilon >= 1"],
                               guarantee="(eps, delta)-DP per client"),
        attacks=[AttackFinding("knn", "server", "noisy_cluster_centers", metrics={"top1_rate": 0.2, "auc": 0.7},
                               intervals={"top1_rate": (0.1, 0.3)},
                               roc={"fpr": [0.0, 0.01, 0.1, 1.0], "tpr": [0.0, 0.05, 0.4, 1.0]},
                               success_metric="top1_rate")])
    raw = MethodResult(
        name="fedgc", shares=["backbone", "class_centers"], observers={"server": ["backbone", "class_centers"]},
        utility={"accuracy": 0.84, "tar@far=1e-2": 0.55, "tar@far=1e-3": math.nan},
        privacy=PrivacySummary(formal_epsilon={"basic": math.inf}, guarantee="none: raw class centers reach the server"),
        attacks=[AttackFinding("knn", "server", "class_centers", metrics={"top1_rate": 0.9}, success_metric="top1_rate"),
                 AttackFinding("inversion", "server", "class_centers", metrics={"rank1": 0.6},
                               success_metric="rank1")])
    kwargs = dict(methods=[private, raw], scenario={"seed": 0, "scale": "tiny"}, title="small test audit",
                  created="2025-03-04T05:06:07+00:00", software={"python": "3.11"}, timings={"methods": 1.5})
    kwargs.update(overrides)
    return AuditResult(**kwargs)
