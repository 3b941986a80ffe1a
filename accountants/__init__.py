"""accountants: the DP math at the bottom of privaudit's stack (no model code).

* `accountants.mechanisms`: Gaussian mechanism calibration, classic (Dwork & Roth) and analytic
  (Balle & Wang 2018); the mu-GDP privacy profile.
* `accountants.dplc`: PrivacyFace's Theorems 1-3, Properties 3-4, the naive baseline (App. A.2.2).
* `accountants.events`: DP events (Gaussian, Poisson-subsampled Gaussian, self-composed,
  composed, non-private).
* `accountants.composition`: accountants over events (basic, advanced, RDP and PRV via opacus,
  exact GDP) and noise calibration.
* `accountants.units`: ε per unit of privacy (image, identity, class-center, client); group privacy.
* `accountants.ledger`: `PrivacyLedger`, per party and round.
* `accountants.audit`: epsilon lower bounds from distinguishing games (Clopper-Pearson, GDP).
* `accountants.dplc_reference`: Algorithm 1 (reference, numpy) and an end-to-end private DPLC.
* `accountants.dplc_audit`: adversarial neighbours and audits of DPLC.
* `accountants.testing`: hypothesis strategies and assertions (a pytest plugin).

Names are imported lazily (PEP 562) so that ``import accountants`` - which pytest does for the
plugin in every run - stays cheap; opacus/torch are only imported by the RDP and PRV accountants.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # mechanisms
    "gaussian_sigma": "mechanisms",
    "gaussian_epsilon": "mechanisms",
    "gaussian_delta": "mechanisms",
    "gdp_delta": "mechanisms",
    "gdp_epsilon": "mechanisms",
    "gdp_mu": "mechanisms",
    "PrivacyAccountingWarning": "mechanisms",
    "ClassicGaussianRangeWarning": "mechanisms",
    # dplc
    "occupancy_ratio": "dplc",
    "dplc_sensitivity": "dplc",
    "dplc_sigma": "dplc",
    "cluster_mean_norm_bounds": "dplc",
    "expected_noise_norm": "dplc",
    "noise_norm_cdf": "dplc",
    "noise_norm_quantile": "dplc",
    "cosine_lower_bound": "dplc",
    "dplc_cosine_lower_bound": "dplc",
    "naive_center_cost": "dplc",
    "NaiveCostComparison": "dplc",
    # events
    "DpEvent": "events",
    "GaussianEvent": "events",
    "PoissonSampledGaussianEvent": "events",
    "SelfComposedEvent": "events",
    "ComposedEvent": "events",
    "NonPrivateEvent": "events",
    "event_from_dict": "events",
    "PRIVACY_UNITS": "events",
    "UnitMismatchError": "events",
    # units of privacy
    "epsilon_for_unit": "units",
    "group_privacy": "units",
    "UnitConversionError": "units",
    "UnitEpsilon": "units",
    # composition
    "ACCOUNTANTS": "composition",
    "EpsilonResult": "composition",
    "AccountingFallbackWarning": "composition",
    "epsilon": "composition",
    "compute_epsilon": "composition",
    "calibrate_noise_multiplier": "composition",
    "calibrate_sigma": "composition",
    # ledger
    "PrivacyLedger": "ledger",
    # audit
    "epsilon_lower_bound": "audit",
    "gdp_mu_lower_bound": "audit",
    "gdp_epsilon_lower_bound": "audit",
    "clopper_pearson_upper": "audit",
    "audit_scores": "audit",
    "run_distinguishing_game": "audit",
    "AuditResult": "audit",
    # reference algorithm and the private variant
    "dplc_algorithm1": "dplc_reference",
    "private_dplc": "dplc_reference",
    "DplcRelease": "dplc_reference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'accountants' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"accountants.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
